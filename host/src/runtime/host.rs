//! What the gateway lends a plugin: the per-instance store state and the host imports
//! (logging, clock, digests, request context, key-value store), plus a locked-down WASI. The lent request
//! and outcome are read in `exchange`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{clock, context, digest, kv, logging, types};
use super::exchange::{Annotations, Lent};
use super::grants::Grants;
use super::limits::MemoryLimiter;
use super::output::GuestOutput;
use crate::context::{PLUGIN_KEY, RequestContext};
use crate::kv::KvStore;

/// Longest log line a plugin may write; longer lines are cut.
const MAX_LOG_BYTES: usize = 4096;

/// The state of one plugin instance's store.
pub(crate) struct HostState {
    /// The plugin's WASI, built on the guest's first WASI call when nothing is granted: most
    /// hook calls make none, and building one is ~3 k instructions per instance.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// The plugin's name: log tag and key-value namespace.
    pub(crate) plugin: Arc<str>,
    kv: Arc<KvStore>,
    /// The request being served, during a hook call.
    pub(crate) request: Option<Arc<RequestContext>>,
    /// What the current hook call was lent (its `exchange` handle).
    pub(crate) lent: Lent,
    /// The response fields the current post-hook call set through its lent outcome.
    pub(crate) annotations: Annotations,
    pub(crate) limiter: MemoryLimiter,
    /// When the current call must end.
    pub(crate) deadline: Instant,
    /// Set when the call was stopped for running past `deadline` (by the epoch callback, or
    /// by a host import that was waiting when it passed).
    pub(crate) deadline_hit: bool,
    /// The host import the call was in when its deadline passed, if it was in one.
    pub(crate) deadline_import: Option<&'static str>,
    /// The guest's stdout and stderr, logged and kept for failure messages.
    pub(crate) stdout: GuestOutput,
    pub(crate) stderr: GuestOutput,
}

impl HostState {
    /// The state of a new instance of `plugin`: a WASI with nothing but what `grants` lends.
    pub(crate) fn new(
        plugin: Arc<str>,
        kv: Arc<KvStore>,
        memory_bytes: u64,
        grants: &Grants,
    ) -> anyhow::Result<Self> {
        let stdout = GuestOutput::new(plugin.clone(), "stdout");
        let stderr = GuestOutput::new(plugin.clone(), "stderr");
        // Granted directories are opened now, so an instance that cannot have them is never
        // created; with nothing granted there is nothing that can fail later.
        let wasi = if grants.is_empty() {
            None
        } else {
            let mut wasi = sandboxed_wasi(&stdout, &stderr);
            grants.apply(&mut wasi)?;
            Some(wasi.build())
        };
        Ok(Self {
            wasi,
            table: ResourceTable::new(),
            plugin,
            kv,
            request: None,
            lent: Lent::Nothing,
            annotations: Annotations::default(),
            limiter: MemoryLimiter::new(memory_bytes),
            deadline: Instant::now(),
            deadline_hit: false,
            deadline_import: None,
            stdout,
            stderr,
        })
    }

    /// Whether the guest holds no host resource (stream, directory, lent value): what makes
    /// a copy of its memory a complete copy of the instance.
    pub(crate) fn holds_no_resources(&self) -> bool {
        self.table.is_empty()
    }

    /// Forgets the previous call's output and restores its log budget. Output reaches the
    /// gateway only through the WASI context, so an instance that never needed one (most make
    /// no WASI call) has nothing to forget, and its buffers are not touched.
    pub(crate) fn forget_output(&self) {
        if self.wasi.is_some() {
            self.stdout.reset();
            self.stderr.reset();
        }
    }

    fn request_id(&self) -> &str {
        self.request.as_deref().map_or("-", RequestContext::id)
    }
}

/// The WASI every plugin gets: no preopened directories, no environment, no arguments, stdin
/// closed, stdout and stderr captured into the host log, and no network (TCP, UDP and name
/// lookup off). Grants add environment variables and read-only directories.
fn sandboxed_wasi(stdout: &GuestOutput, stderr: &GuestOutput) -> WasiCtxBuilder {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    wasi
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let ctx = self
            .wasi
            .get_or_insert_with(|| sandboxed_wasi(stdout, stderr).build());
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" [truncated]");
    }
    s
}

/// How a host import ended its call: the guest is stopped as by the deadline.
fn deadline_trap(import: &str) -> wasmtime::Error {
    wasmtime::format_err!(
        "the call's deadline passed while the plugin was in the host import `{import}`"
    )
}

impl HostState {
    /// Stops the call when its deadline has already passed, before an import does any work.
    pub(super) fn enter(&mut self, import: &'static str) -> wasmtime::Result<()> {
        if Instant::now() >= self.deadline {
            return Err(self.hit_deadline(import));
        }
        Ok(())
    }

    /// Runs an import's work, giving it up when the call's deadline passes first: fuel and
    /// epochs cannot interrupt a guest that waits on the host, so imports bound themselves.
    async fn within_deadline<T>(
        &mut self,
        import: &'static str,
        work: impl Future<Output = T>,
    ) -> wasmtime::Result<T> {
        self.enter(import)?;
        match tokio::time::timeout_at(self.deadline.into(), work).await {
            Ok(value) => Ok(value),
            Err(_) => Err(self.hit_deadline(import)),
        }
    }

