//! The wasm component runtime: one engine (per wasm stack limit), compiled plugins, pooled warm
//! instances and every
//! hook call under fuel, deadline and memory limits. It knows nothing of HTTP.
//!
//! Model: each plugin is compiled once (off the async runtime) and pre-instantiated
//! (`InstancePre`). Instances are created on demand from the pooling allocator, run `init`
//! once, and are then reused: one instance serves one request at a time, and every hook of a
//! request runs on the same instance (shared isolation, what a plugin that declares
//! `shared-instances` gets unless its config says otherwise: one hook call at a time, each call
//! on whichever instance is idle). An instance that trapped or hit a limit is discarded.
//! Under per-request isolation an instance serves one request only, and instances start from a
//! snapshot taken after the plugin's one `init` (the `snapshot` module).

mod bindings;
mod cache;
mod capacity;
mod compile;
mod epoch;
mod exchange;
mod failure;
mod grants;
mod host;
mod limits;
mod output;
mod plugin;
mod quarantine;
mod snapshot;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use failure::{FailureKind, HookFailure};
pub use grants::{DirGrant, Grants};
pub use limits::Limits;
use plugin::Prepared;
pub use plugin::{Isolation, LoadedPlugin, PluginInstance, PluginSetup, checkout_all};
pub use quarantine::{QuarantinePolicy, QuarantineStatus};
pub use stats::{HookSnapshot, LatencyHistogram, PluginStats, StatsSnapshot};

use crate::kv::KvStore;
use host::HostState;
use snapshot::Snapshotting;

/// The WIT package of the plugin world.
pub const WORLD_PACKAGE: &str = "wasmgate:plugin";
/// The version of the plugin world this gateway speaks (`wit/plugin.wit`).
pub const WORLD_VERSION: &str = "0.7.0";

/// Process-wide runtime settings (per-plugin limits are in [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeOptions {
    /// Most plugin instances alive at once across all plugins (the pooling allocator's size).
    pub max_instances: u32,
    /// Largest memory cap a plugin may be given, in bytes (a pool slot's size).
    pub max_memory_bytes: u64,
    /// Largest wasm stack a plugin may be given with `limits.stack_kb`, in bytes.
    pub max_wasm_stack_bytes: usize,
    /// Idle warm instances kept per plugin; extra ones are retired.
    pub max_idle_per_plugin: usize,
    /// Largest component file accepted, in bytes (compiling is not cheap; bound it).
    pub max_component_bytes: usize,
    /// Longest a compilation may take before the load is given up, in milliseconds.
    pub compile_timeout_ms: u64,
    /// Bytes the key-value store may hold across all plugins.
    pub kv_max_bytes: usize,
    /// Largest single key-value entry, in bytes.
    pub kv_max_value_bytes: usize,
    /// Whether hook calls are metered with fuel (`limits.fuel`). Off, compiled plugins carry no
    /// fuel counting (5-10 % more throughput with the benchmark's realistic plugins) and only
    /// the wall-clock deadline (`limits.timeout_ms`) bounds a call's CPU: a runaway call is
    /// stopped just the same, but by time, which depends on the machine's load, rather than
    /// by a count of instructions, which does not.
    pub fuel: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            max_instances: 1024,
            max_memory_bytes: 512 << 20,
            max_wasm_stack_bytes: 8 << 20,
            max_idle_per_plugin: 64,
            max_component_bytes: 32 << 20,
            compile_timeout_ms: 120_000,
            kv_max_bytes: 64 << 20,
            kv_max_value_bytes: 1 << 20,
            fuel: true,
        }
    }
}

/// A compiled component, ready to be loaded (cheap to clone). Keeping it lets a config-only
/// change re-initialise a plugin without compiling it again.
#[derive(Clone)]
pub struct Compiled {
    component: Component,
    flavor: Arc<Flavor>,
    /// Whether (and from what) a snapshot can be taken after `init`, for per-request
    /// isolation.
    snapshotting: Snapshotting,
}

impl Compiled {
    /// The wasm stack limit of the engine this was compiled for, in bytes.
    pub fn stack_bytes(&self) -> usize {
        self.flavor.stack_bytes
    }

