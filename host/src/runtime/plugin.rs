//! A loaded plugin (compiled, pre-instantiated, with its pool of warm instances and live
//! counters) and a checked-out instance whose hook calls run under the plugin's limits.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Notify;
use wasmtime::component::{Instance, InstancePre};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::bindings::{self, Declared, ExportIndices, Exports, OutputSize};
use super::capacity::Permit;
use super::epoch::Ticker;
use super::exchange::{self, Annotations, Lent};
use super::failure::{FailureKind, HookFailure};
use super::grants::Grants;
use super::host::HostState;
use super::limits::Limits;
use super::quarantine::{Quarantine, QuarantinePolicy, QuarantineStatus};
use super::snapshot::Snapshotting;
use super::stats::{PluginStats, StatsSnapshot};
use crate::chat::ChatRequest;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::hooks::{
    ChunkOutcome, Hook, HookSet, HttpRequest, Outcome, PostDecision, PreOutcome, StreamChunk,
    TransportOutcome,
};

/// How a plugin's instances are shared between requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Warm instances are reused from request to request (one request at a time each): what a
    /// request leaves in the plugin's memory, the next may see. What a plugin that does not
    /// declare `shared-instances` gets unless its config says otherwise.
    #[default]
    Pooled,
    /// Every request gets an instance that never served another and is discarded after it:
    /// nothing leaks between requests through the plugin's memory. `init` runs once, at load,
    /// and every instance starts from a snapshot of the memory it left (unless the component
    /// cannot be snapshotted: then each instance runs `init`). Fresh instances are created
    /// ahead of time, in the background, so requests seldom wait for one.
    PerRequest,
    /// Instances are shared at the grain of a hook call: each call takes the most recently
    /// used idle instance and gives it back as soon as it returns, so a request's hooks may run
    /// on different instances and one instance serves many requests in flight, one call at a
    /// time. For plugins that keep nothing about a request in their memory from one hook to
    /// the next (what a later hook needs goes in the request's `context`, what outlives the
    /// request in `kv`). Under load a few instances serve every call and stay in the CPU's
    /// caches, where pooled instances are one per request in flight. What a plugin that
    /// declares `shared-instances` gets unless its config says otherwise.
    Shared,
}

/// Everything a plugin is loaded with besides its component.
#[derive(Debug, Clone)]
pub struct PluginSetup {
    /// The JSON text handed to `init`.
    pub config: String,
    /// The limits its calls run under.
    pub limits: Limits,
    /// When repeated failures take it out of service.
    pub quarantine: QuarantinePolicy,
    /// Capabilities beyond the sandbox's defaults.
    pub grants: Grants,
    /// Whether instances are reused between requests; `None`: as the plugin declares
    /// ([`Isolation::Shared`] when its `hooks` export sets `shared-instances`, else
    /// [`Isolation::Pooled`]).
    pub isolation: Option<Isolation>,
}

/// A plugin that compiled, linked and initialised: the unit the pipeline runs.
pub struct LoadedPlugin {
    name: Arc<str>,
    reported_name: String,
    hooks: HookSet,
    limits: Limits,
    grants: Grants,
    config: String,
    isolation: Isolation,
    runtime: Arc<Runtime>,
    /// What new instances are created from: the component, or under per-request isolation
    /// its snapshot after `init` when one could be taken.
    pre: Prepared,
    /// Whether `pre` is a snapshot taken after `init`: its instances start initialised.
    preinitialized: bool,
    pool: Mutex<Pool>,
    /// Signalled whenever `Pool::busy` drops, so `drained` can wake.
    released: Notify,
    stats: PluginStats,
    quarantine: Quarantine,
}

