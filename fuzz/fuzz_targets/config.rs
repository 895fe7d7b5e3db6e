//! A config file's text: see `wasmgate::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate::fuzzing::config(data));
