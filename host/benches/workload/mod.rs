//! What the in-process benchmarks run (shared by `hot_path.rs` and `examples/instructions.rs`,
//! so a criterion time and an instruction count measure the same thing): the 1 KB request, its
//! headers, and the plugin chains.

use serde_json::{Value, json};
use wasmgate_artifacts as artifacts;

/// A chat request of about 1 KB, as the end-to-end benchmark sends.
pub fn request_json() -> Value {
    let prompt = "Summarise the following meeting notes in three bullet points. ".repeat(14);
    json!({
        "model": "mock/echo",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": prompt.trim_end()},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
    })
}

/// The request's headers: the key auth and rate-limit look at.
pub fn headers() -> Vec<(String, String)> {
    vec![
        ("authorization".into(), "Bearer sk-bench".into()),
        ("content-type".into(), "application/json".into()),
    ]
}

/// Five no-op plugins (`plugins` of a config).
pub fn noop5() -> Value {
    (1..=5)
        .map(|i| json!({"name": format!("noop{i}"), "path": artifacts::NOOP}))
        .collect()
}

/// auth, rate-limit, content-filter, cache (every request a miss) and logging, configured as
/// the end-to-end benchmark configures them (`plugins` of a config).
pub fn realistic5() -> Value {
    json!([
        {"name": "auth", "path": artifacts::AUTH, "config": {"keys": ["sk-bench", "sk-other"]}},
        {"name": "rate-limit", "path": artifacts::RATE_LIMIT,
         "config": {"rules": [{"key": "header:authorization", "requests": 1_000_000_000u64}]}},
        {"name": "content-filter", "path": artifacts::CONTENT_FILTER,
         "config": {"patterns": ["\\bpassword\\b", "sk-[A-Za-z0-9]{20,40}"], "action": "redact"}},
        {"name": "cache", "path": artifacts::CACHE, "config": {"max_entry_bytes": 1}},
        {"name": "logging", "path": artifacts::LOGGING, "config": {}},
    ])
}
