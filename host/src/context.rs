//! Per-request context: the values every hook and plugin of one request shares (Bifrost's ctx).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hooks::Headers;

/// Most values one request may hold, and the longest key and value, so a plugin cannot grow a
/// request's context without bound.
const MAX_VALUES: usize = 1024;
/// Prefix of the keys only the gateway writes.
pub const GATEWAY_PREFIX: &str = "gateway.";
/// The key under which a plugin reads its own name in the gateway's config (answered by the
/// runtime for the calling plugin, not stored in the context): two entries of one component in
/// a chain have different names, so per-plugin keys built from it do not collide.
pub const PLUGIN_KEY: &str = "gateway.plugin";
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// What one request's hooks share: its id, its headers and a string map.
#[derive(Debug)]
pub struct RequestContext {
    id: String,
    headers: Mutex<Headers>,
    values: Mutex<Values>,
}

/// The string map: the plugins' values, and the gateway's in fixed slots (set on every
/// request, so they are not hashed and keyed anew each time).
#[derive(Debug, Default)]
struct Values {
    plugins: HashMap<String, String>,
    gateway: [Option<String>; GatewayValue::ALL.len()],
}

/// The values only the gateway writes into every request's context, under [`GATEWAY_PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayValue {
    /// `gateway.pipeline`: the pipeline serving the request (`default` for the default one).
    Pipeline,
    /// `gateway.chain`: the chain's plugins, comma-separated.
    Chain,
    /// `gateway.started_ms`: when the request started, in ms since the Unix epoch.
    StartedMs,
    /// `gateway.target`: the `provider/model` sent upstream in this attempt.
    Target,
    /// `gateway.attempt`: 0 for the first target, then one per fallback.
    Attempt,
    /// `gateway.short_circuit`: the plugin whose pre-hook answered or failed the request.
    ShortCircuit,
    /// `gateway.stream`: `true` when the client asked for a stream.
    Stream,
}

impl GatewayValue {
    /// Every value, in the order of the enum.
    pub const ALL: [GatewayValue; 7] = [
        GatewayValue::Pipeline,
        GatewayValue::Chain,
        GatewayValue::StartedMs,
        GatewayValue::Target,
        GatewayValue::Attempt,
        GatewayValue::ShortCircuit,
        GatewayValue::Stream,
    ];

    /// Its key in the context, e.g. `gateway.target`.
    pub const fn key(self) -> &'static str {
        match self {
            GatewayValue::Pipeline => "gateway.pipeline",
            GatewayValue::Chain => "gateway.chain",
            GatewayValue::StartedMs => "gateway.started_ms",
            GatewayValue::Target => "gateway.target",
            GatewayValue::Attempt => "gateway.attempt",
            GatewayValue::ShortCircuit => "gateway.short_circuit",
            GatewayValue::Stream => "gateway.stream",
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// `req-<boot>-<n>`, both in lower-case hex of at least 8 digits (what `format!("req-{boot:08x}-
/// {n:08x}")` writes, without its padding machinery: this runs on every request).
fn request_id(boot: u32, n: u64) -> String {
    fn hex(out: &mut String, value: u64) {
        let digits = (16 - value.leading_zeros() as usize / 4).max(8);
        for shift in (0..digits).rev() {
            let nibble = (value >> (shift * 4)) & 0xf;
            out.push(char::from(b"0123456789abcdef"[nibble as usize]));
        }
    }
    let mut id = String::with_capacity(4 + 8 + 1 + 16);
    id.push_str("req-");
    hex(&mut id, u64::from(boot));
    id.push('-');
    hex(&mut id, n);
    id
}

impl RequestContext {
    /// A context for a new request with the given headers (names lower-case).
    pub fn new(headers: Headers) -> Self {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let boot = *BOOT_TAG;
        Self {
            id: request_id(boot, n),
            headers: Mutex::new(headers),
            values: Mutex::new(Values::default()),
        }
    }

    /// The request id, unique within this process and unlikely to repeat across restarts.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// A copy of the headers.
    pub fn headers(&self) -> Headers {
        self.headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the headers (after a transport interceptor rewrote them).
    pub fn set_headers(&self, headers: Headers) {
        *self.headers.lock().unwrap_or_else(|p| p.into_inner()) = headers;
    }

    /// A value stored by a hook of this request, or one of the gateway's (`gateway.*`).
    pub fn get(&self, key: &str) -> Option<String> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if key.starts_with(GATEWAY_PREFIX) {
            let name = GatewayValue::ALL.into_iter().find(|v| v.key() == key)?;
            return values.gateway[name as usize].clone();
        }
        values.plugins.get(key).cloned()
    }

    /// Stores a value. Returns an error message when a size limit refuses it.
    pub fn set(&self, key: String, value: String) -> Result<(), String> {
        if key.starts_with(GATEWAY_PREFIX) {
            return Err(format!(
                "context key {key:?} is the gateway's (keys starting with `{GATEWAY_PREFIX}` are \
                 read-only for plugins)"
            ));
        }
        self.insert(key, value)
    }

    /// Sets one of the gateway's own values (`gateway.*`), which plugins can read but not
    /// write.
    pub fn set_gateway(&self, name: GatewayValue, value: impl Into<String>) {
        let value = value.into();
        // The value cap still applies (a chain of many plugins could exceed it).
        if value.len() <= MAX_VALUE_BYTES {
            self.values
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gateway[name as usize] = Some(value);
        }
    }

    /// Removes one of the gateway's own values (a fallback attempt starts afresh).
    pub fn unset_gateway(&self, name: GatewayValue) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gateway[name as usize] = None;
    }

    fn insert(&self, key: String, value: String) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "context key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
                key.len()
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "context value for {key:?} of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            ));
        }
        let values = &mut self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plugins;
        if values.len() >= MAX_VALUES && !values.contains_key(&key) {
            return Err(format!("request context already holds {MAX_VALUES} values"));
        }
        values.insert(key, value);
        Ok(())
    }
}

