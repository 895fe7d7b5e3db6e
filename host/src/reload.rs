//! Hot reload: watch the plugins directory and the config file, debounce bursts of events, then
//! re-read the config and reconcile the registry (prepare everything fallible, then swap).
//!
//! Files still being written are not trusted: events are debounced until the directory has been
//! quiet for a moment, and a file caught half-written simply fails to compile — its last good
//! version keeps serving, and the event that ends the write triggers another reconcile. Writing
//! the new file under a temporary name and renaming it into place is still the safe way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::admin::Admin;
use crate::config::Config;

/// How long the watched paths must be quiet before a reconcile.
const QUIET: Duration = Duration::from_millis(250);
/// Longest a steady stream of events may postpone a reconcile.
const MAX_DELAY: Duration = Duration::from_secs(3);

/// Where the configuration comes from, so it can be read again on change.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The config file, if any (none: the embedded default).
    pub file: Option<PathBuf>,
    /// `--plugins-dir`, which overrides the file's `plugins_dir`.
    pub plugins_dir: Option<PathBuf>,
    /// `--listen`, which overrides the file's `listen`.
    pub listen: Option<std::net::SocketAddr>,
}

impl ConfigSource {
    /// Reads and validates the configuration with the command-line overrides applied.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.file {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply_overrides(&mut config);
        Ok(config)
    }

    /// Applies the command-line overrides to a config read from the file.
    pub fn apply_overrides(&self, config: &mut Config) {
        if let Some(dir) = &self.plugins_dir {
            config.plugins_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
    }
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher(..)")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether an event concerns a plugin file or the config file. Called on the watcher's thread
/// for every change in the watched directories (a log file written next to the config changes
/// on every request), so the common answer, no, costs no system call.
fn relevant(path: &Path, plugins_dir: &Path, config_file: Option<&Path>) -> bool {
    let is_wasm = path.extension().is_some_and(|e| e == "wasm")
        && path.parent().is_some_and(|p| same_dir(p, plugins_dir));
    let is_config = config_file.is_some_and(|c| c.file_name() == path.file_name());
    is_wasm || is_config
}

/// `a` and `b` name the same directory (compared as written first: events name paths under the
/// watched directory as it was given).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Starts watching the plugins directory (created if missing) and the config file, re-reading
/// the config and reconciling after each quiet burst of changes; an invalid new config file is
/// logged and the last good one stays in force.
pub async fn watch(admin: Arc<Admin>, source: &ConfigSource) -> anyhow::Result<Watcher> {
    let config = admin.config().await;
    let plugins_dir = config.plugins_dir.clone();
    std::fs::create_dir_all(&plugins_dir)
        .with_context(|| format!("creating the plugins directory {}", plugins_dir.display()))?;
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let config_file = source.file.clone();
    // Only changes to plugins or to the config wake the gateway's runtime.
    let (dir, file) = (plugins_dir.clone(), config_file.clone());
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                for path in event.paths {
                    if relevant(&path, &dir, file.as_deref()) {
                        let _ = tx.send(path);
                    }
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("file watcher error: {err}"),
        })
        .context("starting the file watcher")?;
    watcher
        .watch(&plugins_dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", plugins_dir.display()))?;
    if let Some(file) = &config_file {
        // Watch the directory, not the file: editors replace files by renaming over them.
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
    }
    tracing::info!(plugins_dir = %plugins_dir.display(), config = ?config_file, "watching for plugin and config changes");
    let task = tokio::spawn(run(admin, rx));
    Ok(Watcher {
        _watcher: watcher,
        task,
    })
}

/// Reconciles after each quiet burst of relevant changes (`rx` carries only those).
async fn run(admin: Arc<Admin>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    while rx.recv().await.is_some() {
        let started = tokio::time::Instant::now();
        loop {
            match tokio::time::timeout(QUIET, rx.recv()).await {
                Ok(Some(_)) => {
                    if started.elapsed() > MAX_DELAY {
                        break;
                    }
                }
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        admin.reload_from_source().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugins_and_the_config_file_are_relevant() {
        let plugins = Path::new("plugins");
        let config = Some(Path::new("conf/config.json"));
        for (path, expected) in [
            ("plugins/auth.wasm", true),
            ("conf/config.json", true),
            ("plugins/notes.txt", false),
            ("conf/gateway.log", false),
            ("conf/other.wasm", false),
        ] {
            assert_eq!(
                relevant(Path::new(path), plugins, config),
                expected,
                "{path}"
            );
        }
    }
}
