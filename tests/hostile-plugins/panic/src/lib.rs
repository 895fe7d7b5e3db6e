//! `hostile-panic`: panics in the hook its config names (see `common.rs`): an `unreachable`
//! trap. Expected: a trap failure carrying the panic message.

#[path = "../../common.rs"]
mod common;

use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
}

fn panic(config: &Config) {
    panic!("hostile-panic in {:?}", config.target.hook);
}

hostile_plugin!(Panic, Config, panic);
