//! Measures what a parallel group buys: a chain of slow validators (each pre-hook spins until
//! `--ms` milliseconds of wall-clock time have passed) run once in sequence and once as one
//! parallel group, each through a real gateway on loopback. Prints the median and p90 request
//! latency of both and their ratio:
//! `cargo run -p wasmgate --release --example parallel -- --validators 3 --ms 30 --requests 40`.
//!
//! A validator spinning on the clock yields to the others at every epoch tick, so concurrent
//! ones overlap even on fewer cores than validators: this models validators that mostly wait
//! (on an external check, say). Validators that burn CPU gain at most the number of free cores.

#![expect(clippy::print_stdout, reason = "the benchmark prints its report")]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use wasmgate::Gateway;
use wasmgate::config::{Config, PluginConfig};

fn arg(name: &str, default: u64) -> anyhow::Result<u64> {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|v| v.parse())
        .transpose()
        .with_context(|| format!("{name} takes a number"))
        .map(|v| v.unwrap_or(default))
}

/// Median and p90 latency of `requests` sequential requests through a gateway whose chain is
/// `validators` slow validators, parallel or not.
async fn measure(
    validators: u64,
    ms: u64,
    requests: u64,
    parallel: bool,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        plugins_dir: dir.path().join("plugins"),
        cache_dir: None,
        ..Config::default()
    };
    config.plugins = (0..validators)
        .map(|i| PluginConfig {
            path: Some(wasmgate_artifacts::SCRIPTED.into()),
            config: json!({"tag": format!("V{i}"), "pre": format!("sleep-ms:{ms}")}),
            priority: Some(1),
            parallel,
            ..PluginConfig::named(&format!("validator-{i}"))
        })
        .collect();
    let gateway = Gateway::build(&config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build()?;
    let body = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "check"}]});
    let mut samples = Vec::new();
    // One warm-up request creates every plugin's instance.
    for i in 0..=requests {
        let started = Instant::now();
        let status = client.post(&url).json(&body).send().await?.status();
        anyhow::ensure!(status.is_success(), "request failed with {status}");
        if i > 0 {
            samples.push(started.elapsed());
        }
    }
    let _ = stop.send(());
    server.await??;
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples
            .get(i)
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1e3
    };
    Ok((at(0.5), at(0.9)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let validators = arg("--validators", 3)?;
    let ms = arg("--ms", 30)?;
    let requests = arg("--requests", 40)?;
    let (seq50, seq90) = measure(validators, ms, requests, false).await?;
    let (par50, par90) = measure(validators, ms, requests, true).await?;
    println!("{validators} validators x {ms} ms each, {requests} requests per mode");
    println!("in sequence:  p50 {seq50:.1} ms  p90 {seq90:.1} ms");
    println!("in parallel:  p50 {par50:.1} ms  p90 {par90:.1} ms");
    println!("p50 ratio (sequence / parallel): {:.2}x", seq50 / par50);
    Ok(())
}
