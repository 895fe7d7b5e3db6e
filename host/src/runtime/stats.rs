//! Live counters of a loaded plugin: calls, failures by kind, fuel, and a lock-free latency
//! histogram for the mean and p99 of hook calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::failure::FailureKind;

/// Every failure kind, in the order of [`PluginStats::failures`].
const KINDS: [FailureKind; 9] = [
    FailureKind::GuestError,
    FailureKind::InvalidOutput,
    FailureKind::OutputTooLarge,
    FailureKind::OutOfFuel,
    FailureKind::Deadline,
    FailureKind::MemoryLimit,
    FailureKind::StackOverflow,
    FailureKind::Trap,
    FailureKind::Instantiate,
];

/// Histogram buckets: four per power of two of nanoseconds (≤ 19 % relative error).
const BUCKETS: usize = 4 * 40;

fn bucket(ns: u64) -> usize {
    if ns < 4 {
        return usize::try_from(ns).unwrap_or(0);
    }
    let power = 63 - ns.leading_zeros() as usize;
    let sub = usize::try_from((ns >> (power - 2)) & 3).unwrap_or(0);
    (power * 4 + sub).min(BUCKETS - 1)
}

/// The largest value that falls in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    // Values below 4 have their own buckets 0..4; buckets 4..8 stay empty.
    if i < 8 {
        return i.min(3) as u64;
    }
    if i >= BUCKETS - 1 {
        return u64::MAX;
    }
    let (power, sub) = (i / 4, (i % 4) as u64);
    ((5 + sub) << (power - 2)) - 1
}

/// Counters updated on every hook call, without locks.
#[derive(Debug)]
pub struct PluginStats {
    calls: AtomicU64,
    failures: [AtomicU64; KINDS.len()],
    busy_nanos: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    fuel_used: AtomicU64,
    pub(super) instances_created: AtomicU64,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
            busy_nanos: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            fuel_used: AtomicU64::new(0),
            instances_created: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`PluginStats`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Hook calls made (init and cleanup included).
    pub calls: u64,
    /// Calls that returned `err`.
    pub guest_errors: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls stopped by fuel, deadline, memory or stack limits.
    pub limit_hits: u64,
    /// Failed calls by kind (`plugin_out_of_fuel`, `plugin_trap`, ...).
    pub failures: BTreeMap<&'static str, u64>,
    /// Mean wall-clock time of a call, in microseconds.
    pub mean_call_us: f64,
    /// 99th percentile of the wall-clock time of a call, in microseconds (histogram upper
    /// bound, within 19 %).
    pub p99_call_us: f64,
    /// Fuel burned by all calls.
    pub fuel_used: u64,
    /// Instances created (each ran `init` once).
    pub instances_created: u64,
}

impl PluginStats {
    /// Records one call.
    pub(super) fn record(&self, elapsed: Duration, fuel: u64, failure: Option<FailureKind>) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.busy_nanos.fetch_add(ns, Ordering::Relaxed);
        self.latency[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.fuel_used.fetch_add(fuel, Ordering::Relaxed);
        if let Some(kind) = failure
            && let Some(i) = KINDS.iter().position(|k| *k == kind)
        {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn failed(&self, kind: FailureKind) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.failures[i].load(Ordering::Relaxed))
    }

    fn p99_ns(&self) -> u64 {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let target = total - total / 100;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= target {
                return upper_bound(i);
            }
        }
        upper_bound(BUCKETS - 1)
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        let busy = self.busy_nanos.load(Ordering::Relaxed);
        StatsSnapshot {
            calls,
            guest_errors: self.failed(FailureKind::GuestError),
            traps: self.failed(FailureKind::Trap),
            limit_hits: [
                FailureKind::OutOfFuel,
                FailureKind::Deadline,
                FailureKind::MemoryLimit,
                FailureKind::StackOverflow,
            ]
            .into_iter()
            .map(|k| self.failed(k))
            .sum(),
            failures: KINDS
                .iter()
                .map(|k| (k.code(), self.failed(*k)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            mean_call_us: if calls == 0 {
                0.0
            } else {
                busy as f64 / calls as f64 / 1000.0
            },
            p99_call_us: self.p99_ns() as f64 / 1000.0,
            fuel_used: self.fuel_used.load(Ordering::Relaxed),
            instances_created: self.instances_created.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_tightly() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            1_000,
            12_345,
            1 << 30,
            u64::MAX / 4,
        ] {
            let i = bucket(ns);
            assert!(
                upper_bound(i) >= ns,
                "{ns} in bucket {i} bounded by {}",
                upper_bound(i)
            );
            if i > 0 {
                assert!(upper_bound(i - 1) < ns, "{ns} belongs to no lower bucket");
            }
        }
    }

    #[test]
    fn p99_and_failures_by_kind() {
        let stats = PluginStats::default();
        for _ in 0..99 {
            stats.record(Duration::from_micros(10), 5, None);
        }
        stats.record(Duration::from_millis(10), 5, Some(FailureKind::OutOfFuel));
        let snap = stats.snapshot();
        assert_eq!(snap.calls, 100);
        assert_eq!(snap.limit_hits, 1);
        assert_eq!(snap.failures.get("plugin_out_of_fuel"), Some(&1));
        assert!(
            snap.p99_call_us >= 10.0 && snap.p99_call_us < 12.0,
            "{snap:?}"
        );
        assert_eq!(snap.fuel_used, 500);
    }
}
