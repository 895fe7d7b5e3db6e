//! Places the component's function table at index 50,000,000 (`wasm-ld --table-base`), so the
//! table it declares has a minimum size of over 50 million elements.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--table-base=50000000");
    }
}
