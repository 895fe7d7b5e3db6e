//! The limiter itself, free of host calls: fixed windows, bucket keys, admission and charging
//! against a [`Counters`] store (the plugin's kv namespace in the gateway, a map in tests).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{KeyPart, Missing, Rule, Settings};

/// A fixed window: the `index`-th stretch of `window_seconds` since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `now / window length`: part of every counter key, so a new window starts from zero.
    pub index: u64,
    /// Milliseconds from now to the end of the window (at least 1).
    pub remaining_ms: u64,
}

impl Window {
    /// The window of length `seconds` that contains `now_ms`.
    pub fn at(now_ms: u64, seconds: u64) -> Self {
        let len = seconds.saturating_mul(1000).max(1);
        let index = now_ms / len;
        let end = index.saturating_add(1).saturating_mul(len);
        Window {
            index,
            remaining_ms: end.saturating_sub(now_ms).max(1),
        }
    }

    /// How long a counter of this window must live: until the window ends.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.remaining_ms)
    }

    /// Whole seconds until the window ends, rounded up (at least 1): the `retry-after` value.
    pub fn reset_seconds(&self) -> u64 {
        self.remaining_ms.div_ceil(1000).max(1)
    }
}

/// Integer counters with a time-to-live: the plugin's kv namespace.
pub trait Counters {
    /// The counter under `key` (0 when absent or expired).
    fn get(&mut self, key: &str) -> i64;
    /// Atomically adds `delta` to the counter under `key` and returns the new value; a new
    /// counter expires after `ttl`.
    fn incr(&mut self, key: &str, delta: i64, ttl: Duration) -> i64;
}

/// What a rule's key sources are read from.
pub struct RequestKeys<'a> {
    /// Target provider.
    pub provider: &'a str,
    /// Target model (without the provider).
    pub model: &'a str,
    /// The `user` field of the body.
    pub user: Option<&'a str>,
    /// A request header by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// The value of one key source for a request; `None` when the request has none.
pub fn key_value(
    part: &KeyPart,
    virtual_key_header: &str,
    req: &RequestKeys<'_>,
) -> Option<String> {
    match part {
        KeyPart::Global => Some(String::new()),
        KeyPart::VirtualKey => (req.header)(virtual_key_header),
        KeyPart::Header(name) => (req.header)(name),
        KeyPart::Model => Some(format!("{}/{}", req.provider, req.model)),
        KeyPart::Provider => Some(req.provider.to_owned()),
        KeyPart::User => req.user.map(str::to_owned),
    }
    .filter(|v| !v.is_empty() || *part == KeyPart::Global)
}

/// What a missing key source is, for the message of a rejected request.
fn describe_missing(part: &KeyPart, virtual_key_header: &str) -> String {
    match part {
        KeyPart::VirtualKey => format!("a virtual key in the `{virtual_key_header}` header"),
        KeyPart::Header(name) => format!("the `{name}` header"),
        KeyPart::User => "the `user` field in the request body".into(),
        other => format!("`{other}`"),
    }
}

/// The bucket of a rule for one set of key values: 32 hex digits of a SHA-256 over the rule's
/// name, its window length and the values (length-prefixed, a missing value distinct from every
/// present one). Hashing keeps kv keys short, free of separators a header could inject, and
/// free of the secrets (API keys) some headers carry.
pub fn bucket(rule: &Rule, values: &[Option<String>]) -> String {
    let mut input = Vec::with_capacity(128);
    let mut field = |bytes: &[u8]| {
        input.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        input.extend_from_slice(bytes);
    };
    field(b"rate-limit/v1");
    field(rule.name.as_bytes());
    field(rule.window_seconds.to_string().as_bytes());
    for value in values {
        match value {
            Some(v) => {
                field(b"+");
                field(v.as_bytes());
            }
            None => field(b"-"),
        }
    }
    // Hashed by the gateway, natively: several times cheaper than SHA-256 in wasm.
    let digest = wasmgate_sdk::digest::sha256(&input);
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The kv key of a bucket's request counter in a window.
pub fn requests_key(window: &Window, bucket: &str) -> String {
    format!("r:{}:{bucket}", window.index)
}

/// The kv key of a bucket's token counter in a window.
pub fn tokens_key(window: &Window, bucket: &str) -> String {
    format!("t:{}:{bucket}", window.index)
}

/// A rule that admitted a request, and the bucket the request counts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    /// Index of the rule in [`Settings::rules`].
    pub rule: usize,
    /// The request's bucket for that rule.
    pub bucket: String,
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The rule's `requests`.
    Requests,
    /// The rule's `tokens`.
    Tokens,
}

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A rule with `missing: reject` has no value for one of its key sources.
    MissingKey {
        /// The rule's name.
        rule: String,
        /// What is missing, in words (`the `x-api-key` header`).
        what: String,
    },
    /// The bucket is over one of the rule's limits in the current window.
    Limited {
        /// The rule's name.
        rule: String,
        /// Which limit.
        limit: Limit,
        /// The limit's value.
        max: u64,
        /// Tokens used in the window (for a token limit; the limit itself for requests).
        used: u64,
        /// The rule's window length.
        window_seconds: u64,
        /// Seconds until the window ends.
        reset_seconds: u64,
    },
}

