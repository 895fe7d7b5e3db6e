//! `governance`: token and spend budgets per virtual key, kept in the plugin's kv store.
//!
//! Clients send a virtual key in a header (`x-wasmgate-vk` by default). The pre-hook refuses a
//! request without a known key (HTTP 401, unless `require_known_keys` is false, in which case it
//! passes untracked) and a request whose key has used up its token or spend budget for the
//! current period (HTTP 402, type `insufficient_quota`, code `budget_exceeded`, no fallbacks:
//! the budget belongs to the key, so another provider would not help). The post-hook charges the
//! response's usage to the key: its tokens, and its cost at the configured price of the model the
//! gateway sent it to (`gateway.target`), tracked exactly in nano-dollars; it adds
//! `x_wasmgate_budget` (used, limits, this request's cost, seconds to reset) to the body.
//! Budgets reset every `period_seconds` (fixed periods aligned to the Unix epoch), or never.
//! Counters live in the plugin's kv namespace: shared by all its instances, lost on restart.
//!
//! Config (unknown fields rejected):
//!
//! | field                         | type    | default           | meaning                                          |
//! |-------------------------------|---------|-------------------|--------------------------------------------------|
//! | `keys`                        | object  | (required)        | virtual key -> budget; at least one              |
//! | `keys.<key>.max_tokens`       | integer | none (unlimited)  | tokens per period, ≥ 1                           |
//! | `keys.<key>.max_spend_micros` | integer | none (unlimited)  | spend per period in millionths of a dollar, ≥ 1  |
//! | `keys.<key>.name`             | string  | none              | shown in messages, logs and reports instead of "this virtual key" |
//! | `prices`                      | object  | `{}`              | `provider/model`, `provider/*` or `*` -> price   |
//! | `prices.<target>.prompt_per_1k_micros` | integer | (required) | price of 1,000 prompt tokens, micro-dollars |
//! | `prices.<target>.completion_per_1k_micros` | integer | (required) | price of 1,000 completion tokens     |
//! | `period_seconds`              | integer | none (never reset) | budget period, 1..=31622400                     |
//! | `header`                      | string  | `"x-wasmgate-vk"` | header holding the virtual key                   |
//! | `require_known_keys`          | bool    | `true`            | refuse requests without a known key (401)        |
//! | `unpriced`                    | string  | `"reject"`        | a key with a spend budget and a model without a price: `reject` (400, fallbacks allowed) or `free` |
//! | `report`                      | bool    | `true`            | add `x_wasmgate_budget` to successful responses  |
//!
//! ```json
//! { "header": "x-wasmgate-vk",
//!   "keys": { "vk-team-a": { "name": "team-a", "max_tokens": 1000000, "max_spend_micros": 5000000 } },
//!   "prices": { "mock/echo": { "prompt_per_1k_micros": 500, "completion_per_1k_micros": 1500 } },
//!   "period_seconds": 86400 }
//! ```

pub mod budget;
pub mod config;

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{
    Ctx, GatewayError, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result, info, kv,
};

use budget::{Period, Refusal, Used};
pub use config::Config;

/// Field added to successful responses of tracked keys: a [`Report`].
pub const REPORT_FIELD: &str = "x_wasmgate_budget";

/// The gateway's context value naming the plugin that short-circuited the request, if any.
const SHORT_CIRCUIT: &str = "gateway.short_circuit";

/// The gateway's context value with the `provider/model` a request was sent to.
const TARGET: &str = "gateway.target";

/// The plugin. Between the pre-hook that let a tracked request through and its post-hook, the
/// request's context says whom to charge ([`PENDING`]), so any instance can serve either hook
/// (the plugin may run `"isolation": "shared"`).
#[derive(Debug)]
pub struct Governance {
    config: Config,
}

/// The request state (`<plugin name>.pending`) a pre-hook leaves for its post-hook: a
/// [`Pending`] when it let a tracked request through, nothing otherwise.
const PENDING: &str = "pending";

/// A tracked request waiting for its post-hook.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// The virtual key.
    key: String,
    /// The target as this plugin saw it (used if `gateway.target` is absent).
    target: String,
    /// `gateway.short_circuit` when the pre-hook let the request through.
    short_circuit_before: Option<String>,
}

/// What a successful response of a tracked key reports in `x_wasmgate_budget`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The key's configured `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tokens used this period, this request included.
    pub tokens_used: u64,
    /// The key's `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Spend this period in micro-dollars, this request included.
    pub spend_micros: f64,
    /// The key's `max_spend_micros`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_spend_micros: Option<u64>,
    /// What this request cost, in micro-dollars (0 for an answer no provider was paid for).
    pub cost_micros: f64,
    /// Seconds until the budgets reset; absent when they never do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_seconds: Option<u64>,
}

