//! End-to-end tests: a real gateway on a loopback socket, real wasm components built from
//! source, HTTP through reqwest. One test binary, so wasmtime is linked once.
#![expect(clippy::expect_used, reason = "tests and their helpers fail loudly")]

mod admin;
mod catalogue_limits;
mod catalogue_text;
mod examples;
mod hostile;
mod http;
mod languages;
mod limits;
mod loading;
mod metrics;
mod ordering;
mod pipeline;
mod pipelines;
mod reload;
mod streaming;