    /// Whether this compilation can serve a plugin with these settings: same wasm stack, and
    /// instrumented for snapshots exactly when the plugin's instances are per-request.
    pub fn suits(&self, stack_bytes: usize, isolation: Isolation) -> bool {
        let per_request = !matches!(self.snapshotting, Snapshotting::NotWanted);
        self.stack_bytes() == stack_bytes && per_request == (isolation == Isolation::PerRequest)
    }
}

/// One engine configuration. wasmtime sets the wasm stack limit per engine, so each distinct
/// per-plugin stack limit gets its own engine (with its own linker and cache key); plugins that
/// keep the default share one.
struct Flavor {
    stack_bytes: usize,
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<cache::ComponentCache>,
    compiler: compile::Compiler,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled(..)")
    }
}

/// The shared engine, linker and host services all plugins run on.
pub struct Runtime {
    flavors: std::sync::Mutex<Vec<Arc<Flavor>>>,
    cache_dir: Option<std::path::PathBuf>,
    ticker: epoch::Ticker,
    kv: Arc<KvStore>,
    options: RuntimeOptions,
    capacity: capacity::Capacity,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine (pooling allocator, fuel, epoch interruption), links the host
    /// imports and a locked-down WASI, and starts the process's epoch ticker.
    ///
    /// With `cache_dir`, compiled components are cached there (see [`Runtime::compile_cached`]);
    /// a cache directory that cannot be used is logged and the runtime works without it.
    pub fn new(
        options: RuntimeOptions,
        cache_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Arc<Self>> {
        let ticker = epoch::Ticker::start();
        let runtime = Self {
            flavors: std::sync::Mutex::new(Vec::new()),
            cache_dir: cache_dir.map(std::path::Path::to_path_buf),
            ticker,
            kv: Arc::new(KvStore::new(
                options.kv_max_bytes,
                options.kv_max_value_bytes,
            )),
            options,
            capacity: capacity::Capacity::new(
                usize::try_from(options.max_instances.max(1)).unwrap_or(usize::MAX),
            ),
        };
        // The default engine is created eagerly so a broken setup fails at startup.
        runtime.flavor(Limits::default().stack_bytes)?;
        Ok(Arc::new(runtime))
    }

    /// The engine for a wasm stack limit, created on first use.
    fn flavor(&self, stack_bytes: usize) -> anyhow::Result<Arc<Flavor>> {
        let mut flavors = self.flavors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = flavors.iter().find(|f| f.stack_bytes == stack_bytes) {
            return Ok(found.clone());
        }
        if stack_bytes > self.options.max_wasm_stack_bytes {
            anyhow::bail!(
                "a wasm stack of {stack_bytes} bytes exceeds runtime.max_wasm_stack_bytes = {}",
                self.options.max_wasm_stack_bytes
            );
        }
        let options = &self.options;
        let mut pool = PoolingAllocationConfig::new();
        let instances = options.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            .table_elements(limits::MAX_TABLE_ELEMENTS)
            // A slot given back (per-request isolation discards an instance after every
            // request) is reset by copying back only the pages it dirtied, found with Linux's
            // PAGEMAP_SCAN (6.7+; elsewhere wasmtime falls back to `madvise`), up to these many
            // bytes, instead of `madvise` throwing the pages away and the next instance
            // faulting them in again: 15 system calls and ~44 page faults fewer per request
            // with the benchmark's five plugins, for ~70 k more instructions of copying. A
            // slot keeps at most that much resident while unused.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_memory_size(
                usize::try_from(options.max_memory_bytes)
                    .context("runtime.max_memory_bytes does not fit this platform")?,
            );

        let mut config = Config::new();
        config
            .consume_fuel(options.fuel)
            .epoch_interruption(true)
            .max_wasm_stack(stack_bytes)
            // Native headroom well above the wasm stack cap, so a guest overflow is a trap
            // and never overflows the host stack.
            .async_stack_size(stack_bytes + (2 << 20))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&config).map_err(|e| anyhow!("creating the wasm engine failed: {e}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow!("linking WASI failed: {e}"))?;
        bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("linking the plugin imports failed: {e}"))?;

        let cache = self.cache_dir.as_deref().and_then(|dir| {
            cache::ComponentCache::new(dir.to_path_buf(), &engine)
                .inspect_err(|err| {
                    tracing::warn!(dir = %dir.display(), "compiled-component cache disabled: {err:#}");
                })
                .ok()
        });
        self.ticker.add(&engine);
        let flavor = Arc::new(Flavor {
            compiler: compile::Compiler::for_engine(&config),
            stack_bytes,
            engine,
            linker,
            cache,
        });
        flavors.push(flavor.clone());
        Ok(flavor)
    }