/// The instances of a plugin: idle ones (warm, or never used under per-request isolation), and
/// how many are out serving requests (or being created in the background, or cleaned up), so
/// retirement can wait for the last one.
#[derive(Default)]
struct Pool {
    idle: Vec<PluginInstance>,
    busy: usize,
    retired: bool,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("hooks", &self.hooks)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    pub(super) async fn load(
        runtime: Arc<Runtime>,
        name: &str,
        pre: Prepared,
        snapshotting: Snapshotting,
        setup: PluginSetup,
    ) -> anyhow::Result<Arc<Self>> {
        let PluginSetup {
            config,
            limits,
            quarantine,
            grants,
            isolation,
        } = setup;
        let name: Arc<str> = Arc::from(name);
        let mut first =
            PluginInstance::instantiate_for_load(&runtime, &name, &pre, limits, &grants).await?;
        let reported_name = first
            .get_name()
            .await
            .map_err(|f| anyhow::anyhow!("get-name failed: {}", f.detail))?;
        let declared: Declared = first
            .call(None, Hook::Init, async |p, s| p.call_hooks(s).await.map(Ok))
            .await
            .map_err(|f| anyhow::anyhow!("hooks failed: {}", f.detail))?
            .into();
        let hooks = declared.hooks;
        let isolation = isolation.unwrap_or(if declared.shared_instances {
            Isolation::Shared
        } else {
            Isolation::Pooled
        });
        first
            .init(&config)
            .await
            .map_err(|f| anyhow::anyhow!("init rejected the config: {}", f.detail))?;
        let (init_elapsed, init_fuel) = (first.last_elapsed, first.last_fuel);
        let no_snapshot = |why: &dyn std::fmt::Display| {
            tracing::warn!(
                plugin = &*name,
                "no snapshot after init ({why}); each per-request instance will run init itself"
            );
        };
        let (pre, preinitialized, first) = match (isolation, snapshotting) {
            (Isolation::Pooled | Isolation::Shared, _) => (pre, false, Some(first)),
            (Isolation::PerRequest, Snapshotting::From(source)) => match first
                .preinitialize(&runtime, &name, &source, &grants, &reported_name)
                .await
            {
                // The instance the snapshot was read from lives on in every instance of the
                // snapshot: it is dropped without `cleanup`, and the one that checked the
                // snapshot serves instead.
                Ok((snapshot, probe)) => (snapshot, true, Some(probe)),
                Err(err) => {
                    no_snapshot(&format_args!("{err:#}"));
                    // Not served either: reading its state may have left it unusable (a
                    // JavaScript instance refuses every call after the reads). Requests
                    // create instances that run `init`.
                    (pre, false, None)
                }
            },
            (Isolation::PerRequest, Snapshotting::Unavailable(why)) => {
                no_snapshot(&why);
                (pre, false, Some(first))
            }
            (Isolation::PerRequest, Snapshotting::NotWanted) => {
                no_snapshot(&"the component was compiled for pooled instances");
                (pre, false, Some(first))
            }
        };
        let plugin = Arc::new(Self {
            name,
            reported_name,
            hooks,
            limits,
            grants,
            config,
            isolation,
            runtime,
            pre,
            preinitialized,
            pool: Mutex::new(Pool::default()),
            released: Notify::new(),
            stats: PluginStats::default(),
            quarantine: Quarantine::new(quarantine),
        });
        plugin
            .stats
            .instances_created
            .fetch_add(1, Ordering::Relaxed);
        plugin
            .stats
            .record(Hook::Init, init_elapsed, init_fuel, None);
        if let Some(first) = first {
            plugin.pool().idle.push(first);
        }
        plugin.runtime.capacity().register(&plugin);
        Ok(plugin)
    }

    /// The plugin's name (its identity in config, logs and the admin API).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name the plugin reports through `get-name`.
    pub fn reported_name(&self) -> &str {
        &self.reported_name
    }