/// A counter's value as a count (a negative value counts as 0).
fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Counts a request against every rule; the rules it passes, or why it is rejected.
///
/// Per rule, in order: a token limit rejects when the tokens already used in the window reach it
/// (tokens are charged after the response, so one request can take a bucket past its limit); a
/// request limit is checked by incrementing the window's counter atomically, so concurrent
/// requests cannot both take the last slot. When a request is rejected, the request counters it
/// incremented are given back: counters only count admitted requests.
pub fn admit(
    settings: &Settings,
    store: &mut impl Counters,
    now_ms: u64,
    req: &RequestKeys<'_>,
) -> Result<Vec<Admitted>, Rejection> {
    let mut admitted = Vec::with_capacity(settings.rules.len());
    let mut taken: Vec<(String, Duration)> = Vec::new();
    for (i, rule) in settings.rules.iter().enumerate() {
        let values: Vec<Option<String>> = rule
            .key
            .iter()
            .map(|p| key_value(p, &settings.virtual_key_header, req))
            .collect();
        if let Some(pos) = values.iter().position(Option::is_none) {
            match rule.missing {
                Missing::Anonymous => {}
                Missing::Skip => continue,
                Missing::Reject => {
                    give_back(store, &taken);
                    return Err(Rejection::MissingKey {
                        rule: rule.name.clone(),
                        what: describe_missing(&rule.key[pos], &settings.virtual_key_header),
                    });
                }
            }
        }
        let window = Window::at(now_ms, rule.window_seconds);
        let bucket = bucket(rule, &values);
        let limited = |limit, max, used| Rejection::Limited {
            rule: rule.name.clone(),
            limit,
            max,
            used,
            window_seconds: rule.window_seconds,
            reset_seconds: window.reset_seconds(),
        };
        if let Some(max) = rule.tokens {
            let used = count(store.get(&tokens_key(&window, &bucket)));
            if used >= max {
                give_back(store, &taken);
                return Err(limited(Limit::Tokens, max, used));
            }
        }
        if let Some(max) = rule.requests {
            let key = requests_key(&window, &bucket);
            let n = count(store.incr(&key, 1, window.ttl()));
            taken.push((key, window.ttl()));
            if n > max {
                give_back(store, &taken);
                return Err(limited(Limit::Requests, max, max));
            }
        }
        admitted.push(Admitted { rule: i, bucket });
    }
    Ok(admitted)
}

/// Undoes the request counts of a rejected request.
fn give_back(store: &mut impl Counters, taken: &[(String, Duration)]) {
    for (key, ttl) in taken {
        store.incr(key, -1, *ttl);
    }
}

/// The state of one rule's bucket after a response, as reported in `x_wasmgate_ratelimit`
/// (named after OpenAI's `x-ratelimit-*` headers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleStatus {
    /// The rule's `requests`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_requests: Option<u64>,
    /// Requests the bucket may still make in this window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_requests: Option<u64>,
    /// The rule's `tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_tokens: Option<u64>,
    /// Tokens the bucket may still use in this window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_tokens: Option<u64>,
    /// Seconds until the window ends and the counters start again from zero.
    pub reset_seconds: u64,
}

