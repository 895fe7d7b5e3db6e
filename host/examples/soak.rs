//! The hostile-plugin soak: runs the real `wasmgate` binary with a chain of the hostile test
//! plugins (`tests/hostile-plugins/`: infinite loops stopped by fuel and by the deadline, memory
//! bombs, stack overflows, panics, oversized and deeply nested output, a slow plugin), each
//! misbehaving only on requests that carry its `x-hostile` trigger header. It sends benign
//! traffic alone, then benign traffic interleaved with requests that trigger every
//! misbehaviour, from 8 concurrent clients. It reports process crashes, unanswered requests,
//! wrong status codes, benign p50/p99 latency with and without the hostile load, and peak RSS
//! against the bound `baseline + concurrency x largest memory cap`.
//!
//! `just soak` builds the binary and runs this; `-- --requests N` sets the requests per hostile
//! kind (default 1000). Exits non-zero when a crash, a lost request or a wrong status is seen.

#![expect(clippy::print_stdout, reason = "the soak prints its report")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use wasmgate_artifacts as artifacts;

/// Concurrent clients in the hostile phase.
const CONCURRENCY: usize = 8;

/// One hostile plugin of the chain: name (also its trigger), component, config, limits, and the
/// status its triggered requests must get.
struct Hostile {
    name: &'static str,
    path: &'static str,
    config: Value,
    limits: Value,
    status: u16,
}

fn hostile() -> Vec<Hostile> {
    let h = |name, path, config: Value, limits: Value, status| Hostile {
        name,
        path,
        config,
        limits,
        status,
    };
    vec![
        h(
            "loop-fuel",
            artifacts::HOSTILE_LOOP,
            json!({}),
            json!({"fuel": 20_000_000}),
            500,
        ),
        h(
            "loop-deadline",
            artifacts::HOSTILE_LOOP,
            json!({}),
            json!({"fuel": 100_000_000_000u64, "timeout_ms": 20}),
            500,
        ),
        h(
            "loop-transport",
            artifacts::HOSTILE_LOOP,
            json!({"hook": "transport"}),
            json!({"fuel": 20_000_000}),
            500,
        ),
        h(
            "memory-bomb",
            artifacts::HOSTILE_MEMORY,
            json!({}),
            json!({"memory_mb": 16}),
            500,
        ),
        h(
            "stack-overflow",
            artifacts::HOSTILE_RECURSION,
            json!({}),
            json!({}),
            500,
        ),
        h("panic", artifacts::HOSTILE_PANIC, json!({}), json!({}), 500),
        h(
            "panic-post",
            artifacts::HOSTILE_PANIC,
            json!({"hook": "post"}),
            json!({}),
            500,
        ),
        h(
            "huge-output",
            artifacts::HOSTILE_HUGE_OUTPUT,
            json!({"bytes": 16 << 20}),
            json!({"memory_mb": 64, "fuel": 1_000_000_000}),
            500,
        ),
        h(
            "nested-json",
            artifacts::HOSTILE_NESTED_JSON,
            json!({}),
            json!({}),
            500,
        ),
        h(
            "slow",
            artifacts::HOSTILE_SLOW,
            json!({"ms": 20}),
            json!({}),
            200,
        ),
    ]
}

fn config(dir: &std::path::Path, hostile: &[Hostile]) -> Value {
    let plugins: Vec<Value> = hostile
        .iter()
        .map(|h| {
            let mut config = h.config.clone();
            config["trigger"] = json!(h.name);
            json!({
                "name": h.name,
                "path": h.path,
                "config": config,
                "limits": h.limits,
                // Measure the sandbox, not the quarantine: keep calling the broken plugins.
                "quarantine": {"after_failures": 0},
            })
        })
        .collect();
    json!({
        "listen": "127.0.0.1:0",
        "plugins_dir": dir.join("plugins"),
        "cache_dir": dir.join("cache"),
        "plugins": plugins,
        "runtime": {"max_instances": 512},
    })
}

struct Gateway {
    child: Child,
    addr: String,
}

fn start(config_path: &std::path::Path) -> anyhow::Result<Gateway> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("wasmgate"))
        .context("locating the wasmgate binary next to this example")?;
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (`cargo build -p wasmgate`)",
            bin.display()
        );
    }
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "warn,wasmgate=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("gateway stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            bail!("the gateway exited before serving");
        };
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap_or_default().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Gateway { child, addr })
}

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

