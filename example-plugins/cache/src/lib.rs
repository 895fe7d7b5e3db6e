//! `cache`: an exact-match response cache with a time-to-live, kept in the plugin's kv store.
//!
//! The pre-hook hashes what determines the answer (provider, model, messages, temperature,
//! top_p, max_tokens and every other body field in `extra`) into a SHA-256 key. On a hit it
//! answers with the stored response without calling the provider; on a miss it lets the request
//! go on and its post-hook stores the response that comes back. Errors are never cached.
//! Streamed requests (`stream: true`) share the cache with plain ones: a hit is streamed to the
//! client by the gateway, and on a miss the post-hook stores the response the gateway assembled
//! from the stream. Every plain response that passes through is marked in its body with
//! `"x_wasmgate_cache": "hit"` or `"miss"`, and the context value `cache.status` says the same to
//! later plugins (for streams too).
//!
//! Config (all optional, unknown fields rejected):
//!
//! | field             | type    | default  | meaning                                        |
//! |-------------------|---------|----------|------------------------------------------------|
//! | `ttl_seconds`     | integer | `300`    | how long an entry lives, 1..=86400             |
//! | `max_entry_bytes` | integer | `262144` | larger responses (as JSON) are not stored, ≥ 1 |
//!
//! ```json
//! { "ttl_seconds": 300, "max_entry_bytes": 262144 }
//! ```

use std::time::Duration;

use serde::Deserialize;
use wasmgate_sdk::serde_json::{self, Value};
use wasmgate_sdk::{
    ChatRequest, ChatResponse, Ctx, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result,
    config_error, debug, kv, warn,
};

/// Field added to the `extra` of every response that passes through: `"hit"` or `"miss"`.
pub const MARKER: &str = "x_wasmgate_cache";

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long an entry lives, in seconds (1..=86400).
    pub ttl_seconds: u64,
    /// Responses whose JSON is larger than this are not stored (≥ 1).
    pub max_entry_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl_seconds: 300,
            max_entry_bytes: 256 * 1024,
        }
    }
}

impl Config {
    /// Parses and validates the JSON config.
    pub fn parse(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        if !(1..=86_400).contains(&config.ttl_seconds) {
            let got = config.ttl_seconds;
            return Err(config_error(
                "ttl_seconds",
                format!("must be 1..=86400, got {got}"),
            ));
        }
        if config.max_entry_bytes == 0 {
            return Err(config_error("max_entry_bytes", "must be at least 1"));
        }
        Ok(config)
    }
}

/// The cache. A request that missed leaves its key for its post-hook in its context
/// ([`PENDING`]), so any instance can serve either hook (the plugin may run
/// `"isolation": "shared"`).
#[derive(Debug)]
pub struct Cache {
    config: Config,
}

/// The request state (`<plugin name>.pending`) a pre-hook that missed leaves for its
/// post-hook: the key to store the response under. Cleared on a hit.
const PENDING: &str = "pending";

/// `extra` without the fields that only say how the answer is delivered.
fn without_delivery(mut extra: Value) -> Value {
    if let Some(obj) = extra.as_object_mut() {
        obj.remove("stream_options");
    }
    extra
}

