//! Paths of the workspace's guest plugin components, built from source for tests.
//!
//! The build script of this crate builds every crate under `example-plugins/` and
//! `tests/test-plugins/` and `tests/hostile-plugins/` for `wasm32-wasip2` with the `guest` profile, in one nested cargo
//! invocation, into `<target dir>/guests/`, and rebuilds them whenever the WIT, the SDK or a guest
//! changes. Depend on this crate (as a dev-dependency) and use the constants:
//!
//! ```no_run
//! let bytes = std::fs::read(wasmgate_artifacts::AUTH).unwrap();
//! for (name, path) in wasmgate_artifacts::EXAMPLE_PLUGINS {
//!     println!("{name}: {path}");
//! }
//! # drop(bytes);
//! ```
//!
//! Each guest has a constant named after its package in SCREAMING_SNAKE_CASE (`hello-world` ->
//! [`HELLO_WORLD`]) holding the absolute path of its `.wasm` component; [`EXAMPLE_PLUGINS`] and
//! [`TEST_PLUGINS`] list them as `(package name, path)` pairs.
//!
//! Guests in other languages (`python/`, `js/` and `c/` under `example-plugins/` and
//! `tests/test-plugins/`) are built with toolchains the build script installs under
//! `<target dir>/guest-tools/`; their constants carry the language as a prefix
//! ([`PYTHON_PII_REDACTOR`], [`JS_SCRIPTED`], [`C_HELLO_WORLD`]), and [`PYTHON_EXAMPLE_PLUGINS`],
//! [`JS_EXAMPLE_PLUGINS`] and [`C_EXAMPLE_PLUGINS`] list the examples. [`COMPILE_CACHE_DIR`] is
//! the compiled-component cache the tests share.
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