    /// The runtime settings.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// The epoch ticker, to be kept ticking around every entry into wasm.
    pub(super) fn ticker(&self) -> &epoch::Ticker {
        &self.ticker
    }

    /// The instance budget shared by all plugins.
    pub(super) fn capacity(&self) -> &capacity::Capacity {
        &self.capacity
    }

    /// Instances that can still be created without waiting for another to be dropped.
    pub fn free_instances(&self) -> usize {
        self.capacity.available()
    }

    /// The key-value store shared by all plugins.
    pub fn kv(&self) -> &Arc<KvStore> {
        &self.kv
    }

    /// Compiles component bytes to machine code. CPU-heavy and blocking: call it off the async
    /// runtime (e.g. in `spawn_blocking`). Fails with a precise message for anything that is
    /// not a valid component (a core module, a truncated or non-wasm file).
    pub fn compile(&self, bytes: &[u8], stack_bytes: usize) -> anyhow::Result<Compiled> {
        let flavor = self.flavor(stack_bytes)?;
        Self::compile_on(&flavor, bytes).map(|component| Compiled {
            component,
            flavor,
            snapshotting: Snapshotting::NotWanted,
        })
    }

    fn compile_on(flavor: &Flavor, bytes: &[u8]) -> anyhow::Result<Component> {
        if bytes.is_empty() {
            anyhow::bail!("the file is empty; expected a WebAssembly component");
        }
        if !bytes.starts_with(b"\0asm") {
            anyhow::bail!(
                "not a WebAssembly file (it does not start with the `\\0asm` magic bytes)"
            );
        }
        // Layer 1 is a component, layer 0 a core module (bytes 6..8 of the header).
        if bytes.len() >= 8 && bytes[6..8] == [0, 0] {
            anyhow::bail!(
                "this is a core WebAssembly module, not a component; build it for \
                 `wasm32-wasip2` or wrap it with `wasm-tools component new`"
            );
        }
        flavor.compiler.compile(&flavor.engine, bytes).map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("pooling allocator") {
                // Valid, but it declares more (tables, memories) than an instance slot holds.
                anyhow!(
                    "the component asks for more than a plugin instance may have: {text}. \
                     Plugins get at most the runtime's pool limits (see runtime.* in the config)"
                )
            } else {
                anyhow!("invalid WebAssembly component: {text}")
            }
        })
    }

    /// [`Runtime::compile`] through the on-disk cache when one is configured: a valid cached
    /// entry for these bytes (`sha256` is their hex sha256) skips compilation. Blocking.
    pub fn compile_cached(
        &self,
        sha256: &str,
        bytes: &[u8],
        stack_bytes: usize,
    ) -> anyhow::Result<Compiled> {
        let flavor = self.flavor(stack_bytes)?;
        let Some(cache) = &flavor.cache else {
            return Self::compile_on(&flavor, bytes).map(|component| Compiled {
                component,
                flavor: flavor.clone(),
                snapshotting: Snapshotting::NotWanted,
            });
        };
        let (component, outcome) = cache.get_or_compile(&flavor.engine, sha256, bytes, |b| {
            Self::compile_on(&flavor, b)
        })?;
        tracing::debug!(sha256, ?outcome, "compiled component");
        Ok(Compiled {
            component,
            flavor: flavor.clone(),
            snapshotting: Snapshotting::NotWanted,
        })
    }

    /// Compiles off the async runtime (through the cache), refusing components larger than
    /// `max_component_bytes` and giving up after `compile_timeout_ms`. (wasmtime cannot cancel a
    /// compilation: a timed-out one finishes in the background and is dropped.) For
    /// per-request isolation the component compiled is its instrumented copy, so that the
    /// load can snapshot it after `init` (see the `snapshot` module).
    ///
    /// Compilation leaves nothing resident behind (see the `compile` module): a cold start
    /// keeps the memory a warm one does.
    pub async fn compile_bounded(
        self: &Arc<Self>,
        sha256: &str,
        bytes: Vec<u8>,
        stack_bytes: usize,
        isolation: Isolation,
    ) -> anyhow::Result<Compiled> {
        self.check_size(bytes.len() as u64)?;
        let runtime = self.clone();
        let sha256 = sha256.to_string();
        self.bounded(move || {
            let compiled = match isolation {
                Isolation::Pooled | Isolation::Shared => {
                    runtime.compile_cached(&sha256, &bytes, stack_bytes)
                }
                Isolation::PerRequest => runtime.compile_instrumented(&sha256, bytes, stack_bytes),
            };
            compile::return_freed_memory();
            compiled
        })
        .await
    }

    /// Runs a compilation on a blocking thread, giving up after `compile_timeout_ms`.
    async fn bounded(
        &self,
        compile: impl FnOnce() -> anyhow::Result<Compiled> + Send + 'static,
    ) -> anyhow::Result<Compiled> {
        let budget = Duration::from_millis(self.options.compile_timeout_ms);
        let task = tokio::task::spawn_blocking(compile);
        match tokio::time::timeout(budget, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(anyhow!("the compile task failed: {join}")),
            Err(_) => Err(anyhow!(
                "compiling took longer than runtime.compile_timeout_ms = {} ms; the component \
                 was refused",
                self.options.compile_timeout_ms
            )),
        }
    }

    /// Compiles the instrumented copy of `bytes` for per-request isolation, keeping `bytes`
    /// for the snapshot. A component Wizer cannot instrument is compiled as it is, and its
    /// instances will each run `init` (the load logs why). Blocking.
    fn compile_instrumented(
        &self,
        sha256: &str,
        bytes: Vec<u8>,
        stack_bytes: usize,
    ) -> anyhow::Result<Compiled> {
        let instrumented = match snapshot::instrument(&bytes) {
            Ok(instrumented) => instrumented,
            Err(err) => {
                let mut compiled = self.compile_cached(sha256, &bytes, stack_bytes)?;
                compiled.snapshotting = Snapshotting::Unavailable(
                    format!("Wizer cannot instrument it: {err:#}").into(),
                );
                return Ok(compiled);
            }
        };
        let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&instrumented));
        let mut compiled = self.compile_cached(&key, &instrumented, stack_bytes)?;
        compiled.snapshotting = Snapshotting::From(bytes.into());
        Ok(compiled)
    }

    /// Compiles a snapshot written by the `snapshot` module, bounded like
    /// [`compile_bounded`](Self::compile_bounded), and pre-instantiates it. Not through the
    /// on-disk cache: a snapshot holds what `init` drew at random or read from the clock, so
    /// most differ from load to load, and each would add an entry (tens of MB for a Python or
    /// JavaScript plugin) that is never hit again.
    async fn compile_snapshot(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        stack_bytes: usize,
    ) -> anyhow::Result<Prepared> {
        self.check_size(bytes.len() as u64)
            .context("the snapshot is too large")?;
        let runtime = self.clone();
        let compiled = self
            .bounded(move || {
                let compiled = runtime.compile(&bytes, stack_bytes);
                drop(bytes);
                compile::return_freed_memory();
                compiled
            })
            .await?;
        Self::pre_instantiate(&compiled)
    }

    /// Refuses a component of `len` bytes when it is over `max_component_bytes`.
    pub fn check_size(&self, len: u64) -> anyhow::Result<()> {
        if len > self.options.max_component_bytes as u64 {
            anyhow::bail!(
                "the component is {len} bytes, over runtime.max_component_bytes = {}; it was \
                 not read or compiled",
                self.options.max_component_bytes
            );
        }
        Ok(())
    }

    /// Links a compiled component against the plugin world, creates its first instance, reads
    /// its name and hook set, and runs `init` with the setup's config. Errors say which step
    /// failed.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        compiled: &Compiled,
        setup: PluginSetup,
    ) -> anyhow::Result<Arc<LoadedPlugin>> {
        let limits = setup.limits;
        if limits.memory_bytes > self.options.max_memory_bytes {
            anyhow::bail!(
                "limits.memory_bytes = {} exceeds the runtime's max_memory_bytes = {}",
                limits.memory_bytes,
                self.options.max_memory_bytes
            );
        }
        if limits.stack_bytes != compiled.stack_bytes() {
            anyhow::bail!(
                "the component was compiled for a {} byte wasm stack but the plugin's limit is {}",
                compiled.stack_bytes(),
                limits.stack_bytes
            );
        }
        check_world_version(compiled)?;
        let pre = Self::pre_instantiate(compiled)?;
        LoadedPlugin::load(
            self.clone(),
            name,
            pre,
            compiled.snapshotting.clone(),
            setup,
        )
        .await
    }

    /// Links a compiled component against the plugin world and finds its exports.
    fn pre_instantiate(compiled: &Compiled) -> anyhow::Result<Prepared> {
        let pre = compiled
            .flavor
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| {
                anyhow!(
                    "the component does not fit the gateway: {e:#}. Plugins may import only the \
                 wasmgate:plugin@{WORLD_VERSION} interfaces and WASI 0.2"
                )
            })?;
        Prepared::new(pre).map_err(|e| {
            anyhow!(
                "the component does not export the wasmgate:plugin@{WORLD_VERSION} `plugin` \
                 world: {e:#}"
            )
        })
    }
}

