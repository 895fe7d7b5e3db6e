//! `auth`: rejects requests that do not carry one of the configured API keys.
//!
//! The pre-hook reads a request header (by default `authorization`, with a `Bearer ` prefix
//! stripped) and compares it with the configured keys. A missing header or an unknown key fails
//! the request with HTTP 401, OpenAI error type `authentication_error`, code `invalid_api_key`,
//! and no fallbacks. The message says which header is missing or that the key is not accepted; it
//! never contains the key.
//!
//! Config (unknown fields rejected):
//!
//! | field          | type            | default           | meaning                              |
//! |----------------|-----------------|-------------------|--------------------------------------|
//! | `keys`         | list of strings | (required)        | accepted keys; non-empty, no `""`    |
//! | `header`       | string          | `"authorization"` | header holding the key               |
//! | `strip_bearer` | bool            | `true`            | strip a leading `Bearer ` from it    |
//!
//! ```json
//! { "keys": ["sk-demo"], "header": "authorization", "strip_bearer": true }
//! ```

use serde::Deserialize;
use wasmgate_sdk::{ChatRequest, Ctx, GatewayError, Plugin, PreOutcome, Result, config_error};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accepted keys (required, non-empty, no empty key).
    pub keys: Vec<String>,
    /// Header that holds the key.
    #[serde(default = "default_header")]
    pub header: String,
    /// Whether to strip a leading `Bearer ` (any case) from the header value.
    #[serde(default = "default_strip_bearer")]
    pub strip_bearer: bool,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_strip_bearer() -> bool {
    true
}

impl Config {
    /// Parses and validates the JSON config.
    pub fn parse(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        if config.keys.is_empty() {
            return Err(config_error("keys", "must list at least one key"));
        }
        if let Some(i) = config.keys.iter().position(|k| k.is_empty()) {
            return Err(config_error(&format!("keys[{i}]"), "must not be empty"));
        }
        if config.header.trim().is_empty() {
            return Err(config_error("header", "must not be empty"));
        }
        Ok(config)
    }
}

/// Checks the API key of every request.
#[derive(Debug)]
pub struct Auth {
    config: Config,
}

impl Auth {
    /// `Ok(())` when `value` (the header's value, if present) carries an accepted key; otherwise
    /// the message to fail with.
    pub fn check(&self, value: Option<&str>) -> core::result::Result<(), String> {
        let header = &self.config.header;
        let Some(value) = value else {
            return Err(format!("missing API key: send it in the `{header}` header"));
        };
        let mut key = value.trim();
        if self.config.strip_bearer {
            key = strip_bearer(key);
        }
        if self.config.keys.iter().any(|k| k == key) {
            Ok(())
        } else {
            Err(format!(
                "the API key in the `{header}` header is not accepted"
            ))
        }
    }
}

/// `value` without a leading `Bearer ` (scheme matched case-insensitively).
fn strip_bearer(value: &str) -> &str {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for Auth {
    fn name() -> String {
        "auth".into()
    }

    fn init(config: &str) -> Result<Self> {
        Ok(Auth {
            config: Config::parse(config)?,
        })
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: ChatRequest) -> Result<PreOutcome> {
        match self.check(ctx.header(&self.config.header).as_deref()) {
            Ok(()) => Ok(PreOutcome::Continue(req)),
            Err(message) => Ok(PreOutcome::Fail(
                GatewayError::new(401, message)
                    .kind("authentication_error")
                    .code("invalid_api_key")
                    .no_fallbacks(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(config: &str) -> Auth {
        Auth {
            config: Config::parse(config).unwrap(),
        }
    }

    #[test]
    fn config_defaults() {
        let c = Config::parse(r#"{"keys": ["k"]}"#).unwrap();
        assert_eq!(c.header, "authorization");
        assert!(c.strip_bearer);
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c: &str| Config::parse(c).unwrap_err();
        assert_eq!(err("{}"), "invalid config: missing field `keys`");
        assert_eq!(
            err(r#"{"keys": []}"#),
            "invalid config: keys: must list at least one key"
        );
        assert_eq!(
            err(r#"{"keys": ["a", ""]}"#),
            "invalid config: keys[1]: must not be empty"
        );
        assert_eq!(
            err(r#"{"keys": ["a", 3]}"#),
            "invalid config: keys[1]: invalid type: integer `3`, expected a string"
        );
        assert!(err(r#"{"keys": ["a"], "key": 1}"#).contains("unknown field `key`"));
        assert_eq!(
            err(r#"{"keys": ["a"], "header": " "}"#),
            "invalid config: header: must not be empty"
        );
    }

    #[test]
    fn accepts_configured_keys_with_or_without_bearer() {
        let a = auth(r#"{"keys": ["sk-demo", "sk-other"]}"#);
        assert_eq!(a.check(Some("Bearer sk-demo")), Ok(()));
        assert_eq!(a.check(Some("bearer sk-other")), Ok(()));
        assert_eq!(a.check(Some("sk-demo")), Ok(()));
    }

    #[test]
    fn rejects_missing_and_unknown_keys_without_echoing_them() {
        let a = auth(r#"{"keys": ["sk-demo"], "header": "x-api-key", "strip_bearer": false}"#);
        let missing = a.check(None).unwrap_err();
        assert!(missing.contains("missing API key") && missing.contains("x-api-key"));
        let wrong = a.check(Some("sk-wrong-secret")).unwrap_err();
        assert!(wrong.contains("not accepted") && !wrong.contains("sk-wrong-secret"));
        assert!(
            a.check(Some("Bearer sk-demo")).is_err(),
            "no stripping when disabled"
        );
        assert_eq!(a.check(Some("sk-demo")), Ok(()));
    }
}