/// The kv key for a request: `v2:` and the hex SHA-256 of every field that determines the
/// answer, each framed by its length (or a present/absent tag), so no two requests share an
/// input: provider, model, temperature, top_p, max_tokens, every message (role, text, extra
/// fields) and the other body fields. Texts go into the hash as they are; only the `extra`
/// objects are written as canonical JSON (keys sorted at every level), so the order in which a
/// client wrote its fields does not matter. `stream`, `stream_options` (how the answer is
/// delivered, not what it is), `user` and `fallbacks` do not take part.
pub fn cache_key(req: &ChatRequest) -> String {
    // Nothing is escaped or copied on the way: the texts, most of a request, are hashed as they
    // are (escaping them as JSON cost as much as hashing them, in wasm).
    let mut key = KeyHash(Vec::with_capacity(256));
    key.text("wasmgate-cache/v2");
    key.text(&req.provider);
    key.text(&req.model);
    key.number(req.temperature.map(f64::to_bits));
    key.number(req.top_p.map(f64::to_bits));
    key.number(req.max_tokens.map(u64::from));
    key.count(req.messages.len());
    for m in &req.messages {
        key.text(&m.role);
        key.opt_text(m.content.as_deref());
        key.opt_json(m.extra.as_deref().map(parse_extra).as_ref());
    }
    key.opt_json(Some(&without_delivery(parse_extra(&req.extra))));
    // Hashed by the gateway, natively: several times cheaper than SHA-256 in wasm.
    let digest = wasmgate_sdk::digest::sha256(&key.0);
    let mut text = String::with_capacity(3 + 64);
    text.push_str("v2:");
    for byte in digest {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

/// The input of a key's hash: its fields, each framed so that its end is unambiguous.
struct KeyHash(Vec<u8>);

impl KeyHash {
    /// A length, as 8 little-endian bytes.
    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }

    /// A text: its length, then its bytes.
    fn text(&mut self, text: &str) {
        self.count(text.len());
        self.0.extend_from_slice(text.as_bytes());
    }

    /// `0` when absent; `1` and the text when present.
    fn opt_text(&mut self, text: Option<&str>) {
        match text {
            None => self.0.push(0),
            Some(text) => {
                self.0.push(1);
                self.text(text);
            }
        }
    }

    /// `0` when absent; `1` and the 8 little-endian bytes when present.
    fn number(&mut self, n: Option<u64>) {
        match n {
            None => self.0.push(0),
            Some(n) => {
                self.0.push(1);
                self.0.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    /// `0` when absent; `1` and the value's canonical JSON text when present.
    fn opt_json(&mut self, value: Option<&Value>) {
        match value {
            None => self.0.push(0),
            Some(value) => {
                let mut doc = Canonical(Vec::new());
                doc.value(value);
                self.0.push(1);
                self.count(doc.0.len());
                self.0.extend_from_slice(&doc.0);
            }
        }
    }
}

/// Canonical JSON text: object keys sorted at every level.
struct Canonical(Vec<u8>);

impl Canonical {
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    /// A string, number, option or other value with no object inside, as serde_json writes it.
    fn json(&mut self, value: &impl serde::Serialize) {
        // Writing into a Vec cannot fail, and these types always serialize.
        let _ = serde_json::to_writer(&mut self.0, value);
    }

    /// Any JSON value, with the keys of its objects sorted.
    fn value(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                self.raw("{");
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        self.raw(",");
                    }
                    self.json(k);
                    self.raw(":");
                    self.value(v);
                }
                self.raw("}");
            }
            Value::Array(items) => {
                self.raw("[");
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        self.raw(",");
                    }
                    self.value(v);
                }
                self.raw("]");
            }
            scalar => self.json(scalar),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The JSON value of an `extra` text; text that is not JSON is kept as a string.
fn parse_extra(extra: &str) -> Value {
    serde_json::from_str(extra).unwrap_or_else(|_| Value::String(extra.to_owned()))
}

/// A lower bound of the size of the response's JSON: the sum of its texts' lengths (a text's
/// JSON form is never shorter than the text).
fn min_json_len(resp: &ChatResponse) -> usize {
    let choices: usize = resp
        .choices
        .iter()
        .map(|c| c.message.role.len() + c.message.content.as_ref().map_or(0, String::len))
        .sum();
    resp.id.len() + resp.provider.len() + resp.model.len() + resp.extra.len() + choices
}

/// Marks a response as a cache `hit` or `miss` in its body.
fn mark(resp: &mut ChatResponse, status: &str) -> Result<()> {
    resp.set_extra(MARKER, status)
}

#[wasmgate_sdk::plugin]
impl Plugin for Cache {
    /// What a later hook of a request needs is kept in the request's context
    /// (`Ctx::set_state`), never in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "cache".into()
    }

    fn init(config: &str) -> Result<Self> {
        Ok(Cache {
            config: Config::parse(config)?,
        })
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        // Nearly every field takes part in the key: one copy of the whole request is cheaper
        // than reading them one by one.
        let key = cache_key(&req.to_request());
        match kv::get_json::<ChatResponse>(&key) {
            Ok(Some(mut cached)) => {
                ctx.set("cache.status", "hit");
                // An earlier attempt's (a fallback's) miss must not store this answer.
                ctx.clear_state(PENDING);
                mark(&mut cached, "hit")?;
                return Ok(PreOutcome::Respond(cached));
            }
            Ok(None) => {}
            Err(e) => {
                warn!("dropping unreadable cache entry: {e}");
                kv::delete(&key);
            }
        }
        ctx.set("cache.status", "miss");
        ctx.set("cache.key", &key);
        ctx.set_state(PENDING, &key)?;
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        // A hit (our own answer, already marked): nothing to store.
        let Some(key) = ctx.state::<String>(PENDING)? else {
            return Ok(None);
        };
        // An error: nothing to store (errors are small: copying one to find out costs less than
        // asking first on every success).
        let PostOutcome::Response(resp) = outcome.to_outcome() else {
            return Ok(None);
        };
        let max = self.config.max_entry_bytes;
        let at_least = min_json_len(&resp);
        if at_least > max {
            // Certainly too large: not worth encoding to find out by how much.
            debug!(
                "not caching a response of at least {at_least} bytes (max_entry_bytes is {max})"
            );
        } else {
            let json =
                serde_json::to_vec(&resp).map_err(|e| format!("cannot encode response: {e}"))?;
            if json.len() <= max {
                kv::set(
                    &key,
                    &json,
                    Some(Duration::from_secs(self.config.ttl_seconds)),
                );
            } else {
                let len = json.len();
                debug!("not caching a {len}-byte response (max_entry_bytes is {max})");
            }
        }
        // Marked where it lies: the response is not copied back.
        outcome.set_extra(MARKER, "miss")?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::Message;

    fn request() -> ChatRequest {
        ChatRequest {
            provider: "mock".into(),
            model: "echo".into(),
            messages: vec![Message::system("be brief"), Message::user("hello")],
            temperature: Some(0.5),
            top_p: None,
            max_tokens: Some(64),
            stream: false,
            user: None,
            fallbacks: vec![],
            extra: r#"{"seed":1,"response_format":{"type":"text","x":1}}"#.into(),
        }
    }

    #[test]
    fn key_is_stable() {
        // Golden value (cross-checked with Python: hashlib.sha256 over the same framing, built
        // with struct.pack). If it changes, stored entries no longer match: bump `v2:`.
        assert_eq!(
            cache_key(&request()),
            "v2:abc577a00a56dcfb08e035aad36390164d78c22c0b592ded18cce177d8ae6dc7"
        );
    }

    #[test]
    fn key_ignores_field_order_stream_user_and_fallbacks() {
        let base = cache_key(&request());
        let mut r = request();
        r.extra = r#"{"response_format":{"x":1,"type":"text"},"seed":1,
                     "stream_options":{"include_usage":true}}"#
            .into();
        r.stream = true;
        r.user = Some("u".into());
        r.fallbacks = vec!["openai/gpt-4o".into()];
        assert_eq!(cache_key(&r), base);
    }

    #[test]
    fn key_changes_with_what_determines_the_answer() {
        let base = cache_key(&request());
        let edits: Vec<fn(&mut ChatRequest)> = vec![
            |r| r.provider = "openai".into(),
            |r| r.model = "other".into(),
            |r| r.messages[1].content = Some("hello!".into()),
            |r| r.messages[1].role = "assistant".into(),
            |r| r.messages[1].extra = Some(r#"{"name":"bob"}"#.into()),
            |r| r.messages.truncate(1),
            |r| r.temperature = Some(0.7),
            |r| r.top_p = Some(0.9),
            |r| r.max_tokens = None,
            |r| r.extra = r#"{"seed":2,"response_format":{"type":"text","x":1}}"#.into(),
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut r = request();
            edit(&mut r);
            assert_ne!(cache_key(&r), base, "edit {i} did not change the key");
        }
    }

    #[test]
    fn config_is_validated() {
        let c = Config::parse("{}").unwrap();
        assert_eq!((c.ttl_seconds, c.max_entry_bytes), (300, 262_144));
        let err = |c: &str| Config::parse(c).unwrap_err();
        assert_eq!(
            err(r#"{"ttl_seconds": 0}"#),
            "invalid config: ttl_seconds: must be 1..=86400, got 0"
        );
        assert_eq!(
            err(r#"{"ttl_seconds": 86401}"#),
            "invalid config: ttl_seconds: must be 1..=86400, got 86401"
        );
        assert_eq!(
            err(r#"{"max_entry_bytes": 0}"#),
            "invalid config: max_entry_bytes: must be at least 1"
        );
        assert_eq!(
            err(r#"{"ttl_seconds": -1}"#),
            "invalid config: ttl_seconds: invalid value: integer `-1`, expected u64"
        );
        assert!(err(r#"{"ttl": 1}"#).contains("unknown field `ttl`"));
    }

    #[test]
    fn the_size_bound_never_exceeds_the_encoded_size() {
        let mut r = ChatResponse::with_text("id-1", "mock", "echo", 0, "a \"quoted\"\n text é");
        r.extra = r#"{"system_fingerprint":"fp"}"#.into();
        let encoded = serde_json::to_vec(&r).unwrap().len();
        assert!(
            min_json_len(&r) <= encoded,
            "{} > {encoded}",
            min_json_len(&r)
        );
        assert!(min_json_len(&r) > 40, "the bound counts the texts");
    }

    #[test]
    fn marker_is_added_to_extra() {
        let mut r = ChatResponse::with_text("id", "mock", "echo", 0, "hi");
        r.extra = r#"{"system_fingerprint":"fp"}"#.into();
        mark(&mut r, "hit").unwrap();
        assert_eq!(r.extra_field(MARKER), Some(Value::from("hit")));
        assert_eq!(r.extra_field("system_fingerprint"), Some(Value::from("fp")));
    }
}
