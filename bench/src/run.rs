//! One benchmark run: starts the mock upstream, nginx and the gateway setups, measures each the
//! same way with the same tool, interleaved where it matters, and collects the figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::load::{Measured, Oha, Request, Shape};
use crate::procs::{self, LOAD_CORE, Proc, Stream};
use crate::systems::{self, Setup};

/// How long and how hard to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Closed-loop c=1 rounds (systems interleaved in each).
    pub rounds: usize,
    /// Requests per system per round.
    pub latency_requests: usize,
    /// Warm-up requests per system.
    pub warmup_requests: usize,
    /// Length of each open-loop probe of the max-RPS search.
    pub probe: Duration,
    /// Fixed rate of the CPU-per-request measurement.
    pub cpu_rate: u32,
    /// How long the CPU measurement lasts.
    pub cpu_duration: Duration,
    /// Starts of the gateway measured for the startup figures (cold and warm each).
    pub startups: usize,
}

impl Plan {
    /// The full run (about five minutes on 2 cores).
    pub fn full() -> Self {
        Self {
            rounds: 5,
            latency_requests: 2000,
            warmup_requests: 3000,
            probe: Duration::from_secs(2),
            cpu_rate: 1000,
            cpu_duration: Duration::from_secs(3),
            startups: 3,
        }
    }

    /// A quick pass that checks the harness works (figures too short to trust).
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            latency_requests: 200,
            warmup_requests: 200,
            probe: Duration::from_millis(500),
            cpu_rate: 500,
            cpu_duration: Duration::from_millis(500),
            startups: 1,
        }
    }
}

/// The largest p99 a load may have and still count as served.
pub const P99_BUDGET_US: f64 = 5000.0;

/// Figures for one system.
#[derive(Debug, Clone, Default)]
pub struct SystemFigures {
    /// Its label.
    pub label: String,
    /// Median over rounds of the c=1 p50, µs.
    pub p50_us: f64,
    /// Median over rounds of the c=1 p99, µs.
    pub p99_us: f64,
    /// Highest open-loop rate served with p99 under budget and no error.
    pub max_rps: f64,
    /// CPU time of the system's process per request at the fixed rate, µs.
    pub cpu_us_per_request: f64,
    /// Resident memory after start, before any request, KiB.
    pub rss_idle_kib: u64,
    /// Peak resident memory from the end of start-up to the end of all the load, KiB.
    pub rss_peak_kib: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Direct to the upstream, nginx, then the gateway setups in [`Setup::ALL`] order.
    pub systems: Vec<SystemFigures>,
    /// With the 50 ms upstream, 64 connections: (label, rps, p50 µs) for direct and the
    /// realistic gateway.
    pub slow: Vec<(String, f64, f64)>,
    /// Gateway startup with 10 plugins: cold (empty compiled-component cache) and warm, ms
    /// (median of the starts).
    pub startup_cold_ms: f64,
    /// See `startup_cold_ms`.
    pub startup_warm_ms: f64,
    /// oha's version line.
    pub oha: String,
    /// nginx's version line.
    pub nginx: String,
}

/// A system under measurement: what to send and which process does the work.
struct Target {
    label: String,
    request: Request,
    proc_index: usize,
}