/// A per-process tag mixed into request ids.
static BOOT_TAG: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_what_the_padded_format_writes() {
        for (boot, n) in [
            (0, 0),
            (0xab, 1),
            (u32::MAX, 0xffff_ffff),
            (7, 0x1_0000_0000),
            (1, u64::MAX),
        ] {
            assert_eq!(request_id(boot, n), format!("req-{boot:08x}-{n:08x}"));
        }
    }

    #[test]
    fn headers_are_case_insensitive_and_values_bounded() {
        let ctx = RequestContext::new(vec![("x-api-key".into(), "k".into())]);
        assert_eq!(ctx.header("X-Api-Key").as_deref(), Some("k"));
        assert!(ctx.set("a".into(), "1".into()).is_ok());
        assert_eq!(ctx.get("a").as_deref(), Some("1"));
        assert!(
            ctx.set("b".into(), "x".repeat(MAX_VALUE_BYTES + 1))
                .is_err()
        );
        assert_ne!(ctx.id(), RequestContext::new(vec![]).id());
    }

    #[test]
    fn every_gateway_value_has_its_own_key_under_the_gateway_prefix() {
        let keys: std::collections::HashSet<_> =
            GatewayValue::ALL.iter().map(|v| v.key()).collect();
        assert_eq!(keys.len(), GatewayValue::ALL.len(), "{keys:?}");
        for key in keys {
            assert!(key.starts_with(GATEWAY_PREFIX), "{key}");
            assert!(key.len() > GATEWAY_PREFIX.len(), "{key}");
        }
    }

    #[test]
    fn gateway_keys_are_read_only_for_plugins() {
        let ctx = RequestContext::new(vec![]);
        ctx.set_gateway(GatewayValue::Target, "mock/echo");
        assert_eq!(ctx.get("gateway.target").as_deref(), Some("mock/echo"));
        ctx.unset_gateway(GatewayValue::Target);
        assert_eq!(ctx.get("gateway.target"), None);
        assert_eq!(ctx.get("gateway.nonsense"), None);
        ctx.set_gateway(GatewayValue::Chain, "x".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(ctx.get("gateway.chain"), None, "the value cap applies");
        ctx.set_gateway(GatewayValue::Target, "mock/echo");
        let refused = ctx
            .set("gateway.target".into(), "evil/model".into())
            .expect_err("reserved");
        assert!(refused.contains("read-only"), "{refused}");
        assert_eq!(ctx.get("gateway.target").as_deref(), Some("mock/echo"));
    }
}