    /// The hooks the plugin implements.
    pub fn hooks(&self) -> HookSet {
        self.hooks
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether its instances are reused between requests.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether new instances start from a snapshot taken after `init` (per-request isolation
    /// on a component that could be snapshotted) instead of running `init` each.
    pub fn preinitialized(&self) -> bool {
        self.preinitialized
    }

    /// Live counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters themselves, for readers that need more than a snapshot (the
    /// per-hook latency histograms of `/metrics`).
    pub fn live_stats(&self) -> &PluginStats {
        &self.stats
    }

    /// Counts a request this plugin's `hook` short-circuited: the pre-hook answered or failed
    /// it, or the transport interceptor answered it.
    pub fn note_short_circuit(&self, hook: Hook) {
        self.stats.record_short_circuit(hook);
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Warm instances waiting in the pool.
    pub fn idle_instances(&self) -> usize {
        self.pool().idle.len()
    }

    /// Instances serving a request (or being cleaned up) right now.
    pub fn busy_instances(&self) -> usize {
        self.pool().busy
    }

    /// Whether the plugin was retired (replaced, removed or shut down).
    pub fn is_retired(&self) -> bool {
        self.pool().retired
    }

    fn release(&self) {
        let mut pool = self.pool();
        pool.busy = pool.busy.saturating_sub(1);
        drop(pool);
        self.released.notify_waiters();
    }

    /// Takes a warm instance, or creates and initialises a new one. Every successful checkout
    /// must be matched by a [`checkin`](Self::checkin). Under per-request isolation the
    /// instance taken has never served a request, and a replacement is started in the
    /// background.
    pub async fn checkout(self: &Arc<Self>) -> Result<PluginInstance, HookFailure> {
        // The common case (every hook call of a shared plugin): an idle instance, taken
        // without arming a wake-up or reading the clock.
        if let Some(instance) = self.take_idle() {
            return Ok(instance);
        }
        self.checkout_waiting().await
    }

    /// [`checkout`](Self::checkout) when no instance was idle: creates one within the
    /// runtime's budget, or waits for a place or for an instance to come back.
    async fn checkout_waiting(self: &Arc<Self>) -> Result<PluginInstance, HookFailure> {
        let started = Instant::now();
        let deadline = started + self.limits.timeout();
        let capacity = self.runtime.capacity();
        let _waiting = capacity.waiting();
        let permit = loop {
            // Armed before looking, so an instance given back meanwhile is not missed.
            let changed = capacity.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(instance) = self.take_idle() {
                return Ok(instance);
            }
            if let Some(permit) = capacity.try_acquire() {
                break permit;
            }
            // The budget is spent: free the place of another plugin's idle instance, and wait
            // for a place or for an instance of this plugin to come back.
            capacity.evict_one();
            tokio::select! {
                () = &mut changed => {}
                permit = capacity.acquire(deadline) => match permit {
                    Some(permit) => break permit,
                    None => {
                        // Not the plugin's doing: counted, but never a step towards quarantine.
                        let failure = HookFailure {
                            plugin: self.name.to_string(),
                            hook: Hook::Init,
                            kind: FailureKind::Capacity,
                            detail: capacity_detail(&self.runtime),
                        };
                        self.stats
                            .record(Hook::Init, started.elapsed(), 0, Some(failure.kind));
                        return Err(failure);
                    }
                },
            }
        };
        self.pool().busy += 1;
        // Creating an instance awaits; if this future is dropped before it ends, the busy
        // count taken above is given back all the same.
        let mut busy = BusyGuard(Some(self));
        let instance = self.create(permit).await?;
        busy.0 = None;
        Ok(instance)
    }

    /// Takes an idle instance without waiting, if there is one (counted busy; under
    /// per-request isolation a replacement is started in the background).
    pub fn take_idle(self: &Arc<Self>) -> Option<PluginInstance> {
        let instance = {
            let mut pool = self.pool();
            let instance = pool.idle.pop()?;
            pool.busy += 1;
            instance
        };
        if self.isolation == Isolation::PerRequest {
            self.replenish();
        }
        Some(instance)
    }

    /// Gives back an instance that was checked out but never called (a reservation undone):
    /// it goes back to the pool whatever the isolation, since no request touched it.
    pub fn put_back_unused(self: &Arc<Self>, instance: PluginInstance) {
        {
            let mut pool = self.pool();
            if !pool.retired && pool.idle.len() < self.runtime.options().max_idle_per_plugin {
                pool.idle.push(instance);
                pool.busy = pool.busy.saturating_sub(1);
                drop(pool);
                self.runtime.capacity().notify_changed();
                return;
            }
        }
        self.dispose(instance);
    }

    /// Creates and initialises one instance in the place `permit` holds (from the snapshot,
    /// which needs no `init`, when there is one), counting it (and its failure) in the stats.
    async fn create(&self, permit: Permit) -> Result<PluginInstance, HookFailure> {
        let started = Instant::now();
        let created = PluginInstance::instantiate(
            &self.runtime,
            &self.name,
            &self.pre,
            self.limits,
            &self.grants,
            permit,
        )
        .await;
        let mut instance = match created {
            Ok(instance) => instance,
            Err(failure) => {
                self.stats
                    .record(Hook::Init, started.elapsed(), 0, Some(failure.kind));
                self.note_outcome(Hook::Init, true);
                return Err(failure);
            }
        };
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        if self.preinitialized {
            return Ok(instance);
        }
        let result = instance.init(&self.config).await;
        self.stats.record(
            Hook::Init,
            instance.last_elapsed,
            instance.last_fuel,
            result.as_ref().err().map(|f| f.kind),
        );
        if result.is_err() {
            self.note_outcome(Hook::Init, true);
        }
        result.map(|()| instance)
    }

    /// Creates one fresh instance in the background and puts it in the pool, so the next
    /// request under per-request isolation does not wait for instantiation. It counts as busy
    /// while it is being created, so retirement waits for it.
    fn replenish(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut pool = self.pool();
            if pool.retired || pool.idle.len() >= self.runtime.options().max_idle_per_plugin {
                return;
            }
            pool.busy += 1;
        }
        // Only with a free place: requests come first, and create on demand if they must.
        let Some(permit) = self.runtime.capacity().try_acquire() else {
            self.release();
            return;
        };
        let plugin = self.clone();
        handle.spawn(async move {
            match plugin.create(permit).await {
                Ok(instance) => {
                    let spare = {
                        let mut pool = plugin.pool();
                        if pool.retired
                            || pool.idle.len() >= plugin.runtime.options().max_idle_per_plugin
                        {
                            Some(instance)
                        } else {
                            pool.idle.push(instance);
                            None
                        }
                    };
                    if let Some(instance) = spare {
                        plugin.cleanup_instance(instance).await;
                    }
                }
                Err(failure) => tracing::warn!(
                    plugin = &*plugin.name,
                    "could not create a fresh instance ahead of time: {failure}"
                ),
            }
            plugin.release();
        });
    }

    /// Returns an instance after a request. A poisoned instance is dropped; one returned to a
    /// retired plugin, beyond the idle cap, or under per-request isolation, is cleaned up (in
    /// the background) and dropped.
    pub fn checkin(self: &Arc<Self>, instance: PluginInstance) {
        if instance.poisoned {
            drop(instance);
            self.release();
            return;
        }
        {
            let mut pool = self.pool();
            if self.isolation != Isolation::PerRequest
                && !pool.retired
                && pool.idle.len() < self.runtime.options().max_idle_per_plugin
            {
                pool.idle.push(instance);
                pool.busy = pool.busy.saturating_sub(1);
                drop(pool);
                self.runtime.capacity().notify_changed();
                return;
            }
        }
        self.dispose(instance);
    }

    /// Cleans up and drops an instance that was counted busy (in the background), then gives
    /// the busy count back.
    fn dispose(self: &Arc<Self>, instance: PluginInstance) {
        let plugin = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    plugin.cleanup_instance(instance).await;
                    plugin.release();
                });
            }
            Err(_) => self.release(),
        }
    }

    /// Gives up one idle instance (cleaned up, then dropped) so its place in the runtime's
    /// instance budget goes to another plugin's request. Returns whether there was one.
    pub(super) fn evict_idle(self: &Arc<Self>) -> bool {
        let instance = {
            let mut pool = self.pool();
            let Some(instance) = pool.idle.pop() else {
                return false;
            };
            pool.busy += 1;
            instance
        };
        self.dispose(instance);
        true
    }

    /// Retires the plugin: no instance goes back to the pool any more, and `cleanup` runs on
    /// every idle instance now and on every checked-out one when its request returns it.
    pub async fn retire(self: &Arc<Self>) {
        let idle = {
            let mut pool = self.pool();
            pool.retired = true;
            std::mem::take(&mut pool.idle)
        };
        for instance in idle {
            self.cleanup_instance(instance).await;
        }
    }

    /// Resolves once the plugin is retired and its last instance is back and cleaned up.
    pub async fn drained(&self) {
        loop {
            let released = self.released.notified();
            {
                let pool = self.pool();
                if pool.retired && pool.busy == 0 {
                    return;
                }
            }
            released.await;
        }
    }

    async fn cleanup_instance(&self, mut instance: PluginInstance) {
        if !self.hooks.cleanup {
            return;
        }
        let result = instance
            .call(None, Hook::Cleanup, async |p, s| p.call_cleanup(s).await)
            .await;
        self.stats.record(
            Hook::Cleanup,
            instance.last_elapsed,
            instance.last_fuel,
            result.as_ref().err().map(|f| f.kind),
        );
        if let Err(failure) = result {
            tracing::warn!(plugin = &*self.name, "{failure}");
        }
    }

    /// Runs the transport interceptor on `instance`.
    pub async fn transport_interceptor(
        &self,
        instance: &mut PluginInstance,
        ctx: &Arc<RequestContext>,
        req: &HttpRequest,
    ) -> Result<TransportOutcome, HookFailure> {
        let result = bindings::with_http_request_wit(req, async |wit| {
            instance
                .call(Some(ctx), Hook::TransportInterceptor, async |p, s| {
                    p.call_transport_interceptor(s, wit.clone()).await
                })
                .await
        })
        .await
        .and_then(|o| {
            bindings::transport_outcome_from_wit(o)
                .map_err(|why| instance.invalid(Hook::TransportInterceptor, why))
        });
        self.observe(Hook::TransportInterceptor, instance, &result);
        result
    }

    /// Runs the pre-hook on `instance`, lending it `req`.
    pub async fn pre_hook(
        &self,
        instance: &mut PluginInstance,
        ctx: &Arc<RequestContext>,
        req: &Arc<ChatRequest>,
    ) -> Result<PreOutcome, HookFailure> {
        let lent = Lent::Request(req.clone());
        let result = instance
            .call(Some(ctx), Hook::PreHook, async |p, s| {
                s.data_mut().lent = lent;
                p.call_pre_hook(s, exchange::request_handle()).await
            })
            .await
            .and_then(|o| {
                bindings::pre_outcome_from_wit(o)
                    .map_err(|why| instance.invalid(Hook::PreHook, why))
            });
        self.observe(Hook::PreHook, instance, &result);
        result
    }

    /// Runs the post-hook on `instance`, lending it `outcome`: what it handed on.
    pub async fn post_hook(
        &self,
        instance: &mut PluginInstance,
        ctx: &Arc<RequestContext>,
        outcome: &Arc<Outcome>,
    ) -> Result<PostDecision, HookFailure> {
        let lent = Lent::Outcome(outcome.clone());
        instance.store.data_mut().annotations = Annotations::new(instance.limits.output_bytes);
        let result = instance
            .call(Some(ctx), Hook::PostHook, async |p, s| {
                s.data_mut().lent = lent;
                p.call_post_hook(s, exchange::outcome_handle()).await
            })
            .await
            .and_then(|outcome| {
                let annotations = std::mem::take(&mut instance.store.data_mut().annotations);
                bindings::post_decision(outcome, annotations)
                    .map_err(|why| instance.invalid(Hook::PostHook, why))
            });
        self.observe(Hook::PostHook, instance, &result);
        result
    }

    /// Runs the stream-chunk hook on `instance`.
    pub async fn stream_chunk(
        &self,
        instance: &mut PluginInstance,
        ctx: &Arc<RequestContext>,
        chunk: &StreamChunk,
    ) -> Result<ChunkOutcome, HookFailure> {
        let wit = bindings::chunk_param(chunk);
        let result = instance
            .call(Some(ctx), Hook::StreamChunk, async |p, s| {
                p.call_stream_chunk(s, wit.clone()).await
            })
            .await
            .and_then(|o| {
                bindings::chunk_outcome_from_wit(o)
                    .map_err(|why| instance.invalid(Hook::StreamChunk, why))
            });
        self.observe(Hook::StreamChunk, instance, &result);
        result
    }

    /// Runs the error stage hook on `instance`: the rewritten error, or `None` when the hook
    /// handed `error` on unchanged.
    pub async fn on_error(
        &self,
        instance: &mut PluginInstance,
        ctx: &Arc<RequestContext>,
        error: &GatewayError,
    ) -> Result<Option<GatewayError>, HookFailure> {
        let result = bindings::with_error_wit(error, async |wit| {
            instance
                .call(Some(ctx), Hook::OnError, async |p, s| {
                    p.call_on_error(s, wit.clone()).await
                })
                .await
        })
        .await
        .and_then(|e| {
            e.map(bindings::error_from_wit)
                .transpose()
                .map_err(|why| instance.invalid(Hook::OnError, why))
        });
        self.observe(Hook::OnError, instance, &result);
        result
    }

    fn observe<T>(&self, hook: Hook, instance: &PluginInstance, result: &Result<T, HookFailure>) {
        self.stats.record(
            hook,
            instance.last_elapsed,
            instance.last_fuel,
            result.as_ref().err().map(|f| f.kind),
        );
        self.note_outcome(hook, result.is_err());
    }

    /// Feeds the quarantine with a call's outcome and logs when a quarantine starts.
    fn note_outcome(&self, hook: Hook, failed: bool) {
        if let Some(backoff) = self.quarantine.record(hook.index(), failed) {
            tracing::warn!(
                plugin = &*self.name,
                backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "plugin quarantined after repeated failures; its hooks are skipped until the \
                 backoff ends, then retried"
            );
        }
    }

    /// Refuses a `hook` call while the plugin is quarantined (without calling it).
    pub fn admit(&self, hook: Hook) -> Result<(), HookFailure> {
        self.quarantine.admit().map_err(|why| HookFailure {
            plugin: self.name.to_string(),
            hook,
            kind: FailureKind::Quarantined,
            detail: format!("the plugin {why}"),
        })
    }

    /// The quarantine state.
    pub fn quarantine(&self) -> QuarantineStatus {
        self.quarantine.status()
    }
}