/// Runs everything with `plan`, the gateway at `gateway_bin` and oha at `oha`.
pub fn run(plan: &Plan, gateway_bin: &Path, oha: &Oha) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let mut procs: Vec<Proc> = Vec::new();

    let upstream_bin = std::env::current_exe()?;
    let mut command = procs::pinned(LOAD_CORE, &upstream_bin);
    command.args(["upstream", "--listen", "127.0.0.1:0"]);
    let (upstream, line, _) =
        procs::start_until_line("mock upstream", command, Stream::Stderr, "listening on")?;
    let upstream_addr = procs::addr_in(&line)?;
    procs.push(upstream);
    eprintln!("mock upstream on {upstream_addr}");

    let mut targets = vec![Target {
        label: "direct to the mock upstream".into(),
        request: request(upstream_addr, "/v1/chat/completions"),
        proc_index: 0,
    }];
    let (nginx, nginx_addr) = systems::start_nginx(dir.path(), upstream_addr)?;
    procs.push(nginx);
    targets.push(Target {
        label: "nginx proxy_pass (keepalive)".into(),
        request: request(nginx_addr, "/v1/chat/completions"),
        proc_index: 1,
    });
    let mut gateways = Vec::new();
    for setup in Setup::ALL {
        let config =
            systems::gateway_config(dir.path(), upstream_addr, setup.plugins(), setup.runtime());
        let file = format!("gateway-{}.json", procs.len());
        let (proc, addr, _) = systems::start_gateway(gateway_bin, dir.path(), &file, &config)
            .with_context(|| format!("starting the {}", setup.label()))?;
        eprintln!("{} on {addr}", setup.label());
        procs.push(proc);
        gateways.push((setup, addr));
        targets.push(Target {
            label: setup.label().into(),
            request: request(addr, "/v1/chat/completions"),
            proc_index: procs.len() - 1,
        });
    }

    let mut figures: Vec<SystemFigures> = targets
        .iter()
        .map(|t| SystemFigures {
            label: t.label.clone(),
            rss_idle_kib: procs[t.proc_index].rss_kib().map(|r| r.0).unwrap_or(0),
            ..SystemFigures::default()
        })
        .collect();
    // The gateways share one compiled-component cache, so the first to load a component
    // compiles it (Cranelift's working memory, tens of MB for a moment) and the next ones
    // load it: without a reset their peaks would compare compilations, not load.
    for proc in &procs {
        proc.reset_peak_rss()?;
    }

    // At the concurrency of the throughput probes: a plugin's instance pool grows on demand
    // (and keeps up to `max_idle_per_plugin`), and a new instance runs `init` (content-filter
    // compiles its patterns, ~0.6 ms), so without this the first probe to reach a new
    // concurrency would measure the pool's growth rather than the steady state.
    eprintln!("warming up");
    for t in &targets {
        let m = oha.run(
            &t.request,
            Shape::Closed {
                connections: 64,
                requests: plan.warmup_requests,
            },
        )?;
        anyhow::ensure!(
            m.errors == 0,
            "{}: {} errors while warming up; is it set up right?",
            t.label,
            m.errors
        );
    }

    eprintln!("latency at c=1, {} rounds", plan.rounds);
    let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(); targets.len()];
    for _ in 0..plan.rounds {
        for (i, t) in targets.iter().enumerate() {
            let m = oha.run(
                &t.request,
                Shape::Closed {
                    connections: 1,
                    requests: plan.latency_requests,
                },
            )?;
            anyhow::ensure!(m.errors == 0, "{}: {} errors at c=1", t.label, m.errors);
            rounds[i].push(m);
        }
    }
    for (f, r) in figures.iter_mut().zip(&rounds) {
        f.p50_us = median(r.iter().map(|m| m.p50_us).collect());
        f.p99_us = median(r.iter().map(|m| m.p99_us).collect());
    }

    eprintln!("CPU per request at {} requests/s", plan.cpu_rate);
    for (f, t) in figures.iter_mut().zip(&targets) {
        let proc = &procs[t.proc_index];
        let before = proc.cpu_ns()?;
        let m = oha.run(
            &t.request,
            Shape::Open {
                rate: plan.cpu_rate,
                duration: plan.cpu_duration,
                connections: 16,
            },
        )?;
        let used = proc.cpu_ns()?.saturating_sub(before);
        f.cpu_us_per_request = used as f64 / 1e3 / m.ok.max(1) as f64;
    }

    eprintln!("max requests/s with p99 < {} ms", P99_BUDGET_US / 1e3);
    for (f, t) in figures.iter_mut().zip(&targets) {
        f.max_rps = max_rps(oha, &t.request, plan.probe)?;
        eprintln!("  {}: {:.0}", t.label, f.max_rps);
    }

    for (f, t) in figures.iter_mut().zip(&targets) {
        procs[t.proc_index].check_alive()?;
        f.rss_peak_kib = procs[t.proc_index].rss_kib().map(|r| r.1).unwrap_or(0);
    }

    eprintln!("50 ms upstream, 64 connections");
    let realistic = gateways
        .iter()
        .find(|(s, _)| *s == Setup::Realistic5)
        .map(|(_, a)| *a)
        .context("the realistic gateway is missing")?;
    let mut slow = Vec::new();
    for (label, mut req) in [
        (
            "direct to the mock upstream",
            request(upstream_addr, "/slow/v1/chat/completions"),
        ),
        (
            Setup::Realistic5.label(),
            request(realistic, "/v1/chat/completions"),
        ),
    ] {
        req.body = req.body.replace("\"up/", "\"slow/");
        let m = oha.run(
            &req,
            Shape::Closed {
                connections: 64,
                requests: 64 * 20,
            },
        )?;
        anyhow::ensure!(m.errors == 0, "{label}: {} errors, slow upstream", m.errors);
        slow.push((label.to_string(), m.rps, m.p50_us));
    }

    eprintln!("startup with 10 plugins");
    let (cold, warm) = startup(plan, gateway_bin, dir.path(), upstream_addr)?;

    Ok(Figures {
        systems: figures,
        slow,
        startup_cold_ms: cold,
        startup_warm_ms: warm,
        oha: oha.version(),
        nginx: systems::nginx_version(),
    })
}

