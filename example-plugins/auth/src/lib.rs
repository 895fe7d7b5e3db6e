//! `auth`: rejects requests that do not carry one of the configured API keys.
//!
//! The pre-hook reads a request header (by default `authorization`, with a `Bearer ` prefix
//! stripped) and compares it with the configured keys. A missing header or an unknown key fails
//! the request with HTTP 401, OpenAI error type `authentication_error`, code `invalid_api_key`,
//! and no fallbacks. The message says which header is missing or that the key is not accepted; it
//! never contains the key.
//!
//! Keys are kept only as SHA-256 digests, and a presented key is compared with every one of them
//! in constant time (no early exit, no length leak), so response timing says nothing about how
//! close a guess was. Keys come from the config (`keys`) and/or from an environment variable of
//! the gateway (`keys_env`, comma-separated), which the plugin can read only when the gateway
//! grants it: `"grants": {"env": ["GATEWAY_KEYS"]}`. An accepted request gets the context value
//! `auth.key` = the key's position in the list (never the key itself), for later plugins.
//!
//! Config (unknown fields rejected):
//!
//! | field          | type            | default           | meaning                              |
//! |----------------|-----------------|-------------------|--------------------------------------|
//! | `keys`         | list of strings | `[]`              | accepted keys; no `""`               |
//! | `keys_env`     | string          | none              | env variable with more keys (`a,b`)  |
//! | `header`       | string          | `"authorization"` | header holding the key               |
//! | `strip_bearer` | bool            | `true`            | strip a leading `Bearer ` from it    |
//!
//! At least one key must come from `keys` or `keys_env`.
//!
//! ```json
//! { "keys": ["sk-demo"], "header": "authorization", "strip_bearer": true }
//! ```

use serde::Deserialize;
use wasmgate_sdk::{Ctx, GatewayError, Plugin, PreOutcome, Request, Result, config_error};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accepted keys (no empty key; with `keys_env`, at least one in all).
    #[serde(default)]
    pub keys: Vec<String>,
    /// An environment variable holding more accepted keys, comma-separated (the plugin must be
    /// granted it).
    #[serde(default)]
    pub keys_env: Option<String>,
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
        if config.keys.is_empty() && config.keys_env.is_none() {
            return Err(config_error(
                "keys",
                "must list at least one key (or set keys_env)",
            ));
        }
        if let Some(i) = config.keys.iter().position(|k| k.is_empty()) {
            return Err(config_error(&format!("keys[{i}]"), "must not be empty"));
        }
        if config
            .keys_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(config_error("keys_env", "must not be empty"));
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
    header: String,
    strip_bearer: bool,
    /// SHA-256 digests of the accepted keys, in list order.
    digests: Vec<[u8; 32]>,
}

/// Computed by the gateway, natively.
fn digest(key: &str) -> [u8; 32] {
    wasmgate_sdk::digest::sha256(key.as_bytes())
}

/// Whether two digests are equal, looking at every byte whatever the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

impl Auth {
    /// An authenticator accepting `keys`, reading them as `config` says.
    pub fn new(config: &Config, keys: &[String]) -> Result<Self> {
        if keys.is_empty() {
            return Err(config_error(
                "keys_env",
                "the variable holds no key, and `keys` lists none",
            ));
        }
        Ok(Auth {
            header: config.header.clone(),
            strip_bearer: config.strip_bearer,
            digests: keys.iter().map(|k| digest(k)).collect(),
        })
    }

    /// The position of the accepted key when `value` (the header's value, if present) carries
    /// one; otherwise the message to fail with.
    pub fn check(&self, value: Option<&str>) -> core::result::Result<usize, String> {
        let header = &self.header;
        let Some(value) = value else {
            return Err(format!("missing API key: send it in the `{header}` header"));
        };
        let mut key = value.trim();
        if self.strip_bearer {
            key = strip_bearer(key);
        }
        let presented = digest(key);
        // Every digest is compared, so the time taken does not depend on which one matched.
        let mut found = None;
        for (i, accepted) in self.digests.iter().enumerate() {
            if same(&presented, accepted) && found.is_none() {
                found = Some(i);
            }
        }
        found.ok_or_else(|| format!("the API key in the `{header}` header is not accepted"))
    }
}

/// `value` without a leading `Bearer ` (scheme matched case-insensitively).
fn strip_bearer(value: &str) -> &str {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

/// The keys of `config` plus those of its `keys_env` variable.
fn all_keys(config: &Config) -> Result<Vec<String>> {
    let mut keys = config.keys.clone();
    if let Some(var) = &config.keys_env {
        let value = std::env::var(var).map_err(|_| {
            config_error(
                "keys_env",
                format!(
                    "the environment variable `{var}` is not visible to this plugin: set it for \
                     the gateway and grant it with \"grants\": {{\"env\": [\"{var}\"]}}"
                ),
            )
        })?;
        keys.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
        );
    }
    Ok(keys)
}

#[wasmgate_sdk::plugin]
impl Plugin for Auth {
    /// Nothing about a request is kept in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "auth".into()
    }

    fn init(config: &str) -> Result<Self> {
        let config = Config::parse(config)?;
        Auth::new(&config, &all_keys(&config)?)
    }

    fn pre_hook(&mut self, ctx: &Ctx, _req: &Request<'_>) -> Result<PreOutcome> {
        match self.check(ctx.header(&self.header).as_deref()) {
            Ok(i) => {
                ctx.set("auth.key", &i.to_string());
                Ok(PreOutcome::Pass)
            }
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
        let config = Config::parse(config).unwrap();
        Auth::new(&config, &config.keys).unwrap()
    }

    #[test]
    fn config_defaults() {
        let c = Config::parse(r#"{"keys": ["k"]}"#).unwrap();
        assert_eq!(c.header, "authorization");
        assert!(c.strip_bearer);
        assert!(c.keys_env.is_none());
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c: &str| Config::parse(c).unwrap_err();
        assert_eq!(
            err("{}"),
            "invalid config: keys: must list at least one key (or set keys_env)"
        );
        assert_eq!(
            err(r#"{"keys": []}"#),
            "invalid config: keys: must list at least one key (or set keys_env)"
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
        assert_eq!(
            err(r#"{"keys_env": ""}"#),
            "invalid config: keys_env: must not be empty"
        );
        assert!(Config::parse(r#"{"keys_env": "GATEWAY_KEYS"}"#).is_ok());
    }

    #[test]
    fn accepts_configured_keys_with_or_without_bearer() {
        let a = auth(r#"{"keys": ["sk-demo", "sk-other"]}"#);
        assert_eq!(a.check(Some("Bearer sk-demo")), Ok(0));
        assert_eq!(a.check(Some("bearer sk-other")), Ok(1));
        assert_eq!(a.check(Some("sk-demo")), Ok(0));
        assert!(a.check(Some("sk-dem")).is_err(), "a prefix is not the key");
        assert!(a.check(Some("sk-demo2")).is_err());
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
        assert_eq!(a.check(Some("sk-demo")), Ok(0));
    }

    #[test]
    fn digests_compare_every_byte() {
        let a = digest("a");
        let mut b = a;
        assert!(same(&a, &b));
        b[31] ^= 1;
        assert!(!same(&a, &b));
    }
}
