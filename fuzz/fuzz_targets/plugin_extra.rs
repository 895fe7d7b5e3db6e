//! An `extra` field a plugin returns: see `wasmgate::fuzzing::plugin_extra`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate::fuzzing::plugin_extra(data));
