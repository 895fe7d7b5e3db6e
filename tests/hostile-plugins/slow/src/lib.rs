//! `hostile-slow`: busy-waits `ms` milliseconds (default 150) in the hook its config names (see
//! `common.rs`), then passes the request through unchanged. With a deadline above `ms` the
//! request succeeds, only later.

#[path = "../../common.rs"]
mod common;

use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
    /// How long to burn, in milliseconds.
    #[serde(default = "default_ms")]
    ms: u64,
}

fn default_ms() -> u64 {
    150
}

fn burn(config: &Config) {
    let until = wasmgate_sdk::now_ms() + config.ms;
    while wasmgate_sdk::now_ms() < until {
        core::hint::spin_loop();
    }
}

hostile_plugin!(Slow, Config, burn);