#[derive(Default)]
struct Tally {
    benign_latency: Vec<Duration>,
    unanswered: u64,
    wrong_status: u64,
    answered: u64,
}

/// Sends `jobs` (trigger header or none for benign, expected status) with `concurrency`
/// clients.
async fn run(addr: &str, jobs: Vec<(Option<&'static str>, u16)>, concurrency: usize) -> Tally {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let jobs = Arc::new(std::sync::Mutex::new(jobs.into_iter()));
    let url = format!("http://{addr}/v1/chat/completions");
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, jobs, url) = (client.clone(), jobs.clone(), url.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let next = jobs.lock().ok().and_then(|mut j| j.next());
                    let Some((trigger, expected)) = next else {
                        break;
                    };
                    let body = json!({
                        "model": "mock/echo",
                        "messages": [{"role": "user", "content": "soak"}],
                    });
                    let started = Instant::now();
                    let mut request = client.post(&url).json(&body);
                    if let Some(trigger) = trigger {
                        request = request.header("x-hostile", trigger);
                    }
                    match request.send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.bytes().await;
                            tally.answered += 1;
                            if status != expected {
                                tally.wrong_status += 1;
                            }
                            if trigger.is_none() {
                                tally.benign_latency.push(started.elapsed());
                            }
                        }
                        Err(_) => tally.unanswered += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            total.benign_latency.extend(t.benign_latency);
            total.unanswered += t.unanswered;
            total.wrong_status += t.wrong_status;
            total.answered += t.answered;
        }
    }
    total
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let per_kind: usize = std::env::args()
        .skip_while(|a| a != "--requests")
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("--requests takes a number")?
        .unwrap_or(1000);
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("soak.json");
    let hostile = hostile();
    std::fs::write(&config_path, config(dir.path(), &hostile).to_string())?;
    let mut gateway = start(&config_path)?;
    let pid = gateway.child.id();
    let baseline_rss = peak_rss_mib(pid);

    let benign: Vec<_> = (0..per_kind).map(|_| (None, 200)).collect();
    let mut quiet = run(&gateway.addr, benign.clone(), 4).await;

    let mut mixed = Vec::new();
    for job in &benign {
        mixed.push(*job);
        for h in &hostile {
            mixed.push((Some(h.name), h.status));
        }
    }
    let started = Instant::now();
    let mut loud = run(&gateway.addr, mixed, CONCURRENCY).await;
    let elapsed = started.elapsed();
    let crashed = gateway.child.try_wait()?.is_some();
    let peak_rss = peak_rss_mib(pid);
    let _ = gateway.child.kill();

    println!(
        "hostile kinds: {}, requests per kind: {per_kind}, mixed phase: {:.1} s",
        hostile.len(),
        elapsed.as_secs_f64()
    );
    println!("process crashes:        {}", u8::from(crashed));
    println!(
        "unanswered requests:    {}",
        quiet.unanswered + loud.unanswered
    );
    println!(
        "wrong status codes:     {}",
        quiet.wrong_status + loud.wrong_status
    );
    println!(
        "benign p50/p99 alone:   {:.0} / {:.0} us",
        percentile(&mut quiet.benign_latency, 0.5),
        percentile(&mut quiet.benign_latency, 0.99)
    );
    println!(
        "benign p50/p99 hostile: {:.0} / {:.0} us",
        percentile(&mut loud.benign_latency, 0.5),
        percentile(&mut loud.benign_latency, 0.99)
    );
    let largest_cap = hostile
        .iter()
        .map(|h| h.limits["memory_mb"].as_u64().unwrap_or(64))
        .max()
        .unwrap_or(64);
    let bound = baseline_rss + CONCURRENCY as u64 * largest_cap;
    println!(
        "peak RSS:               {peak_rss} MiB (baseline {baseline_rss} MiB; bound baseline + \
         {CONCURRENCY} x {largest_cap} MiB = {bound} MiB)"
    );
    if crashed || quiet.unanswered + loud.unanswered + quiet.wrong_status + loud.wrong_status > 0 {
        bail!("the soak found crashes, unanswered requests or wrong statuses");
    }
    if peak_rss > bound {
        bail!("peak RSS {peak_rss} MiB is over the bound of {bound} MiB");
    }
    Ok(())
}
