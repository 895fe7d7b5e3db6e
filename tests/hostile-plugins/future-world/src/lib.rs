//! `hostile-future-world`: a component built against `wasmgate:plugin@0.8.0` (a newer version of
//! the plugin world than the gateway's `@0.7.0`): it imports `wasmgate:plugin/logging@0.8.0`.
//! Expected: refused at load with both versions named, and nothing else affected.
#![allow(
    unsafe_code,
    reason = "wit-bindgen's generated export glue for a one-function test world"
)]

#[allow(missing_docs, reason = "generated bindings")]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmgate:plugin@0.8.0;

            interface logging {
                log: func(message: string);
            }

            world plugin {
                import logging;
                export get-name: func() -> string;
            }
        ",
    });
}

struct FutureWorld;

impl bindings::Guest for FutureWorld {
    fn get_name() -> String {
        bindings::wasmgate::plugin::logging::log("hello from @0.8.0");
        "hostile-future-world".to_string()
    }
}

bindings::export!(FutureWorld with_types_in bindings);
