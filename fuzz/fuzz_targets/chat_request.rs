//! A client's `POST /v1/chat/completions` body: see `wasmgate::fuzzing::chat_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate::fuzzing::chat_request(data));
