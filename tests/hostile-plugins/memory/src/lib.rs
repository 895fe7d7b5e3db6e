//! `hostile-memory`: in the hook its config names (see `common.rs`), allocates and touches
//! 1 MiB chunks, keeping them all, until `memory.grow` is refused. Expected: a memory-limit
//! failure at the plugin's cap, the host's memory untouched beyond it.

#[path = "../../common.rs"]
mod common;

use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
}

fn grow(_: &Config) {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; 1 << 20]);
        core::hint::black_box(&hoard);
    }
}

hostile_plugin!(Memory, Config, grow);
