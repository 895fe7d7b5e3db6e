//! The plugin's config: JSON in, validated [`Rule`]s out, every error naming its field.

use core::fmt;
use core::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use wasmgate_sdk::{Result, config_error};

/// Longest window a rule may have: 30 days (windows are fixed and aligned to the Unix epoch,
/// so a "month" is 30 days, not a calendar month).
pub const MAX_WINDOW_SECONDS: u64 = 30 * 86_400;

/// The plugin's config as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The rules; a request must pass every one.
    pub rules: Vec<RuleConfig>,
    /// Header holding the virtual key (for the `virtual-key` key source).
    #[serde(default = "default_virtual_key_header")]
    pub virtual_key_header: String,
    /// Whether successful responses get an `x_wasmgate_ratelimit` field with each rule's state.
    #[serde(default = "default_report")]
    pub report: bool,
}

fn default_virtual_key_header() -> String {
    "x-wasmgate-vk".into()
}

fn default_report() -> bool {
    true
}

fn default_window_seconds() -> u64 {
    60
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in messages and reports; defaults to the key written out (`virtual-key+model`).
    #[serde(default)]
    pub name: Option<String>,
    /// What the rule counts per: one key source or a list of them.
    pub key: KeySpec,
    /// Length of the fixed window, in seconds.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Requests admitted per key and window.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Tokens (the responses' `usage.total_tokens`) per key and window.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// What to do when a key source has no value for a request (a header is absent).
    #[serde(default)]
    pub missing: Missing,
}

/// What a rule does with a request for which one of its key sources has no value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missing {
    /// Count all such requests together, in one shared bucket per rule.
    #[default]
    Anonymous,
    /// The rule does not apply to the request.
    Skip,
    /// Fail the request with a 400 naming what is missing.
    Reject,
}

/// One source of a rule's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// One counter for all requests.
    Global,
    /// The value of the virtual-key header.
    VirtualKey,
    /// The value of a request header (lower-case name).
    Header(String),
    /// The target `provider/model`.
    Model,
    /// The target provider.
    Provider,
    /// The `user` field of the request body.
    User,
}

impl FromStr for KeyPart {
    type Err = String;

    fn from_str(s: &str) -> core::result::Result<Self, String> {
        Ok(match s {
            "global" => KeyPart::Global,
            "virtual-key" => KeyPart::VirtualKey,
            "model" => KeyPart::Model,
            "provider" => KeyPart::Provider,
            "user" => KeyPart::User,
            _ => match s.strip_prefix("header:") {
                Some(name) => KeyPart::Header(header_name(name)?),
                None => {
                    return Err(format!(
                        "unknown key source `{s}`: expected `global`, `virtual-key`, `model`, \
                         `provider`, `user` or `header:<name>`"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Global => f.write_str("global"),
            KeyPart::VirtualKey => f.write_str("virtual-key"),
            KeyPart::Header(name) => write!(f, "header:{name}"),
            KeyPart::Model => f.write_str("model"),
            KeyPart::Provider => f.write_str("provider"),
            KeyPart::User => f.write_str("user"),
        }
    }
}

impl<'de> Deserialize<'de> for KeyPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A checked, lower-cased HTTP header name.
pub fn header_name(name: &str) -> core::result::Result<String, String> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        Err("the header name is empty".into())
    } else if let Some(c) = name.chars().find(|&c| !is_tchar(c)) {
        Err(format!("`{name}` is not a header name (character {c:?})"))
    } else {
        Ok(name.to_ascii_lowercase())
    }
}

/// A rule's key: one source (`"virtual-key"`) or several (`["virtual-key", "model"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec(pub Vec<KeyPart>);

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{part}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        struct SpecVisitor;

        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = KeySpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key source or a list of key sources")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> core::result::Result<KeySpec, E> {
                s.parse().map(|p| KeySpec(vec![p])).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> core::result::Result<KeySpec, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<KeyPart>()? {
                    parts.push(part);
                }
                Ok(KeySpec(parts))
            }
        }

        d.deserialize_any(SpecVisitor)
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique name, for messages and reports.
    pub name: String,
    /// Key sources, at least one, no duplicates, `global` alone.
    pub key: Vec<KeyPart>,
    /// Window length in seconds, `1..=MAX_WINDOW_SECONDS`.
    pub window_seconds: u64,
    /// Requests per key and window, at least 1.
    pub requests: Option<u64>,
    /// Tokens per key and window, at least 1.
    pub tokens: Option<u64>,
    /// What to do when a key source has no value.
    pub missing: Missing,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The rules, in config order.
    pub rules: Vec<Rule>,
    /// Lower-case name of the virtual-key header.
    pub virtual_key_header: String,
    /// Whether successful responses get `x_wasmgate_ratelimit`.
    pub report: bool,
}

impl Settings {
    /// Parses and validates the JSON config.
    pub fn parse(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        if config.rules.is_empty() {
            return Err(config_error("rules", "must list at least one rule"));
        }
        let virtual_key_header = header_name(&config.virtual_key_header)
            .map_err(|e| config_error("virtual_key_header", e))?;
        let mut rules: Vec<Rule> = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.into_iter().enumerate() {
            let rule = validate_rule(i, rule)?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(config_error(
                    &format!("rules[{i}].name"),
                    format!(
                        "two rules are named `{}`; give each a distinct `name`",
                        rule.name
                    ),
                ));
            }
            rules.push(rule);
        }
        Ok(Settings {
            rules,
            virtual_key_header,
            report: config.report,
        })
    }
}