/// Checks out one instance of each of `plugins` (one request's chain), all or none. Idle
/// instances are taken without waiting; when one is missing, the ones taken are given back and
/// the request queues, one at a time across the runtime, to create what it lacks. So requests
/// never hold some instances while waiting for others held by requests doing the same, which
/// could stall them all once the runtime's instance budget is spent.
pub async fn checkout_all(
    plugins: &[&Arc<LoadedPlugin>],
) -> Result<Vec<PluginInstance>, HookFailure> {
    let mut taken = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        match plugin.take_idle() {
            Some(instance) => taken.push(instance),
            None => break,
        }
    }
    if taken.len() == plugins.len() {
        return Ok(taken);
    }
    for (plugin, instance) in plugins.iter().zip(taken.drain(..)) {
        plugin.put_back_unused(instance);
    }
    let Some(first) = plugins.first() else {
        return Ok(taken);
    };
    let _one_at_a_time = first.runtime.capacity().gate().await;
    for plugin in plugins {
        match plugin.checkout().await {
            Ok(instance) => taken.push(instance),
            Err(failure) => {
                for (plugin, instance) in plugins.iter().zip(taken.drain(..)) {
                    plugin.put_back_unused(instance);
                }
                return Err(failure);
            }
        }
    }
    Ok(taken)
}

