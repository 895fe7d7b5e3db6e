//! The raw wit-bindgen bindings of the `plugin` world (an implementation detail).
//!
//! Plugin authors never touch this module: the SDK re-exports the types they need at its root and
//! the `#[plugin]` attribute generates the export glue that refers to it. It is public only
//! because that glue expands inside the plugin's crate.

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
    // `Hooks` is a bitflags type: wit-bindgen gives flags a fixed derive list, so it does not get
    // these (it is Copy + Eq + Debug anyway).
    additional_derives: [serde::Serialize, serde::Deserialize, Clone, PartialEq],
    pub_export_macro: true,
    default_bindings_module: "wasmgate_sdk::bindings",
});
