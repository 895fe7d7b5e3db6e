//! The plugin registry: which plugins exist (config entries and `*.wasm` files in the plugins
//! directory), their load status, and the active chain the pipeline runs.
//!
//! Loading is "prepare everything fallible, then swap": every changed file is read, hashed,
//! compiled and initialised first; the new chain then replaces the old one atomically, so
//! requests in flight finish on the chain they started with. The versions it replaced are then
//! retired: their `cleanup` runs once per instance, after that instance's last request.
//!
//! Reconciling is incremental. A plugin's identity is the sha256 of its file: an unchanged file
//! with unchanged settings is kept as is; a settings-only change (config, limits, policy, a
//! raised `version`) re-initialises the already compiled component; new bytes are compiled. When
//! a new version fails to load, the last good version keeps serving and the error is recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, FailurePolicy, PluginConfig, Stage, valid_plugin_name};
use crate::hooks::HookSet;
use crate::runtime::{Compiled, Limits, LoadedPlugin, PluginSetup, Runtime};

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
    /// Seen for the first time and being compiled and initialised.
    Loading,
}

/// One plugin as the registry knows it, loaded or not.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// Name (config key and file stem).
    pub name: String,
    /// The component file.
    pub file: PathBuf,
    /// Hex sha256 of the version serving now (or of the file that failed to load).
    pub sha256: Option<String>,
    /// Load status.
    pub status: Status,
    /// Why the latest load attempt failed; with status `active`, the last good version is still
    /// serving.
    pub error: Option<String>,
    /// The settings the serving version was loaded with.
    pub settings: PluginConfig,
    /// How many times this plugin's bytes were compiled since the gateway started (a
    /// settings-only change does not compile).
    pub compiles: u64,
    /// Position in the pipeline (0 runs first).
    pub order: usize,
    /// Effective priority (lower runs first; its own, or its position in the config).
    pub priority: i64,
    /// The named pipeline this copy of a plugin belongs to; none for the default pipeline.
    pub pipeline: Option<String>,
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
    /// The serving version's compiled component, reused when only settings change.
    compiled: Option<Compiled>,
    /// The (sha256, settings) of the latest failed attempt, so the same broken input is not
    /// retried on every reconcile.
    failed: Option<(String, PluginConfig)>,
}

impl PluginEntry {
    fn blank(
        settings: &PluginConfig,
        file: PathBuf,
        order: usize,
        limits: Limits,
        status: Status,
    ) -> Self {
        Self {
            name: settings.name.clone(),
            file,
            sha256: None,
            status,
            error: None,
            order,
            priority: 0,
            pipeline: None,
            limits,
            policy: settings.policy,
            version: settings.version,
            loaded_at: SystemTime::now(),
            settings: settings.clone(),
            compiles: 0,
            plugin: None,
            compiled: None,
            failed: None,
        }
    }
}

/// One link of the chain the pipeline runs.
#[derive(Debug, Clone)]
pub struct Link {
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its failure policy.
    pub policy: FailurePolicy,
    /// The hooks the pipeline calls: those it implements, within its configured stages.
    pub hooks: HookSet,
    /// Its effective priority (lower runs first).
    pub priority: i64,
    /// Whether its pre-hook may run concurrently with the other parallel links of its priority.
    pub parallel: bool,
}

impl Link {
    /// Whether the plugin's instances are shared per hook call
    /// ([`Isolation::Shared`](crate::runtime::Isolation::Shared)): a request takes one for each
    /// call and gives it back at once, rather than holding one for all its hooks.
    pub fn shared(&self) -> bool {
        self.plugin.isolation() == crate::runtime::Isolation::Shared
    }
}

/// The active plugins in pipeline order. Immutable: a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// The named pipeline this is; none for the default pipeline.
    pub pipeline: Option<String>,
    /// The links, in pre-hook order.
    pub links: Vec<Link>,
    /// The links' plugin names, comma-separated (the `gateway.chain` context value), built once
    /// per chain rather than per request.
    pub names: String,
    /// Plugins marked `required` that are not active (they failed to load, or are still
    /// loading): while any is listed, requests are refused rather than run without it.
    pub missing: Vec<MissingPlugin>,
}