/// A component linked against the plugin world, and where its exports are: what instances
/// are created from. (The generated `PluginPre` holds the same, but does not hand out the
/// instance a snapshot is read from, and type-checks every export again on each instance.)
pub(super) struct Prepared {
    pre: InstancePre<HostState>,
    indices: ExportIndices,
}

impl Prepared {
    /// Finds the world's exports in a linked component; fails when one is missing or mistyped.
    pub(super) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        let indices = ExportIndices::new(&pre)?;
        Ok(Self { pre, indices })
    }
}

/// Gives back a checkout's busy count when dropped, unless defused (its `Option` emptied).
struct BusyGuard<'a>(Option<&'a LoadedPlugin>);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Some(plugin) = self.0.take() {
            plugin.release();
        }
    }
}

/// One live instance of a plugin, checked out for one request at a time.
pub struct PluginInstance {
    store: Store<HostState>,
    instance: Instance,
    exports: Exports,
    limits: Limits,
    poisoned: bool,
    last_elapsed: Duration,
    last_fuel: u64,
    /// Ticks while this instance runs wasm (deadlines need the epoch to move).
    ticker: Ticker,
    /// Its place in the runtime's instance budget; declared last so it is given back only
    /// after the store (and its pool slot) is gone.
    _permit: Permit,
}

