//! `hostile-huge-table`: a plugin that passes everything through, linked (see `build.rs`) so its
//! function table starts at index 50,000,000: the table's minimum size is tens of millions of
//! entries, hundreds of MiB of host memory per instance. Expected: refused when its instance is
//! created (at load), with the table limit named; the rest of the gateway unaffected.

#[path = "../../common.rs"]
mod common;

use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
}

fn nothing(_: &Config) {}

hostile_plugin!(HugeTable, Config, nothing);