/// A `required` plugin the chain lacks, and why.
#[derive(Debug, Clone)]
pub struct MissingPlugin {
    /// The plugin's name.
    pub name: String,
    /// Why it is not active: its load error, or that it is still loading.
    pub reason: String,
}

#[derive(Debug, Default)]
struct Snapshot {
    entries: Vec<PluginEntry>,
    /// The default pipeline.
    chain: Arc<Chain>,
    /// Named pipelines.
    named: BTreeMap<String, Arc<Chain>>,
    /// Virtual key -> named pipeline.
    virtual_keys: HashMap<String, String>,
}

/// The chain of one pipeline (none: the default one) from the entries.
fn build_chain(entries: &[PluginEntry], pipeline: Option<&str>) -> Arc<Chain> {
    let members = || {
        entries
            .iter()
            .filter(move |e| e.pipeline.as_deref() == pipeline)
    };
    let links: Vec<Link> = members()
        .filter_map(|e| {
            let plugin = e.plugin.clone()?;
            Some(Link {
                hooks: Stage::mask(e.settings.stages.as_deref(), plugin.hooks()),
                plugin,
                policy: e.policy,
                priority: e.priority,
                parallel: e.settings.parallel,
            })
        })
        .collect();
    let names = links
        .iter()
        .map(|l| l.plugin.name())
        .collect::<Vec<_>>()
        .join(",");
    Arc::new(Chain {
        pipeline: pipeline.map(str::to_string),
        links,
        names,
        missing: members()
            .filter(|e| e.settings.required && e.plugin.is_none())
            .filter(|e| !matches!(e.status, Status::Disabled))
            .map(|e| MissingPlugin {
                name: e.name.clone(),
                reason: e
                    .error
                    .clone()
                    .unwrap_or_else(|| "it is still loading".to_string()),
            })
            .collect(),
    })
}

/// How many plugin versions the registry loaded (first loads and reloads) and how many loads
/// failed, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadCounts {
    /// Versions loaded into service.
    pub ok: u64,
    /// Load attempts that failed (unreadable, oversized, not compiling or refusing its config).
    pub failed: u64,
}

/// The set of plugins and the chain built from them.
#[derive(Debug)]
pub struct Registry {
    runtime: Arc<Runtime>,
    current: ArcSwap<Snapshot>,
    /// One reconcile at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// Bumped after every reconcile; tests and watchers await it.
    generation: tokio::sync::watch::Sender<u64>,
    /// Replaced or removed versions that may still be serving in-flight requests.
    retiring: std::sync::Mutex<Vec<Arc<LoadedPlugin>>>,
    /// Set by `shutdown`; later reconciles do nothing.
    closed: std::sync::atomic::AtomicBool,
    /// Plugin versions loaded, and failed loads (see [`LoadCounts`]).
    loads_ok: std::sync::atomic::AtomicU64,
    loads_failed: std::sync::atomic::AtomicU64,
}

/// Hex sha256 of a component's bytes: its identity.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One plugin the registry is to load.
struct Planned {
    /// The named pipeline it belongs to; none for the default pipeline.
    pipeline: Option<String>,
    /// Effective priority: its own, or its position in its pipeline's list.
    priority: i64,
    settings: PluginConfig,
    file: PathBuf,
}

/// The plugins to load, in order: the default pipeline (config entries, then unlisted `*.wasm`
/// files of the plugins directory in name order), then every named pipeline's own copies, by
/// pipeline name. Within a pipeline, lower priority runs first, ties by name; a plugin without
/// a priority has its position in the list.
fn plan(config: &Config) -> Vec<Planned> {
    let mut default: Vec<(PluginConfig, PathBuf)> = config
        .plugins
        .iter()
        .filter(|p| p.default_pipeline)
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
    default.extend(
        found
            .into_iter()
            .map(|(name, file)| (PluginConfig::named(&name), file)),
    );
    let mut planned = ordered(None, default);
    for (name, pipeline) in &config.pipelines {
        let items = pipeline
            .plugins
            .iter()
            .map(|item| {
                let settings = config.pipeline_plugin(name, item);
                let file = settings.path.clone().unwrap_or_default();
                (settings, file)
            })
            .collect();
        planned.extend(ordered(Some(name), items));
    }
    planned
}