    fn hit_deadline(&mut self, import: &'static str) -> wasmtime::Error {
        self.deadline_hit = true;
        self.deadline_import = Some(import);
        deadline_trap(import)
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        self.enter("logging.log")?;
        let message = truncate(message, MAX_LOG_BYTES);
        let plugin = &*self.plugin;
        let request_id = self.request_id();
        match level {
            logging::Level::Trace => {
                tracing::trace!(target: "plugin", plugin, request_id, "{message}")
            }
            logging::Level::Debug => {
                tracing::debug!(target: "plugin", plugin, request_id, "{message}")
            }
            logging::Level::Info => {
                tracing::info!(target: "plugin", plugin, request_id, "{message}")
            }
            logging::Level::Warn => {
                tracing::warn!(target: "plugin", plugin, request_id, "{message}")
            }
            logging::Level::Error => {
                tracing::error!(target: "plugin", plugin, request_id, "{message}")
            }
        }
        Ok(())
    }
}

impl digest::Host for HostState {
    fn sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.enter("digest.sha256")?;
        Ok(Sha256::digest(&data).to_vec())
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        self.enter("clock.now-ms")?;
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0))
    }
}

impl context::Host for HostState {
    fn request_id(&mut self) -> wasmtime::Result<String> {
        self.enter("context.request-id")?;
        Ok(self
            .request
            .as_deref()
            .map(|r| r.id().to_string())
            .unwrap_or_default())
    }

    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.enter("context.header")?;
        Ok(self.request.as_deref().and_then(|r| r.header(&name)))
    }

    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.enter("context.get")?;
        if key == PLUGIN_KEY {
            return Ok(Some(self.plugin.to_string()));
        }
        Ok(self.request.as_deref().and_then(|r| r.get(&key)))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.enter("context.set")?;
        if let Some(request) = self.request.as_deref()
            && let Err(why) = request.set(key, value)
        {
            tracing::warn!(
                plugin = &*self.plugin,
                request_id = request.id(),
                "context write dropped: {why}"
            );
        }
        Ok(())
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let (kv, plugin) = (self.kv.clone(), self.plugin.clone());
        self.within_deadline("kv.get", async move { kv.get(&plugin, &key).await })
            .await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<()> {
        let (kv, plugin) = (self.kv.clone(), self.plugin.clone());
        let key_ = key.clone();
        let stored = self
            .within_deadline("kv.set", async move {
                kv.set(&plugin, &key_, value, ttl(ttl_ms)).await
            })
            .await?;
        if let Err(why) = stored {
            tracing::warn!(
                plugin = &*self.plugin,
                request_id = self.request_id(),
                key,
                "kv write dropped: {why}"
            );
        }
        Ok(())
    }

    async fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<i64> {
        let (kv, plugin) = (self.kv.clone(), self.plugin.clone());
        let key_ = key.clone();
        let result = self
            .within_deadline("kv.incr", async move {
                kv.incr(&plugin, &key_, delta, ttl(ttl_ms)).await
            })
            .await?;
        result.map_err(|why| wasmtime::format_err!("kv incr of {key:?} failed: {why}"))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        let (kv, plugin) = (self.kv.clone(), self.plugin.clone());
        self.within_deadline("kv.delete", async move { kv.delete(&plugin, &key).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(kv: Arc<KvStore>) -> HostState {
        HostState::new(Arc::from("slow-kv"), kv, 1 << 20, &Grants::default()).expect("no grants")
    }

    /// A guest blocked in a host import is not reachable by fuel or epochs: the import itself
    /// must give up at the call's deadline and report it as the deadline.
    #[tokio::test]
    async fn an_import_waiting_past_the_deadline_stops_the_call() {
        let kv = Arc::new(KvStore::new(1 << 20, 1 << 10));
        let mut state = state(kv.clone());
        state.deadline = Instant::now() + Duration::from_millis(20);
        let held = kv.hold().await;
        let err = kv::Host::get(&mut state, "k".into())
            .await
            .expect_err("the store is locked until after the deadline");
        drop(held);
        assert!(state.deadline_hit, "reported as the deadline");
        assert_eq!(state.deadline_import, Some("kv.get"));
        assert!(err.to_string().contains("host import `kv.get`"), "{err}");
    }

    #[tokio::test]
    async fn imports_refuse_to_start_after_the_deadline() {
        let mut state = state(Arc::new(KvStore::new(1 << 20, 1 << 10)));
        state.deadline = Instant::now();
        assert!(context::Host::header(&mut state, "x".into()).is_err());
        assert_eq!(state.deadline_import, Some("context.header"));
        state.deadline = Instant::now() + Duration::from_secs(60);
        state.deadline_hit = false;
        kv::Host::set(&mut state, "k".into(), b"v".to_vec(), None)
            .await
            .expect("in time");
        assert_eq!(
            kv::Host::get(&mut state, "k".into())
                .await
                .expect("in time"),
            Some(b"v".to_vec())
        );
        assert!(!state.deadline_hit);
    }
}