fn validate_rule(i: usize, rule: RuleConfig) -> Result<Rule> {
    let field = |name: &str| format!("rules[{i}].{name}");
    let parts = &rule.key.0;
    if parts.is_empty() {
        return Err(config_error(
            &field("key"),
            "must name at least one key source",
        ));
    }
    for (j, part) in parts.iter().enumerate() {
        if parts[..j].contains(part) {
            return Err(config_error(
                &field("key"),
                format!("`{part}` is listed twice"),
            ));
        }
    }
    if parts.len() > 1 && parts.contains(&KeyPart::Global) {
        return Err(config_error(
            &field("key"),
            "`global` cannot be combined with other key sources",
        ));
    }
    if !(1..=MAX_WINDOW_SECONDS).contains(&rule.window_seconds) {
        let got = rule.window_seconds;
        return Err(config_error(
            &field("window_seconds"),
            format!("must be 1..={MAX_WINDOW_SECONDS}, got {got}"),
        ));
    }
    for (name, limit) in [("requests", rule.requests), ("tokens", rule.tokens)] {
        if limit == Some(0) {
            return Err(config_error(&field(name), "must be at least 1"));
        }
    }
    if rule.requests.is_none() && rule.tokens.is_none() {
        return Err(config_error(
            &format!("rules[{i}]"),
            "set `requests`, `tokens` or both",
        ));
    }
    let name = match rule.name {
        Some(name) if name.trim().is_empty() => {
            return Err(config_error(&field("name"), "must not be empty"));
        }
        Some(name) => name,
        None => rule.key.to_string(),
    };
    Ok(Rule {
        name,
        key: rule.key.0,
        window_seconds: rule.window_seconds,
        requests: rule.requests,
        tokens: rule.tokens,
        missing: rule.missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: &str) -> String {
        match Settings::parse(config) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_and_key_forms() {
        let s = Settings::parse(
            r#"{"rules": [
                {"key": "virtual-key", "requests": 10},
                {"key": ["header:X-Api-Key", "model"], "tokens": 5, "window_seconds": 3600,
                 "missing": "reject", "name": "per-key-model"},
                {"key": "global", "requests": 1, "tokens": 2, "missing": "skip"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(s.virtual_key_header, "x-wasmgate-vk");
        assert!(s.report);
        let r = &s.rules[0];
        assert_eq!(r.name, "virtual-key");
        assert_eq!(r.key, [KeyPart::VirtualKey]);
        assert_eq!(
            (r.window_seconds, r.requests, r.tokens),
            (60, Some(10), None)
        );
        assert_eq!(r.missing, Missing::Anonymous);
        let r = &s.rules[1];
        assert_eq!(r.name, "per-key-model");
        assert_eq!(r.key, [KeyPart::Header("x-api-key".into()), KeyPart::Model]);
        assert_eq!(r.missing, Missing::Reject);
        assert_eq!(s.rules[2].missing, Missing::Skip);
    }

    #[test]
    fn default_names_spell_out_the_key() {
        let s = Settings::parse(
            r#"{"rules": [{"key": ["virtual-key", "provider", "user", "header:x-team"], "requests": 1}]}"#,
        )
        .unwrap();
        assert_eq!(s.rules[0].name, "virtual-key+provider+user+header:x-team");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err("{}"), "invalid config: missing field `rules`");
        assert_eq!(
            err(r#"{"rules": []}"#),
            "invalid config: rules: must list at least one rule"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": "model", "requests": 0}]}"#),
            "invalid config: rules[0].requests: must be at least 1"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": "model"}]}"#),
            "invalid config: rules[0]: set `requests`, `tokens` or both"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": "model", "tokens": 1, "window_seconds": 0}]}"#),
            "invalid config: rules[0].window_seconds: must be 1..=2592000, got 0"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": "model", "tokens": 1}, {"key": "model", "requests": 1}]}"#),
            "invalid config: rules[1].name: two rules are named `model`; give each a distinct `name`"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": ["model", "model"], "tokens": 1}]}"#),
            "invalid config: rules[0].key: `model` is listed twice"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": ["global", "model"], "tokens": 1}]}"#),
            "invalid config: rules[0].key: `global` cannot be combined with other key sources"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": [], "tokens": 1}]}"#),
            "invalid config: rules[0].key: must name at least one key source"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": "model", "tokens": 1, "name": " "}]}"#),
            "invalid config: rules[0].name: must not be empty"
        );
        assert_eq!(
            err(r#"{"rules": [{"key": "model", "tokens": 1}], "virtual_key_header": "a b"}"#),
            "invalid config: virtual_key_header: `a b` is not a header name (character ' ')"
        );
        assert!(
            err(r#"{"rules": [{"key": "model", "tokens": 1, "limit": 3}]}"#)
                .contains("rules[0].limit: unknown field `limit`")
        );
        assert!(
            err(r#"{"rules": [{"key": "model", "tokens": 1, "missing": "allow"}]}"#)
                .starts_with("invalid config: rules[0].missing: unknown variant `allow`")
        );
    }

    #[test]
    fn bad_key_sources_are_named_with_their_position() {
        let e = err(r#"{"rules": [{"key": ["model", "team"], "tokens": 1}]}"#);
        assert!(
            e.starts_with("invalid config: rules[0].key[1]: unknown key source `team`"),
            "{e}"
        );
        let e = err(r#"{"rules": [{"key": "header:", "tokens": 1}]}"#);
        assert_eq!(e, "invalid config: rules[0].key: the header name is empty");
        let e = err(r#"{"rules": [{"key": 3, "tokens": 1}]}"#);
        assert!(
            e.contains("rules[0].key: invalid type: integer `3`, expected a key source or a list"),
            "{e}"
        );
    }
}