/// One pipeline's plugins sorted by (priority, name).
fn ordered(pipeline: Option<&str>, items: Vec<(PluginConfig, PathBuf)>) -> Vec<Planned> {
    let mut planned: Vec<Planned> = items
        .into_iter()
        .enumerate()
        .map(|(position, (settings, file))| Planned {
            pipeline: pipeline.map(str::to_string),
            priority: settings
                .priority
                .unwrap_or(i64::try_from(position).unwrap_or(i64::MAX)),
            settings,
            file,
        })
        .collect();
    planned.sort_by(|a, b| (a.priority, &a.settings.name).cmp(&(b.priority, &b.settings.name)));
    planned
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
            reconciling: tokio::sync::Mutex::new(()),
            generation: tokio::sync::watch::channel(0).0,
            retiring: std::sync::Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            loads_ok: std::sync::atomic::AtomicU64::new(0),
            loads_failed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Plugin versions loaded and failed loads so far.
    pub fn load_counts(&self) -> LoadCounts {
        use std::sync::atomic::Ordering::Relaxed;
        LoadCounts {
            ok: self.loads_ok.load(Relaxed),
            failed: self.loads_failed.load(Relaxed),
        }
    }

    fn count_load(&self, ok: bool) {
        let counter = if ok {
            &self.loads_ok
        } else {
            &self.loads_failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The runtime plugins run on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The chain requests run now. Hold on to it for the whole request.
    pub fn chain(&self) -> Arc<Chain> {
        self.current.load().chain.clone()
    }

    /// The chain of the named pipeline `name`, if there is one.
    pub fn named_chain(&self, name: &str) -> Option<Arc<Chain>> {
        self.current.load().named.get(name).cloned()
    }

    /// The named pipeline a virtual key is routed to, if any.
    pub fn pipeline_of_key(&self, key: &str) -> Option<String> {
        self.current.load().virtual_keys.get(key).cloned()
    }

    /// Every known plugin with its status, in order.
    pub fn entries(&self) -> Vec<PluginEntry> {
        self.current.load().entries.clone()
    }

    /// Replaced or removed versions still draining their in-flight requests.
    pub fn draining(&self) -> usize {
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|p| p.busy_instances() > 0);
        retiring.len()
    }

    /// A receiver of the reconcile generation, bumped after every reconcile.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Brings the loaded plugins in line with `config` and the plugins directory: loads new and
    /// changed plugins, unloads removed ones, swaps the new chain in, then retires what it
    /// replaced. A plugin that fails to load never stops the others; if it had a good version,
    /// that version keeps serving.
    pub async fn reconcile(&self, config: &Config) {
        self.reconcile_forcing(config, None).await;
    }

    /// [`reconcile`](Self::reconcile), reloading plugin `force` even if nothing about it
    /// changed (and retrying it even if the same input failed before).
    pub async fn reconcile_forcing(&self, config: &Config, force: Option<&str>) {
        let _one_at_a_time = self.reconciling.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let old = self.current.load_full();
        let defaults = config.plugin_defaults();
        let mut entries = Vec::new();
        let mut retired = Vec::new();
        let plan = plan(config);
        let fresh: Vec<PluginEntry> = plan
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.settings.enabled && !old.entries.iter().any(|e| e.name == p.settings.name)
            })
            .map(|(order, p)| {
                let limits = p.settings.limits.apply(defaults);
                let mut entry =
                    PluginEntry::blank(&p.settings, p.file.clone(), order, limits, Status::Loading);
                entry.priority = p.priority;
                entry.pipeline.clone_from(&p.pipeline);
                entry
            })
            .collect();
        if !fresh.is_empty() {
            // Show new plugins as loading while they compile; the chain is unchanged.
            let mut entries = old.entries.clone();
            entries.extend(fresh);
            self.current.store(Arc::new(Snapshot {
                entries,
                chain: old.chain.clone(),
                named: old.named.clone(),
                virtual_keys: old.virtual_keys.clone(),
            }));
        }
        for (order, planned) in plan.into_iter().enumerate() {
            let Planned {
                pipeline,
                priority,
                settings,
                file,
            } = planned;
            let prev = old.entries.iter().find(|e| e.name == settings.name);
            let forced = force == Some(settings.name.as_str());
            let mut entry = self
                .reconcile_one(prev, settings, file, order, defaults, forced)
                .await;
            entry.priority = priority;
            entry.pipeline = pipeline;
            if let Some(old_plugin) = prev.and_then(|p| p.plugin.as_ref())
                && !entry
                    .plugin
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(p, old_plugin))
            {
                retired.push(old_plugin.clone());
            }
            entries.push(entry);
        }
        for gone in old
            .entries
            .iter()
            .filter(|e| !entries.iter().any(|n| n.name == e.name))
        {
            tracing::info!(
                plugin = gone.name,
                sha256 = gone.sha256.as_deref().unwrap_or(""),
                "plugin removed; unloading it after its in-flight requests"
            );
            retired.extend(gone.plugin.clone());
        }
        let chain = build_chain(&entries, None);
        let named = config
            .pipelines
            .keys()
            .map(|name| (name.clone(), build_chain(&entries, Some(name))))
            .collect();
        let virtual_keys = config
            .pipelines
            .iter()
            .flat_map(|(name, p)| {
                p.virtual_keys
                    .iter()
                    .map(move |k| (k.clone(), name.clone()))
            })
            .collect();
        self.current.store(Arc::new(Snapshot {
            entries,
            chain,
            named,
            virtual_keys,
        }));
        for plugin in &retired {
            plugin.retire().await;
        }
        {
            let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
            retiring.retain(|p| p.busy_instances() > 0);
            retiring.extend(retired.into_iter().filter(|p| p.busy_instances() > 0));
        }
        self.generation.send_modify(|g| *g += 1);
    }

    async fn reconcile_one(
        &self,
        prev: Option<&PluginEntry>,
        settings: PluginConfig,
        file: PathBuf,
        order: usize,
        defaults: Limits,
        forced: bool,
    ) -> PluginEntry {
        let limits = settings.limits.apply(defaults);
        let mut entry = PluginEntry::blank(&settings, file, order, limits, Status::Disabled);
        entry.compiles = prev.map_or(0, |p| p.compiles);
        if !settings.enabled {
            if prev.is_some_and(|p| p.status != Status::Disabled) {
                tracing::info!(plugin = settings.name, "plugin disabled in config");
            }
            return entry;
        }
        // A file over the size cap is refused unread, like any broken version: the last good
        // version (if any) keeps serving. A missing file is handled below, as a removal.
        if let Ok(meta) = tokio::fs::metadata(&entry.file).await
            && let Err(err) = self.runtime.check_size(meta.len())
        {
            let message = format!("{err:#}");
            tracing::error!(plugin = entry.name, "plugin failed to load: {message}");
            self.count_load(false);
            if let Some(prev) = prev.filter(|p| p.plugin.is_some()) {
                return PluginEntry {
                    order,
                    error: Some(message),
                    ..prev.clone()
                };
            }
            entry.status = Status::Failed;
            entry.error = Some(message);
            return entry;
        }
        let bytes = match tokio::fs::read(&entry.file).await {
            Ok(bytes) => bytes,
            Err(err) => {
                let message = format!("cannot read {}: {err}", entry.file.display());
                tracing::error!(plugin = entry.name, "plugin failed to load: {message}");
                self.count_load(false);
                entry.status = Status::Failed;
                entry.error = Some(message);
                return entry;
            }
        };
        let sha = sha256_hex(&bytes);
        let serving = prev.filter(|p| p.plugin.is_some());
        if let Some(prev) = serving
            && !forced
            && prev.sha256.as_deref() == Some(sha.as_str())
            && prev.settings == settings
            && prev.file == entry.file
        {
            // Same bytes, same settings: nothing to do.
            return PluginEntry {
                order,
                ..prev.clone()
            };
        }
        if let Some(prev) = prev
            && !forced
            && prev.failed.as_ref() == Some(&(sha.clone(), settings.clone()))
        {
            // This exact input already failed; keep the recorded outcome.
            return PluginEntry {
                order,
                ..prev.clone()
            };
        }
        let started = Instant::now();
        let reuse = serving
            .filter(|p| p.sha256.as_deref() == Some(sha.as_str()))
            .and_then(|p| p.compiled.clone())
            .filter(|c| c.suits(limits.stack_bytes, settings.isolation.unwrap_or_default()));
        let recompiled = reuse.is_none();
        match self
            .prepare(&entry.name, &sha, bytes, reuse, &settings, limits)
            .await
        {
            Ok((plugin, compiled)) => {
                self.count_load(true);
                tracing::info!(
                    plugin = entry.name,
                    file = %entry.file.display(),
                    old_sha256 = serving.and_then(|p| p.sha256.as_deref()).unwrap_or("-"),
                    new_sha256 = sha,
                    recompiled,
                    reported_name = plugin.reported_name(),
                    hooks = ?plugin.hooks(),
                    ms = started.elapsed().as_millis() as u64,
                    "plugin {}", if serving.is_some() { "reloaded" } else { "loaded" }
                );
                entry.status = Status::Active;
                entry.sha256 = Some(sha);
                entry.compiles += u64::from(recompiled);
                entry.plugin = Some(plugin);
                entry.compiled = Some(compiled);
            }
            Err(err) => {
                self.count_load(false);
                let message = format!("{err:#}");
                tracing::error!(
                    plugin = entry.name,
                    file = %entry.file.display(),
                    old_sha256 = serving.and_then(|p| p.sha256.as_deref()).unwrap_or("-"),
                    new_sha256 = sha,
                    ms = started.elapsed().as_millis() as u64,
                    "plugin failed to load{}: {message}",
                    if serving.is_some() { "; the last good version keeps serving" } else { "" }
                );
                entry.failed = Some((sha.clone(), settings.clone()));
                match serving {
                    Some(prev) => {
                        // Keep the last good version, with its settings, and show the failure.
                        return PluginEntry {
                            order,
                            error: Some(format!("loading sha256 {sha} failed: {message}")),
                            failed: entry.failed,
                            ..prev.clone()
                        };
                    }
                    None => {
                        entry.status = Status::Failed;
                        entry.sha256 = Some(sha);
                        entry.error = Some(message);
                    }
                }
            }
        }
        entry.loaded_at = SystemTime::now();
        entry
    }

    /// Compiles (unless `compiled` is given) and loads a plugin without touching the chain: the
    /// fallible half of a reload, also used to vet an upload before it is installed.
    pub(crate) async fn prepare(
        &self,
        name: &str,
        sha256: &str,
        bytes: Vec<u8>,
        compiled: Option<Compiled>,
        settings: &PluginConfig,
        limits: Limits,
    ) -> anyhow::Result<(Arc<LoadedPlugin>, Compiled)> {
        let compiled = match compiled {
            Some(compiled) => compiled,
            None => {
                self.runtime
                    .compile_bounded(
                        sha256,
                        bytes,
                        limits.stack_bytes,
                        settings.isolation.unwrap_or_default(),
                    )
                    .await?
            }
        };
        let plugin = self
            .runtime
            .load(
                name,
                &compiled,
                PluginSetup {
                    config: settings.config.to_string(),
                    limits,
                    quarantine: settings.quarantine,
                    grants: settings.grants.clone(),
                    isolation: settings.isolation,
                },
            )
            .await?;
        Ok((plugin, compiled))
    }

    /// Retires every plugin: `cleanup` runs on each idle instance. Call after the server has
    /// drained its requests.
    pub async fn shutdown(&self) {
        let _one_at_a_time = self.reconciling.lock().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let old = self.current.swap(Arc::new(Snapshot::default()));
        let mut all: Vec<_> = old
            .entries
            .iter()
            .filter_map(|e| e.plugin.clone())
            .collect();
        for plugin in &all {
            plugin.retire().await;
        }
        all.extend(std::mem::take(
            &mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        for plugin in all {
            plugin.drained().await;
        }
    }
}
