//! Live counters of a loaded plugin, kept per hook: calls, failures by kind, fuel,
//! short-circuits, and a lock-free latency histogram. The admin API reads them as totals (with
//! the mean and p99 of a call) and per hook; `/metrics` reads the same counters at scrape time,
//! so the two always agree. They start at zero with each loaded version of a plugin.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::failure::FailureKind;
use crate::hooks::Hook;

/// Every failure kind a call can end in, in the order of `HookStats::failures`.
const KINDS: [FailureKind; 10] = [
    FailureKind::GuestError,
    FailureKind::InvalidOutput,
    FailureKind::OutputTooLarge,
    FailureKind::OutOfFuel,
    FailureKind::Deadline,
    FailureKind::MemoryLimit,
    FailureKind::StackOverflow,
    FailureKind::Trap,
    FailureKind::Instantiate,
    FailureKind::Capacity,
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

/// Hooks counted separately, indexed by [`Hook::index`].
const HOOKS: usize = Hook::ALL.len();

/// The exported latency buckets are powers of two of nanoseconds, from 2^`FIRST_POWER` ns
/// (about 1 µs) to 2^`LAST_POWER` ns (about 17 s): each is the union of four internal buckets,
/// so the cumulative counts are exact.
const FIRST_POWER: usize = 10;
const LAST_POWER: usize = 34;

/// The counters of one hook of a plugin.
#[derive(Debug)]
struct HookStats {
    calls: AtomicU64,
    failures: [AtomicU64; KINDS.len()],
    busy_nanos: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    fuel_used: AtomicU64,
    short_circuits: AtomicU64,
}

impl Default for HookStats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
            busy_nanos: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            fuel_used: AtomicU64::new(0),
            short_circuits: AtomicU64::new(0),
        }
    }
}

impl HookStats {
    fn failed(&self, kind: FailureKind) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.failures[i].load(Ordering::Relaxed))
    }

    fn latency_counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed))
    }

    fn snapshot(&self) -> HookSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        HookSnapshot {
            calls,
            failures: failures_by_code(|k| self.failed(k)),
            fuel_used: self.fuel_used.load(Ordering::Relaxed),
            short_circuits: self.short_circuits.load(Ordering::Relaxed),
            mean_call_us: mean_us(self.busy_nanos.load(Ordering::Relaxed), calls),
            p99_call_us: p99_ns(&self.latency_counts()) as f64 / 1000.0,
        }
    }
}

/// Counters updated on every hook call, without locks.
#[derive(Debug)]
pub struct PluginStats {
    hooks: [HookStats; HOOKS],
    pub(super) instances_created: AtomicU64,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self {
            hooks: std::array::from_fn(|_| HookStats::default()),
            instances_created: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`PluginStats`]: totals over every hook, and the counters of each.
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
    /// Requests this plugin short-circuited: its pre-hook answered or failed the request, or
    /// its transport interceptor answered it.
    pub short_circuits: u64,
    /// The counters of each hook called (or short-circuiting) at least once, by WIT hook name
    /// (`init`, `pre-hook`, ...).
    pub by_hook: BTreeMap<&'static str, HookSnapshot>,
}

/// A point-in-time copy of one hook's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HookSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Failed calls by kind (`plugin_out_of_fuel`, `plugin_trap`, ...); kinds never seen are
    /// left out.
    pub failures: BTreeMap<&'static str, u64>,
    /// Fuel burned by the calls.
    pub fuel_used: u64,
    /// Requests the hook short-circuited (pre-hook and transport interceptor only).
    pub short_circuits: u64,
    /// Mean wall-clock time of a call, in microseconds.
    pub mean_call_us: f64,
    /// 99th percentile of the wall-clock time of a call, in microseconds (within 19 %).
    pub p99_call_us: f64,
}

/// One hook's latency histogram in Prometheus form.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// Sum of the observed call durations, in seconds.
    pub sum_seconds: f64,
    /// Observations: the sum of every bucket.
    pub count: u64,
    /// `(upper bound in seconds, observations in this bucket alone)`, bounds increasing, the
    /// last `f64::INFINITY`. The bounds are powers of two of nanoseconds (2^10 ns ≈ 1 µs up to
    /// 2^34 ns ≈ 17 s); a bucket counts the calls strictly shorter than its bound and not
    /// shorter than the previous one.
    pub buckets: Vec<(f64, u64)>,
}

