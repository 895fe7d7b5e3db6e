//! The plugin registry: which plugins exist (config entries and `*.wasm` files in the plugins
//! directory), their load status, and the active chain the pipeline runs.
//!
//! Loading is "prepare everything fallible, then swap": every file is read, hashed, compiled
//! and initialised first; the new chain then replaces the old one atomically, so requests in
//! flight finish on the chain they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, FailurePolicy, PluginConfig, valid_plugin_name};
use crate::hooks::HookSet;
use crate::runtime::{Limits, LoadedPlugin, Runtime};

/// Load status of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Loaded and in the chain.
    Active,
    /// Could not be loaded; `error` says why.
    Failed,
    /// Disabled in the config.
    Disabled,
}

/// One plugin as the registry knows it, loaded or not.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// Name (config key and file stem).
    pub name: String,
    /// The component file.
    pub file: PathBuf,
    /// Hex sha256 of the file's bytes, when it could be read.
    pub sha256: Option<String>,
    /// Load status.
    pub status: Status,
    /// Why loading failed.
    pub error: Option<String>,
    /// Position in the pipeline (0 runs first).
    pub order: usize,
    /// Limits its calls run under.
    pub limits: Limits,
    /// Failure policy.
    pub policy: FailurePolicy,
    /// Config version.
    pub version: u32,
    /// When it was loaded (or failed to).
    pub loaded_at: SystemTime,
    /// The loaded plugin, when active.
    pub plugin: Option<Arc<LoadedPlugin>>,
}

/// One link of the chain the pipeline runs.
#[derive(Debug, Clone)]
pub struct Link {
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its failure policy.
    pub policy: FailurePolicy,
    /// Its hooks, copied for quick checks.
    pub hooks: HookSet,
}

/// The active plugins in pipeline order. Immutable: a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// The links, in pre-hook order.
    pub links: Vec<Link>,
}

#[derive(Debug, Default)]
struct Snapshot {
    entries: Vec<PluginEntry>,
    chain: Arc<Chain>,
}

/// The set of plugins and the chain built from them.
#[derive(Debug)]
pub struct Registry {
    runtime: Arc<Runtime>,
    current: ArcSwap<Snapshot>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The plugins to load: config entries in order, then unlisted `*.wasm` files of the plugins
/// directory in name order.
fn plan(config: &Config) -> Vec<(PluginConfig, PathBuf)> {
    let mut plan: Vec<(PluginConfig, PathBuf)> = config
        .plugins
        .iter()
        .map(|p| {
            let file = p
                .path
                .clone()
                .unwrap_or_else(|| config.plugins_dir.join(format!("{}.wasm", p.name)));
            (p.clone(), file)
        })
        .collect();
    let mut found = discover(&config.plugins_dir);
    found.retain(|(name, _)| !config.plugins.iter().any(|p| &p.name == name));
    plan.extend(
        found
            .into_iter()
            .map(|(name, file)| (PluginConfig::named(&name), file)),
    );
    plan
}

/// `*.wasm` files of a directory as (stem, path), sorted; a missing directory has none.
fn discover(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            if valid_plugin_name(&stem) {
                Some((stem, p))
            } else {
                tracing::warn!(file = %p.display(), "skipping plugin file: its name must be letters, digits, '-', '_' or '.'");
                None
            }
        })
        .collect();
    found.sort();
    found
}

impl Registry {
    /// An empty registry on `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            current: ArcSwap::from_pointee(Snapshot::default()),
        }
    }

    /// The runtime plugins run on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The chain requests run now. Hold on to it for the whole request.
    pub fn chain(&self) -> Arc<Chain> {
        self.current.load().chain.clone()
    }

    /// Every known plugin with its status, in order.
    pub fn entries(&self) -> Vec<PluginEntry> {
        self.current.load().entries.clone()
    }

    /// Loads every plugin the config and the plugins directory name, then swaps the new chain
    /// in and retires the plugins of the old one. A plugin that fails to load is recorded as
    /// failed, logged, and left out; it never stops the others.
    pub async fn load_all(&self, config: &Config) {
        let defaults = config.plugin_defaults();
        let mut entries = Vec::new();
        for (order, (settings, file)) in plan(config).into_iter().enumerate() {
            entries.push(self.load_one(&settings, file, order, defaults).await);
        }
        let chain = Arc::new(Chain {
            links: entries
                .iter()
                .filter_map(|e| {
                    let plugin = e.plugin.clone()?;
                    Some(Link {
                        hooks: plugin.hooks(),
                        plugin,
                        policy: e.policy,
                    })
                })
                .collect(),
        });
        let old = self.current.swap(Arc::new(Snapshot { entries, chain }));
        for entry in &old.entries {
            if let Some(plugin) = &entry.plugin {
                plugin.retire().await;
            }
        }
    }

    async fn load_one(
        &self,
        settings: &PluginConfig,
        file: PathBuf,
        order: usize,
        defaults: Limits,
    ) -> PluginEntry {
        let limits = settings.limits.apply(defaults);
        let mut entry = PluginEntry {
            name: settings.name.clone(),
            file,
            sha256: None,
            status: Status::Disabled,
            error: None,
            order,
            limits,
            policy: settings.policy,
            version: settings.version,
            loaded_at: SystemTime::now(),
            plugin: None,
        };
        if !settings.enabled {
            tracing::info!(plugin = settings.name, "plugin disabled in config");
            return entry;
        }
        let started = Instant::now();
        match self.load_file(&mut entry, settings).await {
            Ok(plugin) => {
                tracing::info!(
                    plugin = entry.name,
                    file = %entry.file.display(),
                    sha256 = entry.sha256.as_deref().unwrap_or(""),
                    reported_name = plugin.reported_name(),
                    hooks = ?plugin.hooks(),
                    ms = started.elapsed().as_millis() as u64,
                    "plugin loaded"
                );
                entry.status = Status::Active;
                entry.plugin = Some(plugin);
            }
            Err(err) => {
                let message = format!("{err:#}");
                tracing::error!(plugin = entry.name, file = %entry.file.display(), "plugin failed to load: {message}");
                entry.status = Status::Failed;
                entry.error = Some(message);
            }
        }
        entry.loaded_at = SystemTime::now();
        entry
    }

    async fn load_file(
        &self,
        entry: &mut PluginEntry,
        settings: &PluginConfig,
    ) -> anyhow::Result<Arc<LoadedPlugin>> {
        let bytes = tokio::fs::read(&entry.file)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", entry.file.display()))?;
        entry.sha256 = Some(sha256_hex(&bytes));
        let runtime = self.runtime.clone();
        let component = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|e| anyhow::anyhow!("the compile task failed: {e}"))??;
        self.runtime
            .load(
                &entry.name,
                &component,
                settings.config.to_string(),
                entry.limits,
            )
            .await
    }

    /// Retires every plugin: `cleanup` runs on each idle instance. Call after the server has
    /// drained its requests.
    pub async fn shutdown(&self) {
        let old = self.current.swap(Arc::new(Snapshot::default()));
        for entry in &old.entries {
            if let Some(plugin) = &entry.plugin {
                plugin.retire().await;
            }
        }
    }
}
