//! Measures what a plugin costs in each guest language, with the `hello-world` port of each
//! (Rust, C, Python, JavaScript) and the gateway's own runtime: component size, Cranelift compile
//! time, loading from the compiled-component cache, creating an instance (instantiate from the
//! pooling allocator + `init`), memory per instance, and pre-hook latency and fuel on a warm
//! instance. Prints a Markdown table (the one in the README):
//! `cargo run -p wasmgate --release --example guest_costs -- --calls 2000 --instances 16`.
//!
//! Memory per instance is the growth of the process's resident memory while `--instances`
//! instances are alive at once, divided by their number: the pages an instance really touches.
//! hello-world logs one line per hook; logging goes nowhere here (no subscriber), as in a gateway
//! that filters info lines out.

#![expect(clippy::print_stdout, reason = "the benchmark prints its report")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use wasmgate::chat::ChatRequest;
use wasmgate::context::RequestContext;
use wasmgate::runtime::{
    Grants, Isolation, Limits, PluginSetup, QuarantinePolicy, Runtime, RuntimeOptions,
};

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|v| v.parse())
        .transpose()
        .with_context(|| format!("{name} takes a number"))
        .map(|v| v.unwrap_or(default))
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The p-th percentile of sorted durations, in microseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One row of the table.
struct Row {
    lang: &'static str,
    size: usize,
    compile: Duration,
    cached: Duration,
    create_p50: f64,
    memory: u64,
    first_call: f64,
    call_p50: f64,
    call_p99: f64,
    fuel: f64,
}

async fn measure(
    lang: &'static str,
    path: &str,
    calls: usize,
    instances: usize,
) -> anyhow::Result<Row> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let cache = tempfile::tempdir()?;
    let options = RuntimeOptions {
        max_instances: 64,
        ..RuntimeOptions::default()
    };
    let limits = Limits::default();

    // Compile (cache miss: Cranelift), then load from the cache as a restart would.
    let runtime = Runtime::new(options, Some(cache.path()))?;
    let started = Instant::now();
    let compiled = runtime.compile_cached(&sha, &bytes, limits.stack_bytes)?;
    let compile = started.elapsed();
    drop(compiled);
    let runtime = Runtime::new(options, Some(cache.path()))?;
    let started = Instant::now();
    let compiled = runtime.compile_cached(&sha, &bytes, limits.stack_bytes)?;
    let cached = started.elapsed();

    let plugin = runtime
        .load(
            lang,
            &compiled,
            PluginSetup {
                config: "{}".into(),
                limits,
                quarantine: QuarantinePolicy::default(),
                grants: Grants::default(),
                isolation: Some(Isolation::Pooled),
            },
        )
        .await?;

    // New instances: check out `instances` at once (the first is the warm one from load).
    let before = rss_bytes();
    let mut held = Vec::new();
    let mut creates = Vec::new();
    for _ in 0..instances {
        let started = Instant::now();
        held.push(
            plugin
                .checkout()
                .await
                .map_err(|f| anyhow::anyhow!("{f}"))?,
        );
        creates.push(started.elapsed());
    }
    let memory = rss_bytes().saturating_sub(before) / (instances.max(2) as u64 - 1);
    creates.remove(0);
    creates.sort();

    // The first call on a fresh instance, then calls on a warm one.
    let req = Arc::new(
        ChatRequest::from_json(json!({
            "model": "mock/echo",
            "messages": [{"role": "user", "content": "x".repeat(1024)}],
        }))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?,
    );
    let ctx = Arc::new(RequestContext::new(Vec::new()));
    let mut instance = held.pop().context("no instance")?;
    let started = Instant::now();
    plugin
        .pre_hook(&mut instance, &ctx, &req)
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let first_call = started.elapsed().as_secs_f64() * 1e6;
    let fuel_before = plugin.stats().fuel_used;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        plugin
            .pre_hook(&mut instance, &ctx, &req)
            .await
            .map_err(|f| anyhow::anyhow!("{f}"))?;
        times.push(started.elapsed());
    }
    let fuel = (plugin.stats().fuel_used - fuel_before) as f64 / calls.max(1) as f64;
    times.sort();
    plugin.checkin(instance);
    for instance in held {
        plugin.checkin(instance);
    }
    plugin.retire().await;

    Ok(Row {
        lang,
        size: bytes.len(),
        compile,
        cached,
        create_p50: pct(&creates, 0.5),
        memory,
        first_call,
        call_p50: pct(&times, 0.5),
        call_p99: pct(&times, 0.99),
        fuel,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls = arg("--calls", 2000)?;
    let instances = arg("--instances", 16)?.max(2);
    let guests = [
        ("Rust", wasmgate_artifacts::HELLO_WORLD),
        ("C", wasmgate_artifacts::C_HELLO_WORLD),
        ("Python", wasmgate_artifacts::PYTHON_HELLO_WORLD),
        ("JavaScript", wasmgate_artifacts::JS_HELLO_WORLD),
    ];
    let mut rows = Vec::new();
    for (lang, path) in guests {
        rows.push(measure(lang, path, calls, instances).await?);
    }
    println!(
        "| hello-world | component | compile (Cranelift) | load from cache | new instance p50 \
         (instantiate + init) | memory per instance | first pre-hook | pre-hook p50 | pre-hook p99 \
         | fuel per pre-hook |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} KB | {:.0} ms | {:.1} ms | {:.0} µs | {:.1} MB | {:.0} µs | {:.1} µs | \
             {:.1} µs | {:.0} k |",
            r.lang,
            r.size as f64 / 1e3,
            ms(r.compile),
            ms(r.cached),
            r.create_p50,
            r.memory as f64 / 1e6,
            r.first_call,
            r.call_p50,
            r.call_p99,
            r.fuel / 1e3,
        );
    }
    println!(
        "\n({calls} pre-hook calls with a 1 KiB prompt on one warm instance; {instances} \
         instances alive at once for the memory figure.)"
    );
    Ok(())
}
