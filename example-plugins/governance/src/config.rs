//! The plugin's config: virtual keys with budgets, prices, the budget period; validated with
//! errors naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::{Result, config_error};

/// Longest budget period: 366 days.
pub const MAX_PERIOD_SECONDS: u64 = 366 * 86_400;

/// The plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Header holding the virtual key (lower-cased when validated).
    #[serde(default = "default_header")]
    pub header: String,
    /// Whether requests without a known virtual key are refused (401); otherwise they pass
    /// untracked.
    #[serde(default = "default_true")]
    pub require_known_keys: bool,
    /// The virtual keys and their budgets.
    pub keys: BTreeMap<String, KeyBudget>,
    /// Prices by `provider/model`, `provider/*` or `*`.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Budgets start again from zero every `period_seconds` (fixed periods aligned to the Unix
    /// epoch); none: they never reset.
    #[serde(default)]
    pub period_seconds: Option<u64>,
    /// What a key with a spend budget may do with a model that has no price.
    #[serde(default)]
    pub unpriced: Unpriced,
    /// Whether successful responses get an `x_wasmgate_budget` field.
    #[serde(default = "default_true")]
    pub report: bool,
}

fn default_header() -> String {
    "x-wasmgate-vk".into()
}

fn default_true() -> bool {
    true
}

/// The budget of one virtual key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBudget {
    /// A name for logs and reports (the key itself is never shown).
    #[serde(default)]
    pub name: Option<String>,
    /// Tokens (prompt + completion) per period.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Spend per period, in millionths of a dollar.
    #[serde(default)]
    pub max_spend_micros: Option<u64>,
}

/// The price of a model, per 1,000 tokens, in millionths of a dollar.
///
/// One micro-dollar per 1,000 tokens is one nano-dollar per token, so the cost of a request in
/// nano-dollars is an exact integer: `prompt_tokens * prompt_per_1k_micros + completion_tokens *
/// completion_per_1k_micros`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Price of 1,000 prompt tokens.
    pub prompt_per_1k_micros: u64,
    /// Price of 1,000 completion tokens.
    pub completion_per_1k_micros: u64,
}

/// What a key with a spend budget may do with a model that has no price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unpriced {
    /// Refuse the request (400, fallbacks allowed: another target may have a price).
    #[default]
    Reject,
    /// Let it through; it costs nothing (its tokens still count).
    Free,
}

impl Config {
    /// Parses and validates the JSON config.
    pub fn parse(config: &str) -> Result<Self> {
        let mut config: Config = wasmgate_sdk::parse_config(config)?;
        config.header = header_name(&config.header).map_err(|e| config_error("header", e))?;
        if config.keys.is_empty() {
            return Err(config_error("keys", "must list at least one virtual key"));
        }
        for (key, budget) in &config.keys {
            let field = |name: &str| format!("keys.{key}.{name}");
            if key.trim().is_empty() {
                return Err(config_error("keys", "a virtual key must not be empty"));
            }
            if budget.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(config_error(&field("name"), "must not be empty"));
            }
            for (name, limit) in [
                ("max_tokens", budget.max_tokens),
                ("max_spend_micros", budget.max_spend_micros),
            ] {
                if limit == Some(0) {
                    return Err(config_error(&field(name), "must be at least 1"));
                }
            }
            if budget.max_spend_micros.is_some()
                && config.prices.is_empty()
                && config.unpriced == Unpriced::Reject
            {
                return Err(config_error(
                    "prices",
                    format!(
                        "must price at least one model: keys.{key} has a spend budget (or set \
                         `unpriced` to `free`)"
                    ),
                ));
            }
        }
        for target in config.prices.keys() {
            if !is_price_target(target) {
                return Err(config_error(
                    &format!("prices.{target}"),
                    "must be `provider/model`, `provider/*` or `*`",
                ));
            }
        }
        if let Some(p) = config.period_seconds
            && !(1..=MAX_PERIOD_SECONDS).contains(&p)
        {
            return Err(config_error(
                "period_seconds",
                format!("must be 1..={MAX_PERIOD_SECONDS}, got {p}"),
            ));
        }
        Ok(config)
    }

    /// The price of `target` (`provider/model`): its own, else its provider's (`provider/*`),
    /// else the default (`*`).
    pub fn price(&self, target: &str) -> Option<Price> {
        let provider = target.split_once('/').map_or(target, |(p, _)| p);
        self.prices
            .get(target)
            .or_else(|| self.prices.get(&format!("{provider}/*")))
            .or_else(|| self.prices.get("*"))
            .copied()
    }
}

/// `provider/model` (both non-empty), `provider/*` or `*`.
fn is_price_target(target: &str) -> bool {
    target == "*"
        || target
            .split_once('/')
            .is_some_and(|(p, m)| !p.is_empty() && !m.is_empty() && !p.contains('*'))
}