/// Refuses a component built against another version of the plugin world, naming both
/// versions: a clearer message than the linker's "import not found". Versions match the way
/// the linker matches them (semver: `0.1.x` is compatible with `0.1.0`).
fn check_world_version(compiled: &Compiled) -> anyhow::Result<()> {
    let ours = semver_family(WORLD_VERSION);
    let ty = compiled.component.component_type();
    for (name, _) in ty.imports(&compiled.flavor.engine) {
        let Some(rest) = name
            .strip_prefix(WORLD_PACKAGE)
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let theirs = rest.split_once('@').map_or("", |(_, v)| v);
        if semver_family(theirs) == ours {
            continue;
        }
        let advice = if newer(theirs, WORLD_VERSION) {
            "a newer plugin world than this gateway speaks: upgrade the gateway, or build the \
             plugin against this gateway's `wit/`"
        } else {
            "an older plugin world: rebuild the plugin against this gateway's `wit/` (or the \
             matching wasmgate-sdk)"
        };
        anyhow::bail!(
            "the component was built against {WORLD_PACKAGE}@{theirs} (it imports `{name}`), \
             but this gateway speaks {WORLD_PACKAGE}@{WORLD_VERSION}; that is {advice}"
        );
    }
    Ok(())
}

/// The part of a version semver treats as compatible: `major` from 1.0 on, `0.minor` before,
/// `0.0.patch` before that.
fn semver_family(version: &str) -> Vec<&str> {
    let parts: Vec<&str> = version
        .split(['-', '+'])
        .next()
        .unwrap_or("")
        .split('.')
        .collect();
    let keep = match parts.as_slice() {
        ["0", "0", ..] => 3,
        ["0", ..] => 2,
        _ => 1,
    };
    parts.into_iter().take(keep).collect()
}

/// Whether version `a` is greater than `b` (numeric, dot by dot).
fn newer(a: &str, b: &str) -> bool {
    let nums = |v: &str| -> Vec<u64> {
        v.split(['-', '+'])
            .next()
            .unwrap_or("")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    nums(a) > nums(b)
}

/// Advances the epoch of every engine each tick, for as long as the runtime lives: one thread
/// for the whole process's plugins, holding only weak handles.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_version_is_the_wit_packages() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(
            wit.contains(&format!("package {WORLD_PACKAGE}@{WORLD_VERSION};")),
            "WORLD_VERSION must match wit/plugin.wit"
        );
    }

    #[test]
    fn versions_are_compared_as_semver_families() {
        assert_eq!(semver_family("0.1.0"), semver_family("0.1.7"));
        assert_ne!(semver_family("0.1.0"), semver_family("0.2.0"));
        assert_ne!(semver_family("0.0.1"), semver_family("0.0.2"));
        assert_eq!(semver_family("1.2.0"), semver_family("1.9.3"));
        assert!(newer("0.2.0", "0.1.0"));
        assert!(newer("0.10.0", "0.9.0"));
        assert!(!newer("0.0.1", "0.1.0"));
    }
}
