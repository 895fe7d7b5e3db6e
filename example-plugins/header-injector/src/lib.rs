//! `header-injector`: rewrites requests before the gateway parses them: sets and removes
//! headers, fills in default body parameters and resolves model aliases.
//!
//! It is a transport interceptor only, so everything after it (other interceptors, the pre- and
//! post-hooks, `Ctx::header`) sees the rewritten request. In order:
//!
//! 1. `remove_headers` are removed (names matched case-insensitively);
//! 2. `set_headers` are set, replacing every earlier value of the same name;
//! 3. if the body is a JSON object: each of `defaults` is added where the body lacks that field
//!    (or has it as `null`); then a `model`, and every entry of `fallbacks`, that is one of
//!    `model_aliases` is replaced by its target. A body that is not a JSON object is left as it
//!    is (the gateway reports the parse error itself).
//!
//! The interceptor answers `pass` (nothing copied back) unless something changed.
//!
//! Config (all optional, unknown fields rejected):
//!
//! | field            | type                     | default | meaning                                           |
//! |------------------|--------------------------|---------|---------------------------------------------------|
//! | `set_headers`    | object: name -> value    | `{}`    | headers to add or override                        |
//! | `remove_headers` | list of names            | `[]`    | headers to remove                                 |
//! | `defaults`       | object: field -> value   | `{}`    | body fields to fill in when absent or `null`      |
//! | `model_aliases`  | object: alias -> target  | `{}`    | `model` (and `fallbacks`) aliases; targets are `provider/model` |
//!
//! ```json
//! {
//!   "set_headers": { "x-team": "search" },
//!   "remove_headers": ["x-debug"],
//!   "defaults": { "temperature": 0.2, "max_tokens": 256 },
//!   "model_aliases": { "fast": "mock/echo" }
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::serde_json::{self, Map, Value};
use wasmgate_sdk::{
    Ctx, Headers, HttpRequest, HttpRewrite, Plugin, Result, TransportOutcome, config_error,
};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Headers to add or override (names are lower-cased).
    pub set_headers: BTreeMap<String, String>,
    /// Headers to remove (names are lower-cased).
    pub remove_headers: Vec<String>,
    /// Body fields to fill in when absent or `null`.
    pub defaults: Map<String, Value>,
    /// Model aliases: alias -> `provider/model`.
    pub model_aliases: BTreeMap<String, String>,
}

