//! The hostile-plugin soak: runs the real `wasmgate` binary with a chain of misbehaving plugins
//! (infinite loops stopped by fuel and by the deadline, memory bombs, stack overflows, panics,
//! errors, a slow plugin) and sends benign traffic alone, then benign traffic interleaved with
//! requests that trigger every misbehaviour. It reports process crashes, unanswered requests,
//! wrong status codes, benign p50/p99 latency with and without the hostile load, and peak RSS.
//!
//! `just soak` builds the binary and runs this; `-- --requests N` sets the requests per hostile
//! kind (default 1000). Exits non-zero when a crash, a lost request or a wrong status is seen.

#![expect(clippy::print_stdout, reason = "the soak prints its report")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// Each hostile plugin: name, scripted pre action (applied only to the `hostile` provider),
/// limits, and the status its requests must get.
const HOSTILE: &[(&str, &str, &str, u16)] = &[
    ("loop-fuel", "loop", r#"{"fuel": 20000000}"#, 500),
    (
        "loop-deadline",
        "loop",
        r#"{"fuel": 100000000000, "timeout_ms": 20}"#,
        500,
    ),
    ("memory-bomb", "grow", r#"{"memory_mb": 16}"#, 500),
    ("stack-overflow", "recurse", "{}", 500),
    ("shadow-stack", "recurse-shadow", "{}", 500),
    ("panic", "trap", "{}", 500),
    ("error", "error", "{}", 500),
    ("slow", "sleep-ms:20", "{}", 200),
];

fn config(dir: &std::path::Path) -> Value {
    let plugins: Vec<Value> = HOSTILE
        .iter()
        .map(|(name, action, limits, _)| {
            json!({
                "name": name,
                "path": wasmgate_artifacts::SCRIPTED,
                "config": {"tag": name, "pre": action, "pre_only_provider": name},
                "limits": serde_json::from_str::<Value>(limits).unwrap_or_default(),
                // Measure the sandbox, not the quarantine: keep calling the broken plugins.
                "quarantine": {"after_failures": 0},
            })
        })
        .collect();
    let mut providers = json!({"mock": {"type": "mock"}});
    for (name, ..) in HOSTILE {
        providers[*name] = json!({"type": "mock"});
    }
    json!({
        "listen": "127.0.0.1:0",
        "plugins_dir": dir.join("plugins"),
        "cache_dir": dir.join("cache"),
        "providers": providers,
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

/// Sends `jobs` (model, expected status) with `concurrency` clients.
async fn run(addr: &str, jobs: Vec<(String, u16)>, concurrency: usize) -> Tally {
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
                    let Some((model, expected)) = next else { break };
                    let body =
                        json!({"model": model, "messages": [{"role": "user", "content": "soak"}]});
                    let started = Instant::now();
                    match client.post(&url).json(&body).send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.bytes().await;
                            tally.answered += 1;
                            if status != expected {
                                tally.wrong_status += 1;
                            }
                            if model == "mock/echo" {
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
    std::fs::write(&config_path, config(dir.path()).to_string())?;
    let mut gateway = start(&config_path)?;
    let pid = gateway.child.id();
    let baseline_rss = peak_rss_mib(pid);

    let benign: Vec<_> = (0..per_kind)
        .map(|_| ("mock/echo".to_string(), 200))
        .collect();
    let mut quiet = run(&gateway.addr, benign.clone(), 4).await;

    let mut mixed = Vec::new();
    for job in &benign {
        mixed.push(job.clone());
        for (name, _, _, status) in HOSTILE {
            mixed.push((format!("{name}/echo"), *status));
        }
    }
    let started = Instant::now();
    let mut loud = run(&gateway.addr, mixed, 8).await;
    let elapsed = started.elapsed();
    let crashed = gateway.child.try_wait()?.is_some();
    let peak_rss = peak_rss_mib(pid);
    let _ = gateway.child.kill();

    println!(
        "hostile kinds: {}, requests per kind: {per_kind}, mixed phase: {:.1} s",
        HOSTILE.len(),
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
    println!("peak RSS:               {peak_rss} MiB (baseline {baseline_rss} MiB)");
    if crashed || quiet.unanswered + loud.unanswered + quiet.wrong_status + loud.wrong_status > 0 {
        bail!("the soak found crashes, unanswered requests or wrong statuses");
    }
    Ok(())
}