/// Failure counts by client-facing code, leaving out kinds never seen.
fn failures_by_code(failed: impl Fn(FailureKind) -> u64) -> BTreeMap<&'static str, u64> {
    KINDS
        .iter()
        .map(|k| (k.code(), failed(*k)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn mean_us(busy_nanos: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        busy_nanos as f64 / calls as f64 / 1000.0
    }
}

/// The 99th percentile (the upper bound of its bucket) of a histogram, in nanoseconds.
fn p99_ns(counts: &[u64; BUCKETS]) -> u64 {
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

/// Folds the internal buckets into the exported powers of two (see [`LatencyHistogram`]).
fn prometheus_buckets(counts: &[u64; BUCKETS]) -> Vec<(f64, u64)> {
    // Internal bucket `i` holds values in [2^(i/4), 2^(i/4 + 1)) ns for i ≥ 4, and the value i
    // below that, so the values under 2^p ns are exactly buckets 0..4p.
    let mut buckets = Vec::with_capacity(LAST_POWER - FIRST_POWER + 2);
    let mut from = 0;
    for power in FIRST_POWER..=LAST_POWER {
        let to = 4 * power;
        let bound = (1u64 << power) as f64 / 1e9;
        buckets.push((bound, counts[from..to].iter().sum()));
        from = to;
    }
    buckets.push((f64::INFINITY, counts[from..].iter().sum()));
    buckets
}

impl PluginStats {
    /// Records one call of `hook`.
    pub(super) fn record(
        &self,
        hook: Hook,
        elapsed: Duration,
        fuel: u64,
        failure: Option<FailureKind>,
    ) {
        let stats = &self.hooks[hook.index()];
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats.busy_nanos.fetch_add(ns, Ordering::Relaxed);
        stats.latency[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        stats.fuel_used.fetch_add(fuel, Ordering::Relaxed);
        if let Some(kind) = failure
            && let Some(i) = KINDS.iter().position(|k| *k == kind)
        {
            stats.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that `hook` short-circuited a request.
    pub(super) fn record_short_circuit(&self, hook: Hook) {
        self.hooks[hook.index()]
            .short_circuits
            .fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, kind: FailureKind) -> u64 {
        self.hooks.iter().map(|h| h.failed(kind)).sum()
    }

    fn sum(&self, counter: impl Fn(&HookStats) -> &AtomicU64) -> u64 {
        self.hooks
            .iter()
            .map(|h| counter(h).load(Ordering::Relaxed))
            .sum()
    }

    /// Reads the counters of one hook.
    pub fn hook(&self, hook: Hook) -> HookSnapshot {
        self.hooks[hook.index()].snapshot()
    }

    /// Reads the latency histogram of one hook.
    pub fn latency(&self, hook: Hook) -> LatencyHistogram {
        let stats = &self.hooks[hook.index()];
        let counts = stats.latency_counts();
        LatencyHistogram {
            sum_seconds: stats.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: counts.iter().sum(),
            buckets: prometheus_buckets(&counts),
        }
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let calls = self.sum(|h| &h.calls);
        let mut latency = [0u64; BUCKETS];
        for stats in &self.hooks {
            for (total, count) in latency.iter_mut().zip(stats.latency_counts()) {
                *total += count;
            }
        }
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
            failures: failures_by_code(|k| self.failed(k)),
            mean_call_us: mean_us(self.sum(|h| &h.busy_nanos), calls),
            p99_call_us: p99_ns(&latency) as f64 / 1000.0,
            fuel_used: self.sum(|h| &h.fuel_used),
            instances_created: self.instances_created.load(Ordering::Relaxed),
            short_circuits: self.sum(|h| &h.short_circuits),
            by_hook: Hook::ALL
                .iter()
                .map(|hook| (hook.name(), self.hook(*hook)))
                .filter(|(_, h)| h.calls > 0 || h.short_circuits > 0)
                .collect(),
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
            stats.record(Hook::PreHook, Duration::from_micros(10), 5, None);
        }
        stats.record(
            Hook::PostHook,
            Duration::from_millis(10),
            5,
            Some(FailureKind::OutOfFuel),
        );
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

    #[test]
    fn per_hook_counters_add_up_to_the_totals() {
        let stats = PluginStats::default();
        stats.record(Hook::Init, Duration::from_micros(50), 100, None);
        stats.record(Hook::PreHook, Duration::from_micros(5), 7, None);
        stats.record(
            Hook::PreHook,
            Duration::from_micros(5),
            3,
            Some(FailureKind::Trap),
        );
        stats.record_short_circuit(Hook::PreHook);
        let snap = stats.snapshot();
        assert_eq!(snap.calls, 3);
        assert_eq!(snap.traps, 1);
        assert_eq!(snap.short_circuits, 1);
        assert_eq!(snap.fuel_used, 110);
        let pre = &snap.by_hook["pre-hook"];
        assert_eq!(
            (pre.calls, pre.fuel_used, pre.short_circuits),
            (2, 10, 1),
            "{pre:?}"
        );
        assert_eq!(pre.failures.get("plugin_trap"), Some(&1));
        assert_eq!(snap.by_hook["init"].calls, 1);
        assert!(
            !snap.by_hook.contains_key("post-hook"),
            "hooks never called are left out"
        );
        assert_eq!(stats.hook(Hook::PostHook).calls, 0);
    }

    #[test]
    fn prometheus_buckets_are_powers_of_two_with_exact_counts() {
        let stats = PluginStats::default();
        // 1 ns, just under 2^10 ns, exactly 2^10 ns, 10 µs, and an hour.
        for ns in [1u64, 1023, 1024, 10_000, 3_600_000_000_000] {
            stats.record(Hook::PostHook, Duration::from_nanos(ns), 0, None);
        }
        let histogram = stats.latency(Hook::PostHook);
        assert_eq!(histogram.count, 5);
        assert!((histogram.sum_seconds - 3_600.000_012_048).abs() < 1e-6);
        let bounds: Vec<f64> = histogram.buckets.iter().map(|(le, _)| *le).collect();
        assert_eq!(bounds.len(), LAST_POWER - FIRST_POWER + 2);
        assert_eq!(bounds[0], 1024e-9);
        assert_eq!(bounds[1], 2048e-9);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        assert_eq!(bounds.last(), Some(&f64::INFINITY));
        let count_under = |le: f64| -> u64 {
            histogram
                .buckets
                .iter()
                .take_while(|(bound, _)| *bound <= le)
                .map(|(_, n)| n)
                .sum()
        };
        assert_eq!(
            count_under(1024e-9),
            2,
            "1 ns and 1023 ns are under 2^10 ns"
        );
        assert_eq!(count_under(2048e-9), 3);
        // 10 µs is in [2^13, 2^14) ns.
        assert_eq!(count_under(8192e-9), 3);
        assert_eq!(count_under(16384e-9), 4);
        assert_eq!(count_under(17.2), 4, "the hour is only in +Inf");
        assert_eq!(histogram.buckets.last().map(|(_, n)| *n), Some(1));
    }
}