/// The request every system gets: a short system prompt and a ~600-character user message.
fn request(addr: SocketAddr, path: &str) -> Request {
    let prompt = "Summarise the following meeting notes in three bullet points. ".repeat(10);
    let body = serde_json::json!({
        "model": "up/bench-model",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": prompt.trim_end()},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
    });
    Request {
        url: format!("http://{addr}{path}"),
        body: body.to_string(),
    }
}

/// The highest open-loop rate with p99 under budget and no error: doubling from 100/s until a
/// rate fails, then bisecting four times (0 when even 100/s fails). A rate fails only when two
/// probes in a row fail it: on a shared VM a neighbour's burst sometimes ruins one probe, and
/// such noise only ever makes a system look slower, so the better of two probes is the truer
/// figure (one disturbed probe used to cut a system's figure to a tenth).
fn max_rps(oha: &Oha, request: &Request, probe: Duration) -> anyhow::Result<f64> {
    let probe_passes = |rate: u32| -> anyhow::Result<bool> {
        let m = oha.run(
            request,
            Shape::Open {
                rate,
                duration: probe,
                connections: 64,
            },
        )?;
        Ok(m.errors == 0 && m.p99_us < P99_BUDGET_US && m.rps >= 0.9 * f64::from(rate))
    };
    let passes =
        |rate: u32| -> anyhow::Result<bool> { Ok(probe_passes(rate)? || probe_passes(rate)?) };
    let mut good = 0u32;
    let mut bad = 100u32;
    while bad <= 64_000 && passes(bad)? {
        good = bad;
        bad *= 2;
    }
    for _ in 0..4 {
        let mid = good + (bad - good) / 2;
        if passes(mid)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(f64::from(good))
}

/// Median time to serve with 10 plugins, cold (each start with an empty compiled-component
/// cache) and warm (the cache filled by an earlier start), ms.
fn startup(
    plan: &Plan,
    gateway_bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<(f64, f64)> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..plan.startups {
        let cache: PathBuf = dir.join(format!("startup-cache-{i}"));
        let mut config =
            systems::gateway_config(dir, upstream, systems::ten_plugins(), serde_json::json!({}));
        config["cache_dir"] = serde_json::json!(cache);
        for times in [&mut cold, &mut warm] {
            let (proc, _, took) =
                systems::start_gateway(gateway_bin, dir, "startup.json", &config)?;
            drop(proc);
            times.push(took.as_secs_f64() * 1e3);
        }
    }
    Ok((median(cold), median(warm)))
}

/// The median of `values` (NaN when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn every_system_gets_the_same_body() {
        let a = request("127.0.0.1:1".parse().unwrap(), "/v1/chat/completions");
        let b = request("127.0.0.1:2".parse().unwrap(), "/v1/chat/completions");
        assert_eq!(a.body, b.body);
        assert!(a.body.len() > 600);
    }
}
