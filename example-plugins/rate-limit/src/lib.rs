//! `rate-limit`: limits requests and tokens per fixed time window, per virtual key, header value,
//! model, provider, end user or globally.
//!
//! Each rule counts requests and/or tokens in a bucket per key (the value of its key sources for
//! the request) and per fixed window (`window_seconds`, aligned to the Unix epoch). The pre-hook
//! counts the request against every rule; a request over a rule's `requests`, or arriving when
//! the bucket has already used its `tokens` in this window, fails with HTTP 429, type
//! `rate_limit_error`, code `rate_limit_exceeded`, a `retry-after` header (seconds until the
//! window ends) and `x-ratelimit-*` headers. Fallbacks are allowed: the next target goes through
//! the pre-hooks again, and may be in another bucket (a rule keyed by `provider` or `model`). The
//! post-hook adds the response's `usage.total_tokens` to the token counters, and adds
//! `x_wasmgate_ratelimit` (each rule's limits, what remains, seconds to reset) to the body.
//! Counters live in the plugin's kv namespace: shared by all its instances, lost on restart.
//!
//! Config (unknown fields rejected):
//!
//! | field                  | type                    | default           | meaning                                           |
//! |------------------------|-------------------------|-------------------|---------------------------------------------------|
//! | `rules`                | list of rules           | (required)        | at least one; a request must pass every rule      |
//! | `rules[].key`          | string or list of them  | (required)        | `global`, `virtual-key`, `model`, `provider`, `user`, `header:<name>`; a list counts per combination |
//! | `rules[].requests`     | integer                 | none              | requests per bucket and window, ≥ 1               |
//! | `rules[].tokens`       | integer                 | none              | total tokens per bucket and window, ≥ 1           |
//! | `rules[].window_seconds` | integer               | `60`              | window length, 1..=2592000 (30 days)              |
//! | `rules[].missing`      | string                  | `"anonymous"`     | a key source without value: `anonymous` (one shared bucket), `skip` (rule does not apply), `reject` (400) |
//! | `rules[].name`         | string                  | the key, e.g. `virtual-key+model` | unique; in messages and reports   |
//! | `virtual_key_header`   | string                  | `"x-wasmgate-vk"` | header holding the virtual key                    |
//! | `report`               | bool                    | `true`            | add `x_wasmgate_ratelimit` to successful responses |
//!
//! Each rule needs `requests`, `tokens` or both.
//!
//! ```json
//! { "rules": [
//!     { "key": "virtual-key", "requests": 100, "tokens": 10000, "window_seconds": 60 },
//!     { "key": "provider", "requests": 1000, "window_seconds": 60, "name": "upstream" }
//! ] }
//! ```

pub mod config;
pub mod limiter;

use std::collections::BTreeMap;
use std::time::Duration;

use wasmgate_sdk::{
    Ctx, GatewayError, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result, info, kv,
};

pub use config::Settings;
use limiter::{Admitted, Counters, Limit, Rejection, RequestKeys};

/// Field added to successful responses: rule name -> [`limiter::RuleStatus`].
pub const REPORT_FIELD: &str = "x_wasmgate_ratelimit";

/// The gateway's context value naming the plugin that short-circuited the request, if any.
const SHORT_CIRCUIT: &str = "gateway.short_circuit";

/// The limiter. Between the pre-hook that let a request through and its post-hook, the
/// request's buckets wait in its context ([`PENDING`]), so any instance can serve either hook
/// (the plugin may run `"isolation": "shared"`).
#[derive(Debug)]
pub struct RateLimit {
    settings: Settings,
}

/// The request state (`<plugin name>.pending`) a pre-hook leaves for its post-hook: a
/// [`Pending`] when it let the request through, nothing when it rejected it.
const PENDING: &str = "pending";

/// A request this plugin let through, waiting for its post-hook.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pending {
    /// The buckets the request counts in.
    admitted: Vec<Admitted>,
    /// `gateway.short_circuit` when the pre-hook let the request through.
    short_circuit_before: Option<String>,
}

/// The plugin's kv namespace as [`Counters`].
struct Kv;

impl Counters for Kv {
    fn get(&mut self, key: &str) -> i64 {
        kv::get(key)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn incr(&mut self, key: &str, delta: i64, ttl: Duration) -> i64 {
        kv::incr(key, delta, Some(ttl))
    }
}

/// Whether a response was answered by a plugin later in the chain (a cache hit, say) rather
/// than by the provider: `gateway.short_circuit` names a plugin now and did not when this
/// plugin's pre-hook ran (it is not cleared between fallback attempts, hence the comparison).
pub fn answered_by_later_plugin(before: Option<&str>, after: Option<&str>) -> bool {
    after.is_some() && after != before
}

/// `1 second`, `60 seconds`.
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".into()
    } else {
        format!("{n} seconds")
    }
}

