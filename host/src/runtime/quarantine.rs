//! Quarantine: after K consecutive failed calls of one hook (a pre-hook that traps on every
//! request, say, even if the plugin's other hooks succeed) a plugin is taken out of service for a backoff
//! period (doubling on each relapse), so a crashing plugin cannot burn CPU on every request.
//! While quarantined its hooks are not called at all; the pipeline applies the plugin's failure
//! policy (skip with `fail-open`, fail fast with `fail-closed`). When the backoff ends, the next
//! call is a trial: success ends the quarantine, failure starts a longer one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::hooks::Hook;

/// When a plugin is quarantined and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantinePolicy {
    /// Consecutive failed calls that trigger a quarantine; 0 disables quarantine.
    pub after_failures: u32,
    /// First backoff, in milliseconds.
    pub backoff_ms: u64,
    /// Longest backoff, in milliseconds (the backoff doubles on each relapse up to this).
    pub max_backoff_ms: u64,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        Self {
            after_failures: 5,
            backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }
}

/// Hooks counted separately (by [`Hook::index`]): init (instance creation), transport, pre,
/// post, stream-chunk, on-error, cleanup.
const HOOKS: usize = Hook::ALL.len();

#[derive(Debug, Default)]
struct State {
    consecutive: [u32; HOOKS],
    until: Option<Instant>,
    backoff: Option<Duration>,
    quarantines: u64,
}

/// The quarantine state of one loaded plugin.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    policy: QuarantinePolicy,
    state: Mutex<State>,
}

/// What the admin API shows of a plugin's quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuarantineStatus {
    /// Failed calls in a row right now.
    pub consecutive_failures: u32,
    /// Whether the plugin is quarantined now.
    pub quarantined: bool,
    /// Milliseconds until the trial call, when quarantined.
    pub retry_in_ms: Option<u64>,
    /// Quarantines so far.
    pub quarantines: u64,
}

impl Quarantine {
    pub(crate) fn new(policy: QuarantinePolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(why)` while quarantined; `Ok` when a call may go ahead (a trial, after a backoff).
    pub(crate) fn admit(&self) -> Result<(), String> {
        let state = self.lock();
        match state.until {
            Some(until) if Instant::now() < until => Err(format!(
                "is quarantined after {} consecutive failures; its hooks are skipped for another \
                 {} ms, then retried",
                state.consecutive.iter().max().copied().unwrap_or(0),
                until.saturating_duration_since(Instant::now()).as_millis()
            )),
            _ => Ok(()),
        }
    }

    /// Records the outcome of a call of hook number `hook` ([`Hook::index`]); returns the
    /// backoff when this failure starts a quarantine.
    pub(crate) fn record(&self, hook: usize, failed: bool) -> Option<Duration> {
        let hook = hook.min(HOOKS - 1);
        let k = self.policy.after_failures;
        let mut state = self.lock();
        if !failed {
            state.consecutive[hook] = 0;
            if state.until.is_some() && state.consecutive.iter().all(|&n| n < k) {
                // A good trial: the quarantine is over.
                state.until = None;
                state.backoff = None;
            }
            return None;
        }
        state.consecutive[hook] = state.consecutive[hook].saturating_add(1);
        let relapse = state.until.is_some();
        if k == 0 || (!relapse && state.consecutive[hook] < k) {
            return None;
        }
        let first = Duration::from_millis(self.policy.backoff_ms);
        let max = Duration::from_millis(self.policy.max_backoff_ms.max(self.policy.backoff_ms));
        let backoff = state.backoff.map_or(first, |b| (b * 2).min(max));
        state.backoff = Some(backoff);
        state.until = Some(Instant::now() + backoff);
        state.quarantines += 1;
        Some(backoff)
    }

    /// The state for the admin API.
    pub(crate) fn status(&self) -> QuarantineStatus {
        let state = self.lock();
        let now = Instant::now();
        let remaining = state.until.filter(|u| *u > now).map(|u| u - now);
        QuarantineStatus {
            consecutive_failures: state.consecutive.iter().max().copied().unwrap_or(0),
            quarantined: remaining.is_some(),
            retry_in_ms: remaining.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            quarantines: state.quarantines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantines_after_k_failures_and_backs_off_exponentially() {
        let q = Quarantine::new(QuarantinePolicy {
            after_failures: 3,
            backoff_ms: 60_000,
            max_backoff_ms: 100_000,
        });
        for _ in 0..2 {
            q.record(2, true);
            q.record(1, false);
            assert!(q.admit().is_ok());
        }
        q.record(2, true);
        assert!(
            q.admit().is_err(),
            "three pre-hook failures in a row, despite good transports"
        );
        assert_eq!(q.status().quarantines, 1);
        q.record(2, false);
        assert!(
            q.admit().is_ok(),
            "a good trial of the failing hook ends the quarantine"
        );
        assert_eq!(q.status().consecutive_failures, 0);
    }

    #[test]
    fn zero_disables_quarantine() {
        let q = Quarantine::new(QuarantinePolicy {
            after_failures: 0,
            ..QuarantinePolicy::default()
        });
        for _ in 0..100 {
            q.record(2, true);
        }
        assert!(q.admit().is_ok());
    }
}
