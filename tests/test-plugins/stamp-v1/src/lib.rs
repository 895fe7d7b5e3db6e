//! `stamp-v1`: version "v1" of the `stamp` test plugin, used by the hot-reload tests to prove
//! each response was produced entirely by one version (see `stamp.rs`).

/// The version this build stamps.
pub const VERSION: &str = "v1";

#[path = "stamp.rs"]
mod stamp;