/// The integer counter under `key` (0 when absent).
fn read(key: &str) -> u64 {
    kv::get(key)
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Adds `delta` to the counter under `key` (creating it with `period`'s TTL) and returns the
/// new value; with a zero `delta`, only reads it.
fn add(key: &str, delta: u64, period: &Period) -> u64 {
    if delta == 0 {
        return read(key);
    }
    let delta = i64::try_from(delta).unwrap_or(i64::MAX);
    u64::try_from(kv::incr(key, delta, period.ttl())).unwrap_or(0)
}

/// Whether a response was answered by a plugin later in the chain (a cache hit, say) rather
/// than by the provider: `gateway.short_circuit` names a plugin now and did not when this
/// plugin's pre-hook ran (it is not cleared between fallback attempts, hence the comparison).
pub fn answered_by_later_plugin(before: Option<&str>, after: Option<&str>) -> bool {
    after.is_some() && after != before
}

/// The 401 for a request without a known virtual key.
pub fn unknown_key_error(header: &str, present: bool) -> GatewayError {
    let (message, code) = if present {
        (
            format!("the virtual key in the `{header}` header is not known"),
            "invalid_virtual_key",
        )
    } else {
        (
            format!("missing virtual key: send it in the `{header}` header"),
            "missing_virtual_key",
        )
    };
    GatewayError::new(401, message)
        .kind("authentication_error")
        .code(code)
        .no_fallbacks()
}

/// The error a refused request fails with. `name` is the key's configured name; `reset` the
/// seconds until the budgets reset (none: never).
pub fn refusal_error(refusal: &Refusal, name: Option<&str>, reset: Option<u64>) -> GatewayError {
    let who = match name {
        Some(name) => format!("virtual key `{name}`"),
        None => "this virtual key".to_owned(),
    };
    let when = match reset {
        Some(1) => "; the budget resets in 1 second".to_owned(),
        Some(s) => format!("; the budget resets in {s} seconds"),
        None => "; it does not reset: ask for a larger budget".to_owned(),
    };
    let exhausted = |message: String| {
        GatewayError::new(402, message)
            .kind("insufficient_quota")
            .code("budget_exceeded")
            .no_fallbacks()
    };
    match refusal {
        Refusal::Tokens { max, used } => exhausted(format!(
            "token budget exhausted: {who} has used {used} of its {max} tokens{when}"
        )),
        Refusal::Spend {
            max_micros,
            used_nanos,
        } => exhausted(format!(
            "spend budget exhausted: {who} has spent {} of its {}{when}",
            budget::dollars(*used_nanos),
            budget::dollars(max_micros.saturating_mul(1000)),
        )),
        Refusal::Unpriced { target } => GatewayError::new(
            400,
            format!(
                "no price is configured for `{target}` and {who} has a spend budget; use a \
                 priced model"
            ),
        )
        .kind("invalid_request_error")
        .code("model_not_priced")
        .allow_fallbacks(),
    }
}

impl Governance {
    /// The pre-hook's verdict on a request, and whom its post-hook charges (a tracked request
    /// let through).
    fn admit(&self, ctx: &Ctx, req: &Request<'_>) -> (PreOutcome, Option<Pending>) {
        let header = &self.config.header;
        let key = ctx
            .header(header)
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        let Some(budget) = key.as_ref().and_then(|k| self.config.keys.get(k)) else {
            if self.config.require_known_keys {
                return (
                    PreOutcome::Fail(unknown_key_error(header, key.is_some())),
                    None,
                );
            }
            return (PreOutcome::Pass, None);
        };
        let key = key.unwrap_or_default();
        let period = Period::at(wasmgate_sdk::now_ms(), self.config.period_seconds);
        let used = Used {
            tokens: read(&period.tokens_key(&key)),
            spend_nanos: read(&period.spend_key(&key)),
        };
        let target = req.target();
        let price = self.config.price(&target);
        if let Err(refusal) = budget::check(budget, used, &target, price, self.config.unpriced) {
            let error = refusal_error(&refusal, budget.name.as_deref(), period.reset_seconds());
            info!("{target} refused: {}", error.message);
            return (PreOutcome::Fail(error), None);
        }
        let pending = Pending {
            key,
            target,
            short_circuit_before: ctx.get(SHORT_CIRCUIT),
        };
        (PreOutcome::Pass, Some(pending))
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for Governance {
    /// What a later hook of a request needs is kept in the request's context
    /// (`Ctx::set_state`), never in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "governance".into()
    }

    fn init(config: &str) -> Result<Self> {
        Ok(Governance {
            config: Config::parse(config)?,
        })
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let (outcome, pending) = self.admit(ctx, req);
        match &pending {
            Some(pending) => ctx.set_state(PENDING, pending)?,
            // An earlier attempt's (a fallback's) charge must not be made again for this one.
            None => ctx.clear_state(PENDING),
        }
        Ok(outcome)
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        // An error, or refused or untracked: nothing was spent upstream.
        if outcome.is_error() {
            return Ok(None);
        }
        let Some(pending) = ctx.state::<Pending>(PENDING)? else {
            return Ok(None);
        };
        let Some(budget) = self.config.keys.get(&pending.key) else {
            return Ok(None);
        };
        let later = ctx.get(SHORT_CIRCUIT);
        let paid =
            !answered_by_later_plugin(pending.short_circuit_before.as_deref(), later.as_deref());
        let (tokens, cost) = match (outcome.usage(), paid) {
            (Some(usage), true) => {
                let target = ctx.get(TARGET).unwrap_or(pending.target);
                let cost = self.config.price(&target).map_or(0, |price| {
                    budget::cost_nanos(price, usage.prompt_tokens, usage.completion_tokens)
                });
                (u64::from(usage.total_tokens), cost)
            }
            _ => (0, 0),
        };
        let period = Period::at(wasmgate_sdk::now_ms(), self.config.period_seconds);
        let tokens_used = add(&period.tokens_key(&pending.key), tokens, &period);
        let spend_nanos = add(&period.spend_key(&pending.key), cost, &period);
        if !self.config.report {
            return Ok(None);
        }
        let PostOutcome::Response(mut resp) = outcome.to_outcome() else {
            return Ok(None);
        };
        {
            let report = Report {
                name: budget.name.clone(),
                tokens_used,
                max_tokens: budget.max_tokens,
                spend_micros: budget::micros(spend_nanos),
                max_spend_micros: budget.max_spend_micros,
                cost_micros: budget::micros(cost),
                reset_seconds: period.reset_seconds(),
            };
            resp.set_extra(REPORT_FIELD, report)?;
        }
        Ok(Some(PostOutcome::Response(resp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_keys_are_401_without_fallbacks_or_echo() {
        let e = unknown_key_error("x-wasmgate-vk", false);
        assert_eq!((e.status, e.allow_fallbacks), (401, Some(false)));
        assert_eq!(e.kind.as_deref(), Some("authentication_error"));
        assert_eq!(e.code.as_deref(), Some("missing_virtual_key"));
        assert_eq!(
            e.message,
            "missing virtual key: send it in the `x-wasmgate-vk` header"
        );
        let e = unknown_key_error("x-wasmgate-vk", true);
        assert_eq!(e.code.as_deref(), Some("invalid_virtual_key"));
        assert_eq!(
            e.message,
            "the virtual key in the `x-wasmgate-vk` header is not known"
        );
    }

    #[test]
    fn exhausted_budgets_are_402_without_fallbacks() {
        let e = refusal_error(
            &Refusal::Tokens {
                max: 1000,
                used: 1003,
            },
            Some("team-a"),
            Some(3600),
        );
        assert_eq!((e.status, e.allow_fallbacks), (402, Some(false)));
        assert_eq!(e.kind.as_deref(), Some("insufficient_quota"));
        assert_eq!(e.code.as_deref(), Some("budget_exceeded"));
        assert_eq!(
            e.message,
            "token budget exhausted: virtual key `team-a` has used 1003 of its 1000 tokens; the \
             budget resets in 3600 seconds"
        );
        let e = refusal_error(
            &Refusal::Spend {
                max_micros: 20_000,
                used_nanos: 27_000_000,
            },
            None,
            None,
        );
        assert_eq!(e.status, 402);
        assert_eq!(
            e.message,
            "spend budget exhausted: this virtual key has spent $0.027000 of its $0.020000; it \
             does not reset: ask for a larger budget"
        );
    }

    #[test]
    fn an_unpriced_model_is_a_client_error_that_may_fall_back() {
        let e = refusal_error(
            &Refusal::Unpriced {
                target: "mock/slow-5".into(),
            },
            None,
            Some(1),
        );
        assert_eq!((e.status, e.allow_fallbacks), (400, Some(true)));
        assert_eq!(e.code.as_deref(), Some("model_not_priced"));
        assert!(e.message.contains("`mock/slow-5`"), "{}", e.message);
    }

    #[test]
    fn only_a_new_short_circuit_means_a_later_plugin_answered() {
        assert!(!answered_by_later_plugin(None, None));
        assert!(answered_by_later_plugin(None, Some("cache")));
        assert!(!answered_by_later_plugin(Some("x"), Some("x")));
    }
}