/// The error a rejected request fails with.
pub fn rejection_error(rejection: &Rejection) -> GatewayError {
    match rejection {
        Rejection::MissingKey { rule, what } => GatewayError::new(
            400,
            format!("rate limit rule `{rule}` needs {what}; send it with the request"),
        )
        .kind("invalid_request_error")
        .code("missing_rate_limit_key")
        .no_fallbacks(),
        Rejection::Limited {
            rule,
            limit,
            max,
            used,
            window_seconds,
            reset_seconds,
        } => {
            let (unit, message) = match limit {
                Limit::Requests => (
                    "requests",
                    format!(
                        "rate limit exceeded: rule `{rule}` allows {max} requests per {}; \
                         retry in {}",
                        seconds(*window_seconds),
                        seconds(*reset_seconds)
                    ),
                ),
                Limit::Tokens => (
                    "tokens",
                    format!(
                        "token rate limit exceeded: rule `{rule}` allows {max} tokens per {} and \
                         {used} have been used; retry in {}",
                        seconds(*window_seconds),
                        seconds(*reset_seconds)
                    ),
                ),
            };
            GatewayError::new(429, message)
                .kind("rate_limit_error")
                .code("rate_limit_exceeded")
                .allow_fallbacks()
                .header("retry-after", reset_seconds.to_string())
                .header(format!("x-ratelimit-limit-{unit}"), max.to_string())
                .header(
                    format!("x-ratelimit-remaining-{unit}"),
                    max.saturating_sub(*used).to_string(),
                )
                .header(
                    format!("x-ratelimit-reset-{unit}"),
                    format!("{reset_seconds}s"),
                )
        }
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for RateLimit {
    /// What a later hook of a request needs is kept in the request's context
    /// (`Ctx::set_state`), never in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "rate-limit".into()
    }

    fn init(config: &str) -> Result<Self> {
        Ok(RateLimit {
            settings: Settings::parse(config)?,
        })
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let header = |name: &str| ctx.header(name);
        let keys = RequestKeys {
            provider: req.provider(),
            model: req.model(),
            user: req.user(),
            header: &header,
        };
        match limiter::admit(&self.settings, &mut Kv, wasmgate_sdk::now_ms(), &keys) {
            Ok(admitted) => {
                let pending = Pending {
                    admitted,
                    short_circuit_before: ctx.get(SHORT_CIRCUIT),
                };
                ctx.set_state(PENDING, &pending)?;
                Ok(PreOutcome::Pass)
            }
            Err(rejection) => {
                // An earlier attempt's (a fallback's) buckets must not be charged for this one.
                ctx.clear_state(PENDING);
                let error = rejection_error(&rejection);
                info!("{} rejected: {}", req.target(), error.message);
                Ok(PreOutcome::Fail(error))
            }
        }
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        // Rejected by this plugin, or an error: no tokens were spent upstream.
        if outcome.is_error() {
            return Ok(None);
        }
        let Some(pending) = ctx.state::<Pending>(PENDING)? else {
            return Ok(None);
        };
        let later = ctx.get(SHORT_CIRCUIT);
        let tokens = if answered_by_later_plugin(
            pending.short_circuit_before.as_deref(),
            later.as_deref(),
        ) {
            0
        } else {
            outcome.usage().map_or(0, |u| u64::from(u.total_tokens))
        };
        let statuses = limiter::charge(
            &self.settings,
            &mut Kv,
            wasmgate_sdk::now_ms(),
            &pending.admitted,
            tokens,
        );
        if !self.settings.report || statuses.is_empty() {
            return Ok(None);
        }
        let report: BTreeMap<_, _> = statuses.into_iter().collect();
        // Set where it lies: the response is not copied in and back.
        outcome.set_extra(REPORT_FIELD, report)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'e>(e: &'e GatewayError, name: &str) -> Option<&'e str> {
        e.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_limits_fail_with_429_retry_after_and_fallbacks_allowed() {
        let e = rejection_error(&Rejection::Limited {
            rule: "per-key".into(),
            limit: Limit::Requests,
            max: 100,
            used: 100,
            window_seconds: 60,
            reset_seconds: 42,
        });
        assert_eq!(e.status, 429);
        assert_eq!(e.kind.as_deref(), Some("rate_limit_error"));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.allow_fallbacks, Some(true));
        assert_eq!(
            e.message,
            "rate limit exceeded: rule `per-key` allows 100 requests per 60 seconds; retry in 42 seconds"
        );
        assert_eq!(header(&e, "retry-after"), Some("42"));
        assert_eq!(header(&e, "x-ratelimit-limit-requests"), Some("100"));
        assert_eq!(header(&e, "x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(header(&e, "x-ratelimit-reset-requests"), Some("42s"));
    }

    #[test]
    fn token_limits_say_how_many_were_used() {
        let e = rejection_error(&Rejection::Limited {
            rule: "t".into(),
            limit: Limit::Tokens,
            max: 10,
            used: 14,
            window_seconds: 1,
            reset_seconds: 1,
        });
        assert_eq!(
            e.message,
            "token rate limit exceeded: rule `t` allows 10 tokens per 1 second and 14 have been \
             used; retry in 1 second"
        );
        assert_eq!(header(&e, "x-ratelimit-limit-tokens"), Some("10"));
        assert_eq!(header(&e, "x-ratelimit-remaining-tokens"), Some("0"));
        assert_eq!(header(&e, "retry-after"), Some("1"));
    }

    #[test]
    fn a_missing_key_is_a_client_error_without_fallbacks() {
        let e = rejection_error(&Rejection::MissingKey {
            rule: "r".into(),
            what: "the `x-api-key` header".into(),
        });
        assert_eq!((e.status, e.allow_fallbacks), (400, Some(false)));
        assert_eq!(e.code.as_deref(), Some("missing_rate_limit_key"));
        assert_eq!(
            e.message,
            "rate limit rule `r` needs the `x-api-key` header; send it with the request"
        );
    }

    #[test]
    fn only_a_new_short_circuit_means_a_later_plugin_answered() {
        assert!(!answered_by_later_plugin(None, None));
        assert!(answered_by_later_plugin(None, Some("cache")));
        assert!(
            !answered_by_later_plugin(Some("rate-limit"), Some("rate-limit")),
            "left over from an earlier attempt"
        );
        assert!(answered_by_later_plugin(Some("rate-limit"), Some("cache")));
    }
}