/// A checked, lower-cased HTTP header name.
fn header_name(name: &str) -> core::result::Result<String, String> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        Err("must not be empty".into())
    } else if let Some(c) = name.chars().find(|&c| !is_tchar(c)) {
        Err(format!("`{name}` is not a header name (character {c:?})"))
    } else {
        Ok(name.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: &str) -> String {
        match Config::parse(config) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    const PRICES: &str = r#""prices": {"mock/echo": {"prompt_per_1k_micros": 500, "completion_per_1k_micros": 1500}}"#;

    #[test]
    fn defaults() {
        let c = Config::parse(r#"{"keys": {"vk-a": {}}}"#).unwrap();
        assert_eq!(c.header, "x-wasmgate-vk");
        assert!(c.require_known_keys && c.report);
        assert_eq!(c.period_seconds, None);
        assert_eq!(c.unpriced, Unpriced::Reject);
        assert_eq!(c.keys["vk-a"], KeyBudget::default());
        let c = Config::parse(&format!(
            r#"{{"header": "X-Team-Key", "keys": {{"vk-a": {{"name": "team a", "max_tokens": 1000,
                "max_spend_micros": 5000000}}}}, {PRICES}, "period_seconds": 86400,
                "require_known_keys": false, "unpriced": "free", "report": false}}"#
        ))
        .unwrap();
        assert_eq!(c.header, "x-team-key");
        assert_eq!(c.keys["vk-a"].max_spend_micros, Some(5_000_000));
        assert_eq!(c.period_seconds, Some(86_400));
        assert_eq!(c.unpriced, Unpriced::Free);
    }

    #[test]
    fn prices_fall_back_from_model_to_provider_to_default() {
        let c = Config::parse(
            r#"{"keys": {"k": {}}, "prices": {
                "mock/echo": {"prompt_per_1k_micros": 1, "completion_per_1k_micros": 2},
                "mock/*": {"prompt_per_1k_micros": 3, "completion_per_1k_micros": 4},
                "*": {"prompt_per_1k_micros": 5, "completion_per_1k_micros": 6}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.price("mock/echo").map(|p| p.prompt_per_1k_micros),
            Some(1)
        );
        assert_eq!(
            c.price("mock/other").map(|p| p.prompt_per_1k_micros),
            Some(3)
        );
        assert_eq!(
            c.price("openai/gpt").map(|p| p.prompt_per_1k_micros),
            Some(5)
        );
        let c = Config::parse(&format!(r#"{{"keys": {{"k": {{}}}}, {PRICES}}}"#)).unwrap();
        assert_eq!(c.price("mock/other"), None);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err("{}"), "invalid config: missing field `keys`");
        assert_eq!(
            err(r#"{"keys": {}}"#),
            "invalid config: keys: must list at least one virtual key"
        );
        assert_eq!(
            err(r#"{"keys": {"": {}}}"#),
            "invalid config: keys: a virtual key must not be empty"
        );
        assert_eq!(
            err(r#"{"keys": {"vk-a": {"max_tokens": 0}}}"#),
            "invalid config: keys.vk-a.max_tokens: must be at least 1"
        );
        assert_eq!(
            err(r#"{"keys": {"vk-a": {"name": ""}}}"#),
            "invalid config: keys.vk-a.name: must not be empty"
        );
        assert_eq!(
            err(r#"{"keys": {"vk-a": {"max_tokens": -1}}}"#),
            "invalid config: keys.vk-a.max_tokens: invalid value: integer `-1`, expected u64"
        );
        let e = err(r#"{"keys": {"vk-a": {"budget": 1}}}"#);
        assert!(
            e.contains("keys.vk-a.budget: unknown field `budget`"),
            "{e}"
        );
        assert_eq!(
            err(r#"{"keys": {"vk-a": {"max_spend_micros": 10}}}"#),
            "invalid config: prices: must price at least one model: keys.vk-a has a spend \
             budget (or set `unpriced` to `free`)"
        );
        assert!(
            Config::parse(r#"{"keys": {"vk-a": {"max_spend_micros": 10}}, "unpriced": "free"}"#)
                .is_ok()
        );
        assert_eq!(
            err(
                r#"{"keys": {"k": {}}, "prices": {"echo": {"prompt_per_1k_micros": 1, "completion_per_1k_micros": 1}}}"#
            ),
            "invalid config: prices.echo: must be `provider/model`, `provider/*` or `*`"
        );
        assert_eq!(
            err(
                r#"{"keys": {"k": {}}, "prices": {"*/echo": {"prompt_per_1k_micros": 1, "completion_per_1k_micros": 1}}}"#
            ),
            "invalid config: prices.*/echo: must be `provider/model`, `provider/*` or `*`"
        );
        assert_eq!(
            err(r#"{"keys": {"k": {}}, "prices": {"mock/echo": {"prompt_per_1k_micros": 1}}}"#),
            "invalid config: prices.mock/echo: missing field `completion_per_1k_micros`"
        );
        assert_eq!(
            err(r#"{"keys": {"k": {}}, "period_seconds": 0}"#),
            "invalid config: period_seconds: must be 1..=31622400, got 0"
        );
        assert_eq!(
            err(r#"{"keys": {"k": {}}, "header": ""}"#),
            "invalid config: header: must not be empty"
        );
        assert!(
            err(r#"{"keys": {"k": {}}, "unpriced": "cheap"}"#)
                .starts_with("invalid config: unpriced: unknown variant `cheap`")
        );
    }
}
