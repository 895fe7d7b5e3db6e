//! End-to-end tests: a real gateway on a loopback socket, real wasm components built from
//! source, HTTP through reqwest. One test binary, so wasmtime is linked once.
#![expect(clippy::expect_used, reason = "tests and their helpers fail loudly")]

mod admin;
mod anthropic;
mod catalogue_limits;
mod catalogue_text;
mod examples;
mod exchange;
mod hostile;
mod http;
mod isolation;
mod languages;
mod limits;
mod loading;
mod metrics;
mod openai_sdk;
mod ordering;
mod pipeline;
mod pipelines;
mod providers;
mod reload;
mod shared_state;
mod streaming;