impl Config {
    /// Parses and validates the JSON config; header names come out lower-cased.
    pub fn parse(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        let mut set_headers = BTreeMap::new();
        for (name, value) in config.set_headers {
            let field = format!("set_headers.{name}");
            check_header_name(&field, &name)?;
            if let Some(c) = value.chars().find(|&c| c.is_control() && c != '\t') {
                return Err(config_error(
                    &field,
                    format!("the value must not contain control characters, found {c:?}"),
                ));
            }
            if set_headers
                .insert(name.to_ascii_lowercase(), value)
                .is_some()
            {
                return Err(config_error(
                    &field,
                    "is set twice (header names are case-insensitive)",
                ));
            }
        }
        let mut remove_headers = Vec::with_capacity(config.remove_headers.len());
        for (i, name) in config.remove_headers.iter().enumerate() {
            check_header_name(&format!("remove_headers[{i}]"), name)?;
            remove_headers.push(name.to_ascii_lowercase());
        }
        if let Some((key, _)) = config.defaults.iter().find(|(_, v)| v.is_null()) {
            return Err(config_error(
                &format!("defaults.{key}"),
                "must not be null (a null default fills in nothing)",
            ));
        }
        for (alias, target) in &config.model_aliases {
            let field = format!("model_aliases.{alias}");
            if alias.trim().is_empty() {
                return Err(config_error("model_aliases", "an alias must not be empty"));
            }
            match target.split_once('/') {
                Some((provider, model)) if !provider.is_empty() && !model.is_empty() => {}
                _ => {
                    return Err(config_error(
                        &field,
                        format!(
                            "the target must be addressed as provider/model (e.g. \"mock/echo\"), \
                             got {target:?}"
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            set_headers,
            remove_headers,
            defaults: config.defaults,
            model_aliases: config.model_aliases,
        })
    }

    /// Whether the body needs to be looked at at all.
    fn edits_body(&self) -> bool {
        !self.defaults.is_empty() || !self.model_aliases.is_empty()
    }
}

/// An HTTP header name is a non-empty token (RFC 9110).
fn check_header_name(field: &str, name: &str) -> Result<()> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(config_error(
            field,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(())
}

/// Applies the header edits; returns whether anything changed.
pub fn rewrite_headers(config: &Config, headers: &mut Headers) -> bool {
    let before = headers.len();
    headers.retain(|(name, _)| {
        !config
            .remove_headers
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
    });
    let mut changed = headers.len() != before;
    for (name, value) in &config.set_headers {
        let mut same = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let unchanged = matches!((same.next(), same.next()), (Some((_, v)), None) if v == value);
        if !unchanged {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            headers.push((name.clone(), value.clone()));
            changed = true;
        }
    }
    changed
}

/// Applies the body edits to a JSON object body; `None` when the body is unchanged or is not a
/// JSON object.
pub fn rewrite_body(config: &Config, body: &[u8]) -> Option<Vec<u8>> {
    if !config.edits_body() {
        return None;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut changed = false;
    for (key, value) in &config.defaults {
        let slot = obj.entry(key.clone()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value.clone();
            changed = true;
        }
    }
    let resolve = |v: &mut Value| match v.as_str().and_then(|m| config.model_aliases.get(m)) {
        Some(target) => {
            *v = Value::String(target.clone());
            true
        }
        None => false,
    };
    if let Some(model) = obj.get_mut("model") {
        changed |= resolve(model);
    }
    if let Some(Value::Array(fallbacks)) = obj.get_mut("fallbacks") {
        for fallback in fallbacks {
            changed |= resolve(fallback);
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&Value::Object(obj)).ok()
}

/// Rewrites headers and body as configured.
#[derive(Debug)]
pub struct HeaderInjector {
    config: Config,
}

#[wasmgate_sdk::plugin]
impl Plugin for HeaderInjector {
    /// Nothing about a request is kept in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "header-injector".into()
    }

    fn init(config: &str) -> Result<Self> {
        Ok(HeaderInjector {
            config: Config::parse(config)?,
        })
    }

    fn transport_interceptor(&mut self, _ctx: &Ctx, req: HttpRequest) -> Result<TransportOutcome> {
        let HttpRequest {
            mut headers, body, ..
        } = req;
        let headers_changed = rewrite_headers(&self.config, &mut headers);
        let new_body = rewrite_body(&self.config, &body);
        if !headers_changed && new_body.is_none() {
            return Ok(TransportOutcome::Pass);
        }
        Ok(TransportOutcome::Rewrite(HttpRewrite {
            headers,
            body: new_body.unwrap_or(body),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn body_of(bytes: Option<Vec<u8>>) -> Value {
        bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c: &str| Config::parse(c).unwrap_err();
        assert_eq!(
            err(r#"{"set_headers": {"x bad": "1"}}"#),
            "invalid config: set_headers.x bad: \"x bad\" is not a valid HTTP header name"
        );
        assert_eq!(
            err(r#"{"set_headers": {"x-a": "1\n2"}}"#),
            "invalid config: set_headers.x-a: the value must not contain control characters, \
             found '\\n'"
        );
        assert_eq!(
            err(r#"{"set_headers": {"X-A": "1", "x-a": "2"}}"#),
            "invalid config: set_headers.x-a: is set twice (header names are case-insensitive)"
        );
        assert_eq!(
            err(r#"{"remove_headers": ["ok", ""]}"#),
            "invalid config: remove_headers[1]: \"\" is not a valid HTTP header name"
        );
        assert_eq!(
            err(r#"{"model_aliases": {"fast": "echo"}}"#),
            "invalid config: model_aliases.fast: the target must be addressed as provider/model \
             (e.g. \"mock/echo\"), got \"echo\""
        );
        assert_eq!(
            err(r#"{"defaults": [1]}"#),
            "invalid config: defaults: invalid type: sequence, expected a map"
        );
        assert_eq!(
            err(r#"{"defaults": {"seed": null}}"#),
            "invalid config: defaults.seed: must not be null (a null default fills in nothing)"
        );
        assert!(err(r#"{"headers": {}}"#).contains("unknown field `headers`"));
        assert_eq!(
            config(r#"{"set_headers": {"X-Team": "a"}, "remove_headers": ["X-Debug"]}"#)
                .remove_headers,
            ["x-debug"]
        );
    }

    #[test]
    fn headers_are_removed_then_set() {
        let c = config(
            r#"{"set_headers": {"X-Team": "search", "authorization": "Bearer k"},
                "remove_headers": ["x-debug"]}"#,
        );
        let mut h = headers(&[
            ("x-debug", "1"),
            ("X-Debug", "2"),
            ("x-team", "old"),
            ("x-team", "older"),
            ("accept", "*/*"),
        ]);
        assert!(rewrite_headers(&c, &mut h));
        assert_eq!(
            h,
            headers(&[
                ("accept", "*/*"),
                ("authorization", "Bearer k"),
                ("x-team", "search")
            ])
        );
        // Already as configured: nothing changes.
        assert!(!rewrite_headers(&c, &mut h));
        assert!(!rewrite_headers(&config("{}"), &mut h));
    }

    #[test]
    fn defaults_fill_absent_and_null_fields_only() {
        let c = config(r#"{"defaults": {"temperature": 0.2, "max_tokens": 256}}"#);
        let body = br#"{"model": "mock/echo", "temperature": 0.9, "max_tokens": null}"#;
        let out = body_of(rewrite_body(&c, body));
        assert_eq!(out["temperature"], 0.9);
        assert_eq!(out["max_tokens"], 256);
        assert_eq!(out["model"], "mock/echo");
        let full = br#"{"model": "m/x", "temperature": 1.0, "max_tokens": 5}"#;
        assert_eq!(rewrite_body(&c, full), None);
    }

    #[test]
    fn model_aliases_resolve_model_and_fallbacks() {
        let c = config(r#"{"model_aliases": {"fast": "mock/echo", "backup": "other/echo"}}"#);
        let body = br#"{"model": "fast", "fallbacks": ["backup", "mock/x", 3]}"#;
        let out = body_of(rewrite_body(&c, body));
        assert_eq!(out["model"], "mock/echo");
        assert_eq!(
            out["fallbacks"],
            serde_json::json!(["other/echo", "mock/x", 3])
        );
        assert_eq!(rewrite_body(&c, br#"{"model": "mock/echo"}"#), None);
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_left_alone() {
        let c = config(r#"{"defaults": {"temperature": 0.2}}"#);
        assert_eq!(rewrite_body(&c, b"{not json"), None);
        assert_eq!(rewrite_body(&c, b"[1, 2]"), None);
        assert_eq!(rewrite_body(&c, b""), None);
    }
}
