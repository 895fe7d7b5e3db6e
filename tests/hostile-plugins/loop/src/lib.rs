//! `hostile-loop`: spins forever in the hook its config names (see `common.rs` for `hook` and
//! `trigger`). Expected: the call is stopped by fuel or by the deadline, whichever comes first.

#[path = "../../common.rs"]
mod common;

use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
}

fn spin(_: &Config) {
    let mut n = 0u64;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

hostile_plugin!(Loop, Config, spin);
