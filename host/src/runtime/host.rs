//! What the gateway lends a plugin: the per-instance store state and the host imports
//! (logging, clock, request context, key-value store), plus a locked-down WASI.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{clock, context, kv, logging, types};
use super::limits::MemoryLimiter;
use super::output::GuestOutput;
use crate::context::RequestContext;
use crate::kv::KvStore;

/// Longest log line a plugin may write; longer lines are cut.
const MAX_LOG_BYTES: usize = 4096;

/// The state of one plugin instance's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The plugin's name: log tag and key-value namespace.
    pub(crate) plugin: Arc<str>,
    kv: Arc<KvStore>,
    /// The request being served, during a hook call.
    pub(crate) request: Option<Arc<RequestContext>>,
    pub(crate) limiter: MemoryLimiter,
    /// When the current call must end.
    pub(crate) deadline: Instant,
    /// Set when the epoch callback stopped the call for running past `deadline`.
    pub(crate) deadline_hit: bool,
    /// The guest's stdout and stderr, logged and kept for failure messages.
    pub(crate) stdout: GuestOutput,
    pub(crate) stderr: GuestOutput,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, kv: Arc<KvStore>, memory_bytes: u64) -> Self {
        // No preopened directories, no environment, no arguments, stdin closed, stdout and
        // stderr captured into the host log, and no network: TCP, UDP and name lookup are off.
        let stdout = GuestOutput::new(plugin.clone(), "stdout");
        let stderr = GuestOutput::new(plugin.clone(), "stderr");
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            plugin,
            kv,
            request: None,
            limiter: MemoryLimiter::new(memory_bytes),
            deadline: Instant::now(),
            deadline_hit: false,
            stdout,
            stderr,
        }
    }

    fn request_id(&self) -> &str {
        self.request.as_deref().map_or("-", RequestContext::id)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
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

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
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

impl clock::Host for HostState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0))
    }
}

impl context::Host for HostState {
    fn request_id(&mut self) -> wasmtime::Result<String> {
        Ok(self
            .request
            .as_deref()
            .map(|r| r.id().to_string())
            .unwrap_or_default())
    }

    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.request.as_deref().and_then(|r| r.header(&name)))
    }

    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.request.as_deref().and_then(|r| r.get(&key)))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
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
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv.get(&self.plugin, &key))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> wasmtime::Result<()> {
        if let Err(why) = self.kv.set(&self.plugin, &key, value, ttl(ttl_ms)) {
            tracing::warn!(
                plugin = &*self.plugin,
                request_id = self.request_id(),
                key,
                "kv write dropped: {why}"
            );
        }
        Ok(())
    }

    fn incr(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> wasmtime::Result<i64> {
        match self.kv.incr(&self.plugin, &key, delta, ttl(ttl_ms)) {
            Ok(n) => Ok(n),
            Err(why) => Err(wasmtime::format_err!("kv incr of {key:?} failed: {why}")),
        }
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.kv.delete(&self.plugin, &key);
        Ok(())
    }
}
