//! `wrong-world`: a valid WebAssembly component that is not a wasmgate plugin (it targets
//! another world), for the tests of what the gateway does with such a file.
#![allow(
    unsafe_code,
    reason = "wit-bindgen's generated export glue for a one-function test world"
)]

#[allow(missing_docs, reason = "generated bindings")]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package test:other;

            world other {
                export hello: func() -> string;
            }
        ",
    });
}

struct Other;

impl bindings::Guest for Other {
    fn hello() -> String {
        "not a plugin".to_string()
    }
}

bindings::export!(Other with_types_in bindings);
