//! `hostile-recursion`: recurses without bound in the hook its config names (see `common.rs`).
//! Each frame keeps a value live across the call, so the wasm stack (not only Rust's shadow
//! stack) grows. Expected: a stack-overflow trap, never a crash of the host.

#[path = "../../common.rs"]
mod common;

use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
}

#[inline(never)]
#[allow(
    unconditional_recursion,
    reason = "unbounded recursion is this plugin's purpose"
)]
fn deeper(n: u64) -> u64 {
    let here = core::hint::black_box(n);
    deeper(here + 1).wrapping_add(here)
}

fn recurse(_: &Config) {
    core::hint::black_box(deeper(0));
}

hostile_plugin!(Recursion, Config, recurse);
