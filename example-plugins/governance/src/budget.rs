//! Budget arithmetic, free of host calls: periods, costs, the over-budget check, kv keys.

use std::time::Duration;

use crate::config::{KeyBudget, Price, Unpriced};

/// The budget period a moment falls in: the `index`-th stretch of `period_seconds` since the
/// Unix epoch, or the single everlasting period when budgets never reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// `now / period length`; none when budgets never reset.
    pub index: Option<u64>,
    /// Milliseconds from now to the end of the period (at least 1); none when it never ends.
    pub remaining_ms: Option<u64>,
}

impl Period {
    /// The period containing `now_ms` for budgets resetting every `seconds` (none: never).
    pub fn at(now_ms: u64, seconds: Option<u64>) -> Self {
        match seconds {
            None => Period {
                index: None,
                remaining_ms: None,
            },
            Some(seconds) => {
                let len = seconds.saturating_mul(1000).max(1);
                let index = now_ms / len;
                let end = index.saturating_add(1).saturating_mul(len);
                Period {
                    index: Some(index),
                    remaining_ms: Some(end.saturating_sub(now_ms).max(1)),
                }
            }
        }
    }

    /// How long the period's counters must live: until it ends (none: forever).
    pub fn ttl(&self) -> Option<Duration> {
        self.remaining_ms.map(Duration::from_millis)
    }

    /// Whole seconds until the budgets reset, rounded up; none when they never do.
    pub fn reset_seconds(&self) -> Option<u64> {
        self.remaining_ms.map(|ms| ms.div_ceil(1000).max(1))
    }

    /// The kv key of a virtual key's token counter in this period.
    pub fn tokens_key(&self, virtual_key: &str) -> String {
        self.key("tokens", virtual_key)
    }

    /// The kv key of a virtual key's spend counter (nano-dollars) in this period.
    pub fn spend_key(&self, virtual_key: &str) -> String {
        self.key("spend", virtual_key)
    }

    /// `<what>:<period index or "all">:<virtual key>`: the virtual key comes last and the period
    /// has no `:`, so two different (key, period) pairs never share a kv key.
    fn key(&self, what: &str, virtual_key: &str) -> String {
        match self.index {
            Some(i) => format!("{what}:{i}:{virtual_key}"),
            None => format!("{what}:all:{virtual_key}"),
        }
    }
}

/// What a virtual key has used in the current period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    /// Tokens, prompt and completion.
    pub tokens: u64,
    /// Spend in nano-dollars (thousandths of a micro-dollar).
    pub spend_nanos: u64,
}

/// The cost of a completion in nano-dollars: exact, since a price per 1,000 tokens in
/// micro-dollars is a price per token in nano-dollars. Saturates instead of overflowing.
pub fn cost_nanos(price: Price, prompt_tokens: u32, completion_tokens: u32) -> u64 {
    let cost = u128::from(prompt_tokens) * u128::from(price.prompt_per_1k_micros)
        + u128::from(completion_tokens) * u128::from(price.completion_per_1k_micros);
    u64::try_from(cost).unwrap_or(u64::MAX)
}

/// Why a request of a known virtual key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token budget is used up.
    Tokens {
        /// `max_tokens`.
        max: u64,
        /// Tokens used this period.
        used: u64,
    },
    /// The spend budget is used up.
    Spend {
        /// `max_spend_micros`.
        max_micros: u64,
        /// Spend this period, in nano-dollars.
        used_nanos: u64,
    },
    /// The key has a spend budget and the target has no price (`unpriced: reject`).
    Unpriced {
        /// The `provider/model` without a price.
        target: String,
    },
}

/// Whether a request of a key with `budget`, which has `used` this much, may go to `target`
/// (whose price is `price`). A budget is exhausted once usage reaches it; the request that takes
/// usage past it is let through (its cost is known only afterwards).
pub fn check(
    budget: &KeyBudget,
    used: Used,
    target: &str,
    price: Option<Price>,
    unpriced: Unpriced,
) -> Result<(), Refusal> {
    if let Some(max) = budget.max_tokens
        && used.tokens >= max
    {
        return Err(Refusal::Tokens {
            max,
            used: used.tokens,
        });
    }
    if let Some(max_micros) = budget.max_spend_micros {
        if u128::from(used.spend_nanos) >= u128::from(max_micros) * 1000 {
            return Err(Refusal::Spend {
                max_micros,
                used_nanos: used.spend_nanos,
            });
        }
        if price.is_none() && unpriced == Unpriced::Reject {
            return Err(Refusal::Unpriced {
                target: target.to_owned(),
            });
        }
    }
    Ok(())
}

