//! Retries of one upstream call: which failures are retried (429, 500, 502, 503, 504 and
//! connection failures), how long to wait (exponential backoff, or the upstream's
//! `Retry-After` when it sends one), and how many times. Once the retries are spent, the error
//! goes on to the request's fallbacks.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A provider's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 turns retrying off).
    pub max: u32,
    /// Wait before the first retry, in milliseconds; doubled for each next one.
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Longest `Retry-After` honoured, in milliseconds; an upstream asking for more is not
    /// retried (the error goes on to the fallbacks at once).
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max: 2,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
            max_retry_after_ms: 30_000,
        }
    }
}

/// Whether an upstream answer with `status` is worth another attempt.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

impl RetryConfig {
    /// The wait before retry number `retry` (0 for the first), or `None` when no retry should
    /// be made: retries spent, or a `Retry-After` longer than `max_retry_after_ms`.
    pub fn delay(&self, retry: u32, retry_after: Option<&str>) -> Option<Duration> {
        if retry >= self.max {
            return None;
        }
        if let Some(wait) = retry_after.and_then(parse_retry_after) {
            return (wait <= Duration::from_millis(self.max_retry_after_ms)).then_some(wait);
        }
        let backoff = self
            .initial_backoff_ms
            .saturating_mul(1u64.checked_shl(retry).unwrap_or(u64::MAX));
        Some(Duration::from_millis(backoff.min(self.max_backoff_ms)))
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past
/// means now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_stops_after_max() {
        let policy = RetryConfig {
            max: 4,
            initial_backoff_ms: 100,
            max_backoff_ms: 300,
            max_retry_after_ms: 1_000,
        };
        let waits: Vec<_> = (0..5).map(|r| policy.delay(r, None)).collect();
        assert_eq!(
            waits,
            [
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(300)),
                Some(Duration::from_millis(300)),
                None
            ]
        );
    }

    #[test]
    fn retry_after_wins_unless_it_is_too_long() {
        let policy = RetryConfig {
            max_retry_after_ms: 5_000,
            ..RetryConfig::default()
        };
        assert_eq!(policy.delay(0, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            policy.delay(0, Some("60")),
            None,
            "over the cap: go to fallbacks"
        );
        // An unreadable value falls back to the backoff.
        assert_eq!(
            policy.delay(0, Some("soon")),
            Some(Duration::from_millis(200))
        );
        let off = RetryConfig {
            max: 0,
            ..RetryConfig::default()
        };
        assert_eq!(off.delay(0, Some("1")), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a past date means now"
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("tomorrow"), None);
    }

    #[test]
    fn only_rate_limits_and_server_errors_are_retried() {
        for status in [429, 500, 502, 503, 504] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 422, 501] {
            assert!(!retryable_status(status), "{status}");
        }
    }
}
