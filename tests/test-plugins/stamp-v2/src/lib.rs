//! `stamp-v2`: version "v2" of the `stamp` test plugin, used by the hot-reload tests to prove
//! each response was produced entirely by one version (see `stamp.rs`).

/// The version this build stamps.
pub const VERSION: &str = "v2";

#[path = "../../stamp-v1/src/stamp.rs"]
mod stamp;