/// Nano-dollars as dollars with six decimals (rounded down to the micro-dollar): `$0.027500`.
pub fn dollars(nanos: u64) -> String {
    let micros = nanos / 1000;
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Nano-dollars as micro-dollars, for reports (`5.5`); exact below 2^53 nano-dollars (about
/// nine million dollars).
pub fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price {
        prompt_per_1k_micros: 500,
        completion_per_1k_micros: 1500,
    };

    #[test]
    fn periods_are_aligned_to_the_epoch_or_never_end() {
        let day = Some(86_400);
        let p = Period::at(86_400_000 + 1_500, day);
        assert_eq!(p.index, Some(1));
        assert_eq!(p.remaining_ms, Some(86_400_000 - 1_500));
        assert_eq!(p.reset_seconds(), Some(86_399), "rounded up");
        assert_eq!(p.ttl(), Some(Duration::from_millis(86_398_500)));
        assert_eq!(Period::at(2 * 86_400_000 - 1, day).reset_seconds(), Some(1));
        assert_eq!(Period::at(2 * 86_400_000, day).index, Some(2));
        let forever = Period::at(123, None);
        assert_eq!((forever.ttl(), forever.reset_seconds()), (None, None));
        assert_eq!(
            Period::at(u64::MAX, Some(1)).remaining_ms,
            Some(1),
            "no overflow"
        );
    }

    #[test]
    fn kv_keys_separate_periods_and_keys() {
        let p = Period::at(86_400_000, Some(86_400));
        assert_eq!(p.tokens_key("vk-a"), "tokens:1:vk-a");
        assert_eq!(p.spend_key("vk-a"), "spend:1:vk-a");
        assert_eq!(Period::at(0, None).spend_key("a:b"), "spend:all:a:b");
    }

    #[test]
    fn cost_is_exact_in_nano_dollars() {
        // 5 prompt tokens at $0.0005/1K and 2 completion tokens at $0.0015/1K.
        assert_eq!(cost_nanos(PRICE, 5, 2), 5 * 500 + 2 * 1500);
        assert_eq!(
            cost_nanos(PRICE, 1000, 0),
            500_000,
            "1K prompt tokens cost 500 micros"
        );
        let huge = Price {
            prompt_per_1k_micros: u64::MAX,
            completion_per_1k_micros: u64::MAX,
        };
        assert_eq!(cost_nanos(huge, u32::MAX, u32::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn budgets_are_exhausted_once_reached() {
        let budget = KeyBudget {
            name: None,
            max_tokens: Some(100),
            max_spend_micros: Some(10),
        };
        let ok = |tokens, spend_nanos| {
            check(
                &budget,
                Used {
                    tokens,
                    spend_nanos,
                },
                "mock/echo",
                Some(PRICE),
                Unpriced::Reject,
            )
        };
        assert_eq!(ok(99, 9_999), Ok(()));
        assert_eq!(
            ok(100, 0),
            Err(Refusal::Tokens {
                max: 100,
                used: 100
            })
        );
        assert_eq!(
            ok(0, 10_000),
            Err(Refusal::Spend {
                max_micros: 10,
                used_nanos: 10_000
            })
        );
    }

    #[test]
    fn unpriced_models_are_refused_only_for_spend_budgets() {
        let spend = KeyBudget {
            max_spend_micros: Some(10),
            ..KeyBudget::default()
        };
        let tokens_only = KeyBudget {
            max_tokens: Some(10),
            ..KeyBudget::default()
        };
        let used = Used::default();
        assert_eq!(
            check(&spend, used, "mock/x", None, Unpriced::Reject),
            Err(Refusal::Unpriced {
                target: "mock/x".into()
            })
        );
        assert_eq!(check(&spend, used, "mock/x", None, Unpriced::Free), Ok(()));
        assert_eq!(
            check(&tokens_only, used, "mock/x", None, Unpriced::Reject),
            Ok(())
        );
        assert_eq!(
            check(
                &KeyBudget::default(),
                used,
                "mock/x",
                None,
                Unpriced::Reject
            ),
            Ok(())
        );
    }

    #[test]
    fn money_is_shown_in_dollars_and_micros() {
        assert_eq!(dollars(0), "$0.000000");
        assert_eq!(dollars(5_500), "$0.000005");
        assert_eq!(dollars(27_500_000), "$0.027500");
        assert_eq!(dollars(12_345_678_000_000), "$12345.678000");
        assert!((micros(5_500) - 5.5).abs() < f64::EPSILON);
    }
}