impl PluginInstance {
    async fn instantiate(
        runtime: &Runtime,
        name: &Arc<str>,
        pre: &Prepared,
        limits: Limits,
        grants: &Grants,
        permit: Permit,
    ) -> Result<Self, HookFailure> {
        let state = HostState::new(
            name.clone(),
            runtime.kv().clone(),
            limits.memory_bytes,
            grants,
        )
        .map_err(|e| HookFailure {
            plugin: name.to_string(),
            hook: Hook::Init,
            kind: FailureKind::Instantiate,
            detail: format!("could not create an instance: {e:#}"),
        })?;
        let mut store = Store::new(pre.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if Instant::now() >= state.deadline {
                state.deadline_hit = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        prepare(&mut store, limits, None);
        let ticking = runtime.ticker().ticking();
        let instantiated = pre.pre.instantiate_async(&mut store).await.map(|instance| {
            let exports = pre.indices.load(&mut store, &instance);
            (instance, exports)
        });
        drop(ticking);
        let (instance, exports) = instantiated.map_err(|e| {
            let kind = classify(&store, &e);
            HookFailure {
                plugin: name.to_string(),
                hook: Hook::Init,
                kind: if kind == FailureKind::Trap {
                    FailureKind::Instantiate
                } else {
                    kind
                },
                detail: format!(
                    "could not create an instance: {}",
                    describe(kind, &e, limits, &store)
                ),
            }
        })?;
        Ok(Self {
            store,
            instance,
            exports,
            limits,
            poisoned: false,
            last_elapsed: Duration::ZERO,
            last_fuel: 0,
            ticker: runtime.ticker().clone(),
            _permit: permit,
        })
    }

    /// Creates an instance while a plugin loads, waiting up to one call's timeout for a place
    /// in the runtime's instance budget.
    async fn instantiate_for_load(
        runtime: &Arc<Runtime>,
        name: &Arc<str>,
        pre: &Prepared,
        limits: Limits,
        grants: &Grants,
    ) -> anyhow::Result<Self> {
        let permit = runtime
            .capacity()
            .acquire(Instant::now() + limits.timeout())
            .await
            .ok_or_else(|| anyhow::anyhow!("{}", capacity_detail(runtime)))?;
        Self::instantiate(runtime, name, pre, limits, grants, permit)
            .await
            .map_err(|f| anyhow::anyhow!("{}", f.detail))
    }

    /// Calls `get-name`.
    async fn get_name(&mut self) -> Result<String, HookFailure> {
        self.call(None, Hook::Init, async |p, s| {
            p.call_get_name(s).await.map(Ok)
        })
        .await
    }

    /// Whether a trap or limit broke this instance (it is then never reused).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    async fn init(&mut self, config: &str) -> Result<(), HookFailure> {
        self.call(None, Hook::Init, async |p, s| p.call_init(s, config).await)
            .await
    }

    /// Snapshots this instance (of an instrumented component, after `init`) into a component
    /// whose instances start in its state, compiled and linked, and checks the snapshot by
    /// creating one instance from it and asking its name. Returns the snapshot and that
    /// instance.
    async fn preinitialize(
        &mut self,
        runtime: &Arc<Runtime>,
        name: &Arc<str>,
        source: &[u8],
        grants: &Grants,
        reported_name: &str,
    ) -> anyhow::Result<(Prepared, PluginInstance)> {
        let ticking = self.ticker.ticking();
        let taken =
            super::snapshot::take(source, &mut self.store, self.instance, self.limits).await;
        drop(ticking);
        let taken = taken?;
        let (bytes, started) = (taken.len(), Instant::now());
        let snapshot = runtime
            .compile_snapshot(taken, self.limits.stack_bytes)
            .await?;
        tracing::info!(
            plugin = &**name,
            bytes,
            compile_ms = started.elapsed().as_millis() as u64,
            "per-request instances start from a snapshot taken after init"
        );
        let mut probe =
            PluginInstance::instantiate_for_load(runtime, name, &snapshot, self.limits, grants)
                .await
                .context("an instance of the snapshot")?;
        let answer = probe
            .get_name()
            .await
            .map_err(|f| anyhow::anyhow!("an instance of the snapshot: {}", f.detail))?;
        if answer != reported_name {
            anyhow::bail!(
                "an instance of the snapshot calls itself {answer:?}, not {reported_name:?}"
            );
        }
        Ok((snapshot, probe))
    }

    fn invalid(&self, hook: Hook, why: String) -> HookFailure {
        HookFailure {
            plugin: self.store.data().plugin.to_string(),
            hook,
            kind: FailureKind::InvalidOutput,
            detail: format!("the hook {why}"),
        }
    }

    /// Runs one export under the instance's limits with `ctx` as the current request, and
    /// turns traps, exceeded limits and guest errors into a classified [`HookFailure`].
    async fn call<T: OutputSize>(
        &mut self,
        ctx: Option<&Arc<RequestContext>>,
        hook: Hook,
        f: impl AsyncFnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, HookFailure> {
        let started = Instant::now();
        prepare(&mut self.store, self.limits, ctx.cloned());
        // Poisoned while the call runs: if its future is dropped half-way (the client went
        // away), the instance is in an unknown state and must never be reused.
        self.poisoned = true;
        let ticking = self.ticker.ticking();
        let result = f(&self.exports, &mut self.store).await;
        drop(ticking);
        self.poisoned = false;
        self.last_elapsed = started.elapsed();
        // Without fuel metering (`runtime.fuel` off) there is no fuel to read: none was used.
        self.last_fuel = self
            .store
            .get_fuel()
            .map_or(0, |left| self.limits.fuel.saturating_sub(left));
        let state = self.store.data_mut();
        state.request = None;
        state.lent = Lent::Nothing;
        let plugin = || self.store.data().plugin.to_string();
        let returned = match &result {
            Ok(Ok(value)) => value.output_bytes(),
            Ok(Err(message)) => message.len(),
            Err(_) => 0,
        };
        if returned > self.limits.output_bytes {
            // The instance now holds that much memory: do not keep it.
            self.poisoned = true;
            return Err(HookFailure {
                plugin: plugin(),
                hook,
                kind: FailureKind::OutputTooLarge,
                detail: format!(
                    "returned {returned} bytes of output, over its limit of {} bytes; the \
                     output was dropped unread. Raise the plugin's `limits.output_kb` or \
                     return less",
                    self.limits.output_bytes
                ),
            });
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(HookFailure {
                plugin: plugin(),
                hook,
                kind: FailureKind::GuestError,
                detail: format!("the plugin returned an error: {message}"),
            }),
            Err(err) => {
                self.poisoned = true;
                let kind = classify(&self.store, &err);
                Err(HookFailure {
                    plugin: plugin(),
                    hook,
                    kind,
                    detail: describe(kind, &err, self.limits, &self.store),
                })
            }
        }
    }
}

/// What a request is told when no instance could be had in time.
fn capacity_detail(runtime: &Runtime) -> String {
    format!(
        "no instance could be created in time: all {} plugin instances the runtime allows are \
         in use by other requests (runtime.max_instances). Retry later, or raise \
         runtime.max_instances",
        runtime.capacity().total()
    )
}

/// Arms a store for one call: fresh fuel, a fresh deadline, cleared limit flags.
pub(super) fn prepare(
    store: &mut Store<HostState>,
    limits: Limits,
    ctx: Option<Arc<RequestContext>>,
) {
    let state = store.data_mut();
    state.request = ctx;
    state.deadline = Instant::now() + limits.timeout();
    state.deadline_hit = false;
    state.deadline_import = None;
    state.limiter.hit = false;
    state.forget_output();
    // Fails only when the engine meters no fuel (`runtime.fuel` off): nothing to set then.
    let _ = store.set_fuel(limits.fuel);
    store.set_epoch_deadline(1);
}

fn classify(store: &Store<HostState>, err: &wasmtime::Error) -> FailureKind {
    let state = store.data();
    if state.deadline_hit {
        return FailureKind::Deadline;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FailureKind::OutOfFuel,
        Some(Trap::StackOverflow) => FailureKind::StackOverflow,
        _ if state.limiter.hit => FailureKind::MemoryLimit,
        _ => FailureKind::Trap,
    }
}

fn describe(
    kind: FailureKind,
    err: &wasmtime::Error,
    limits: Limits,
    store: &Store<HostState>,
) -> String {
    let mut text = match kind {
        FailureKind::OutOfFuel => format!(
            "ran out of fuel (limit {} units per call); the call was stopped. Raise the \
             plugin's `limits.fuel` or make the hook do less work",
            limits.fuel
        ),
        FailureKind::Deadline => {
            let during = store
                .data()
                .deadline_import
                .map(|import| format!(" while waiting in the host import `{import}`"))
                .unwrap_or_default();
            format!(
                "exceeded its {} ms deadline{during}; the call was stopped. Raise the plugin's \
                 `limits.timeout_ms` or make the hook faster",
                limits.timeout_ms
            )
        }
        FailureKind::MemoryLimit => format!(
            "tried to grow its memory past the {} MiB cap and trapped. Raise the plugin's \
             `limits.memory_mb` or use less memory",
            limits.memory_bytes >> 20
        ),
        FailureKind::StackOverflow => {
            "overflowed the wasm stack (deep or unbounded recursion) and was stopped".to_string()
        }
        _ => match err.downcast_ref::<Trap>() {
            Some(Trap::MemoryOutOfBounds) => format!(
                "trapped: {}. In a Rust guest this usually means its shadow stack in linear \
                 memory overflowed (deep or unbounded recursion)",
                Trap::MemoryOutOfBounds
            ),
            Some(Trap::UnreachableCodeReached) => format!(
                "trapped: {} (a panic or abort in the plugin)",
                Trap::UnreachableCodeReached
            ),
            Some(trap) => format!("trapped: {trap}"),
            None => format!(
                "failed: {}",
                err.chain()
                    .last()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        },
    };
    if let Some(output) = store.data().stderr.tail() {
        text.push_str("; its stderr said: ");
        text.push_str(&output);
    }
    text
}