/// Adds `tokens` to the token counter of every admitted rule that has a token limit, in the
/// window current at `now_ms` (the one the tokens were spent in), and returns each rule's state.
/// With `tokens == 0` nothing is written.
pub fn charge(
    settings: &Settings,
    store: &mut impl Counters,
    now_ms: u64,
    admitted: &[Admitted],
    tokens: u64,
) -> Vec<(String, RuleStatus)> {
    let delta = i64::try_from(tokens).unwrap_or(i64::MAX);
    admitted
        .iter()
        .filter_map(|a| settings.rules.get(a.rule).map(|rule| (a, rule)))
        .map(|(a, rule)| {
            let window = Window::at(now_ms, rule.window_seconds);
            let remaining_tokens = rule.tokens.map(|max| {
                let key = tokens_key(&window, &a.bucket);
                let used = if delta > 0 {
                    store.incr(&key, delta, window.ttl())
                } else {
                    store.get(&key)
                };
                max.saturating_sub(count(used))
            });
            let remaining_requests = rule
                .requests
                .map(|max| max.saturating_sub(count(store.get(&requests_key(&window, &a.bucket)))));
            let status = RuleStatus {
                limit_requests: rule.requests,
                remaining_requests,
                limit_tokens: rule.tokens,
                remaining_tokens,
                reset_seconds: window.reset_seconds(),
            };
            (rule.name.clone(), status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Counters in a map; expiry is not modelled (window indices in the keys do the resetting).
    #[derive(Default)]
    struct Map(HashMap<String, i64>);

    impl Counters for Map {
        fn get(&mut self, key: &str) -> i64 {
            self.0.get(key).copied().unwrap_or(0)
        }
        fn incr(&mut self, key: &str, delta: i64, _ttl: Duration) -> i64 {
            let v = self.0.entry(key.to_owned()).or_insert(0);
            *v += delta;
            *v
        }
    }

    fn settings(rules: &str) -> Settings {
        Settings::parse(&format!(r#"{{"rules": {rules}}}"#)).unwrap()
    }

    fn keys<'a>(provider: &'a str, header: &'a dyn Fn(&str) -> Option<String>) -> RequestKeys<'a> {
        RequestKeys {
            provider,
            model: "echo",
            user: None,
            header,
        }
    }

    fn api_key(value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name| (name == "x-api-key").then(|| value.to_owned())
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        assert_eq!(
            Window::at(0, 60),
            Window {
                index: 0,
                remaining_ms: 60_000
            }
        );
        let w = Window::at(61_500, 60);
        assert_eq!((w.index, w.remaining_ms), (1, 58_500));
        assert_eq!(w.reset_seconds(), 59, "rounded up");
        assert_eq!(w.ttl(), Duration::from_millis(58_500));
        let last = Window::at(119_999, 60);
        assert_eq!(
            (last.index, last.remaining_ms, last.reset_seconds()),
            (1, 1, 1)
        );
        assert_eq!(
            Window::at(120_000, 60).index,
            2,
            "a new window at the boundary"
        );
        assert_eq!(Window::at(u64::MAX, 1).remaining_ms, 1, "no overflow");
    }

    #[test]
    fn buckets_separate_rules_windows_lengths_and_values() {
        let s = settings(
            r#"[{"key": "header:x-api-key", "requests": 1},
                {"key": "header:x-api-key", "requests": 1, "name": "other"},
                {"key": "header:x-api-key", "requests": 1, "name": "long", "window_seconds": 61}]"#,
        );
        let b = |rule: usize, v: Option<&str>| bucket(&s.rules[rule], &[v.map(str::to_owned)]);
        assert_eq!(b(0, Some("k")).len(), 32);
        assert_eq!(b(0, Some("k")), b(0, Some("k")));
        assert_ne!(b(0, Some("k")), b(0, Some("j")));
        assert_ne!(b(0, Some("k")), b(1, Some("k")), "rule names differ");
        assert_ne!(b(1, Some("k")), b(2, Some("k")));
        assert_ne!(b(0, None), b(0, Some("")), "missing is not empty");
        assert_ne!(b(0, None), b(0, Some("-")));
        let two = |a: &str, c: &str| bucket(&s.rules[0], &[Some(a.into()), Some(c.into())]);
        assert_ne!(two("a+", "b"), two("a", "+b"), "values are length-prefixed");
    }

    #[test]
    fn key_values_come_from_the_request() {
        let header = |name: &str| match name {
            "x-wasmgate-vk" => Some("vk-1".to_owned()),
            "x-empty" => Some(String::new()),
            _ => None,
        };
        let req = RequestKeys {
            provider: "mock",
            model: "echo",
            user: Some("alice"),
            header: &header,
        };
        let v = |p: &str| key_value(&p.parse().unwrap(), "x-wasmgate-vk", &req);
        assert_eq!(v("global").as_deref(), Some(""));
        assert_eq!(v("virtual-key").as_deref(), Some("vk-1"));
        assert_eq!(v("model").as_deref(), Some("mock/echo"));
        assert_eq!(v("provider").as_deref(), Some("mock"));
        assert_eq!(v("user").as_deref(), Some("alice"));
        assert_eq!(v("header:x-other"), None);
        assert_eq!(
            v("header:x-empty"),
            None,
            "an empty header counts as missing"
        );
    }

    #[test]
    fn requests_are_limited_per_bucket_and_window() {
        let s = settings(r#"[{"key": "header:x-api-key", "requests": 2}]"#);
        let mut store = Map::default();
        let (a, b) = (api_key("a"), api_key("b"));
        assert!(admit(&s, &mut store, T0, &keys("mock", &a)).is_ok());
        assert!(admit(&s, &mut store, T0, &keys("mock", &a)).is_ok());
        let Err(Rejection::Limited {
            limit,
            max,
            used,
            reset_seconds,
            ..
        }) = admit(&s, &mut store, T0, &keys("mock", &a))
        else {
            panic!("the third request is limited");
        };
        assert_eq!((limit, max, used), (Limit::Requests, 2, 2));
        assert_eq!(reset_seconds, Window::at(T0, 60).reset_seconds());
        assert!(
            admit(&s, &mut store, T0, &keys("mock", &b)).is_ok(),
            "own bucket"
        );
        let next_window = T0 + 60_000;
        assert!(admit(&s, &mut store, next_window, &keys("mock", &a)).is_ok());
    }

    #[test]
    fn a_rejection_gives_back_the_requests_it_counted() {
        let s = settings(
            r#"[{"key": "global", "requests": 10},
                {"key": "provider", "requests": 1}]"#,
        );
        let mut store = Map::default();
        let none = |_: &str| None;
        assert!(admit(&s, &mut store, T0, &keys("mock", &none)).is_ok());
        for _ in 0..3 {
            assert!(admit(&s, &mut store, T0, &keys("mock", &none)).is_err());
        }
        let admitted = admit(&s, &mut store, T0, &keys("backup", &none)).unwrap();
        let statuses = charge(&s, &mut store, T0, &admitted, 0);
        assert_eq!(
            statuses[0].1.remaining_requests,
            Some(8),
            "only the two admitted requests count: {statuses:?}"
        );
        assert_eq!(statuses[1].1.remaining_requests, Some(0));
    }

    #[test]
    fn tokens_are_charged_after_the_response_and_limit_later_requests() {
        let s = settings(r#"[{"key": "model", "tokens": 10, "name": "t"}]"#);
        let mut store = Map::default();
        let none = |_: &str| None;
        let first = admit(&s, &mut store, T0, &keys("mock", &none)).unwrap();
        let status = charge(&s, &mut store, T0, &first, 7);
        assert_eq!(status[0].0, "t");
        assert_eq!(status[0].1.remaining_tokens, Some(3));
        assert_eq!(status[0].1.limit_tokens, Some(10));
        assert_eq!(status[0].1.limit_requests, None);
        let second = admit(&s, &mut store, T0, &keys("mock", &none)).unwrap();
        let status = charge(&s, &mut store, T0, &second, 7);
        assert_eq!(status[0].1.remaining_tokens, Some(0), "saturates");
        let Err(Rejection::Limited { limit, used, .. }) =
            admit(&s, &mut store, T0, &keys("mock", &none))
        else {
            panic!("the token budget is used up");
        };
        assert_eq!((limit, used), (Limit::Tokens, 14));
        assert!(
            admit(&s, &mut store, T0, &keys("backup", &none)).is_ok(),
            "another model has its own budget"
        );
    }

    #[test]
    fn missing_key_values_follow_the_rule() {
        let none = |_: &str| None;
        let mut store = Map::default();
        let s = settings(r#"[{"key": "header:x-api-key", "requests": 1}]"#);
        assert!(admit(&s, &mut store, T0, &keys("mock", &none)).is_ok());
        assert!(
            admit(&s, &mut store, T0, &keys("mock", &none)).is_err(),
            "anonymous requests share one bucket"
        );
        let s = settings(r#"[{"key": "header:x-api-key", "requests": 1, "missing": "skip"}]"#);
        for _ in 0..3 {
            assert_eq!(admit(&s, &mut store, T0, &keys("mock", &none)), Ok(vec![]));
        }
        let s = settings(
            r#"[{"key": "global", "requests": 5, "name": "g"},
                {"key": ["model", "virtual-key"], "requests": 1, "missing": "reject"}]"#,
        );
        assert_eq!(
            admit(&s, &mut store, T0, &keys("mock", &none)),
            Err(Rejection::MissingKey {
                rule: "model+virtual-key".into(),
                what: "a virtual key in the `x-wasmgate-vk` header".into(),
            })
        );
        let status = charge(
            &s,
            &mut store,
            T0,
            &[Admitted {
                rule: 0,
                bucket: bucket(&s.rules[0], &[Some(String::new())]),
            }],
            0,
        );
        assert_eq!(status[0].1.remaining_requests, Some(5), "given back");
    }
}
