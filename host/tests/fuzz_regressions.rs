//! Replays the fuzz targets' inputs on stable: the seed corpora (`fuzz/corpus/<target>/`) and
//! every crash fuzzing has found (`fuzz/regressions/<target>/`), each through the same
//! `wasmgate::fuzzing` function its fuzz target calls. `just fuzz` finds new ones.
#![expect(clippy::expect_used, reason = "tests and their helpers fail loudly")]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The files directly in `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a fuzz input directory").path())
        .filter(|p| p.is_file() && !p.ends_with("README.md"))
        .collect();
    files.sort();
    files
}

/// Runs every input of `target` through `exercise`, then fails naming each input that panicked.
fn replay(target: &str, exercise: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = inputs(&fuzz.join("corpus").join(target));
    assert!(!seeds.is_empty(), "no seed corpus for {target}");
    let regressions = inputs(&fuzz.join("regressions").join(target));
    let failed: Vec<String> = seeds
        .iter()
        .chain(&regressions)
        .filter(|path| {
            let data = std::fs::read(path).expect("reading a fuzz input");
            catch_unwind(AssertUnwindSafe(|| exercise(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} panicked on {failed:#?}");
}

#[test]
fn chat_request_inputs() {
    replay("chat_request", wasmgate::fuzzing::chat_request);
}

#[test]
fn config_inputs() {
    replay("config", wasmgate::fuzzing::config);
}

#[test]
fn plugin_extra_inputs() {
    replay("plugin_extra", wasmgate::fuzzing::plugin_extra);
}
