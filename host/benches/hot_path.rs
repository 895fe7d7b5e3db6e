//! Micro-benchmarks of the request hot path, without HTTP: one hook call on a 1 KB request (warm,
//! and with the CPU's caches evicted first, as under load), an instance checkout, the whole
//! pipeline with 0, 5 no-op and 5 realistic plugins against the mock provider, and the request
//! and response JSON conversions. `just bench` runs them and
//! puts their medians in BENCHMARKS.md; `cargo bench -p wasmgate --bench hot_path` alone.

#![expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails must stop at once, saying what failed"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use wasmgate::chat::{ChatRequest, ChatResponse};
use wasmgate::config::Config;
use wasmgate::context::RequestContext;
use wasmgate::pipeline::Pipeline;
use wasmgate::providers::Providers;
use wasmgate::registry::Registry;
use wasmgate::runtime::{Grants, Isolation, Limits, PluginSetup, QuarantinePolicy, Runtime};
use wasmgate_artifacts as artifacts;
use workload::{headers, request_json};

mod workload;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn hook_and_instance(c: &mut Criterion) {
    let rt = tokio();
    let runtime = Runtime::new(Default::default(), None).expect("runtime");
    let load = |path: &str, config: Value| {
        let bytes = std::fs::read(path).expect("the plugin was built");
        let limits = Limits::default();
        let compiled = runtime
            .compile(&bytes, limits.stack_bytes)
            .expect("compiles");
        rt.block_on(runtime.load(
            "bench",
            &compiled,
            PluginSetup {
                config: config.to_string(),
                limits,
                quarantine: QuarantinePolicy::default(),
                grants: Grants::default(),
                isolation: Some(Isolation::Pooled),
            },
        ))
        .expect("loads")
    };
    let request =
        std::sync::Arc::new(ChatRequest::from_json(request_json()).expect("a valid request"));
    let ctx = Arc::new(RequestContext::new(headers()));

    let mut group = c.benchmark_group("hook");
    for (name, path, config) in [
        ("pre_hook_1kb_noop", artifacts::NOOP, json!({})),
        (
            "pre_hook_1kb_content_filter",
            artifacts::CONTENT_FILTER,
            json!({"patterns": ["\\bpassword\\b", "sk-[A-Za-z0-9]{20,40}"], "action": "redact"}),
        ),
        (
            "pre_hook_1kb_auth",
            artifacts::AUTH,
            json!({"keys": ["sk-bench", "sk-other"]}),
        ),
    ] {
        let plugin = load(path, config);
        let mut instance = rt.block_on(plugin.checkout()).expect("an instance");
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(plugin.pre_hook(&mut instance, &ctx, black_box(&request)))
                    .expect("the hook passes")
            })
        });
        plugin.checkin(instance);
    }

    // Under load a hook call seldom finds its code and data in the CPU's caches: other
    // requests, the HTTP stack and the kernel ran in between, and every request in flight holds
    // its own instances. The same call timed alone after evicting the caches (writing a buffer
    // larger than a core's L2), on one instance and rotating over 64.
    let plugin = load(artifacts::NOOP, json!({}));
    let mut evict = vec![0u8; 4 << 20];
    for count in [1usize, 64] {
        let mut instances: Vec<_> = (0..count)
            .map(|_| rt.block_on(plugin.checkout()).expect("an instance"))
            .collect();
        let name = format!("pre_hook_1kb_noop_cold_cache_{count}_instances");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for i in 0..iters {
                    evict_caches(&mut evict);
                    let instance = &mut instances[i as usize % count];
                    let started = Instant::now();
                    rt.block_on(plugin.pre_hook(instance, &ctx, black_box(&request)))
                        .expect("the hook passes");
                    timed += started.elapsed();
                }
                timed
            })
        });
        for instance in instances {
            plugin.checkin(instance);
        }
    }
    group.finish();

    c.bench_function("instance/checkout_checkin", |b| {
        b.iter(|| {
            let instance = rt.block_on(plugin.checkout()).expect("an instance");
            plugin.checkin(black_box(instance));
        })
    });
}

/// Writes one byte per cache line of `buffer`, pushing what the CPU cached before out of it.
fn evict_caches(buffer: &mut [u8]) {
    for byte in buffer.iter_mut().step_by(64) {
        *byte = byte.wrapping_add(1);
    }
    black_box(buffer);
}

/// A registry and pipeline with `plugins`, serving the mock provider.
fn pipeline(rt: &tokio::runtime::Runtime, plugins: Value) -> Pipeline {
    let config = Config::parse(
        &json!({
            "plugins_dir": "/nonexistent-wasmgate-bench",
            "cache_dir": null,
            "plugins": plugins,
        })
        .to_string(),
    )
    .expect("a valid config");
    let runtime = Runtime::new(config.runtime, None).expect("runtime");
    let providers = Arc::new(Providers::from_config(&config.providers).expect("providers"));
    let registry = Arc::new(Registry::new(runtime));
    rt.block_on(registry.reconcile(&config));
    let pipeline = Pipeline::new(registry, providers);
    let chain = pipeline
        .select(None, &headers())
        .expect("the default chain");
    assert_eq!(
        chain.links.len(),
        plugins.as_array().map_or(0, Vec::len),
        "every plugin loaded"
    );
    pipeline
}

fn whole_pipeline(c: &mut Criterion) {
    let rt = tokio();
    let body = request_json();
    let mut group = c.benchmark_group("pipeline");
    for (name, plugins) in [
        ("0_plugins", json!([])),
        ("5_noop", workload::noop5()),
        ("5_realistic", workload::realistic5()),
    ] {
        let pipeline = pipeline(&rt, plugins);
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = ChatRequest::from_json(body.clone()).expect("a valid request");
                let chain = pipeline.select(None, &headers()).expect("the chain");
                let mut session = pipeline.session(chain, headers());
                rt.block_on(pipeline.run(&mut session, request))
                    .expect("answered")
            })
        });
    }
    group.finish();
}

fn json_conversions(c: &mut Criterion) {
    let body = request_json().to_string().into_bytes();
    let request = ChatRequest::from_json_bytes(&body).expect("a valid request");
    let upstream: Value = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant",
                                 "content": "The quick brown fox jumps over the lazy dog. ".repeat(16)}}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 160, "total_tokens": 202}
    });
    let upstream_bytes = upstream.to_string().into_bytes();
    let mut group = c.benchmark_group("json");
    group.bench_function("request_parse_1kb", |b| {
        b.iter(|| ChatRequest::from_json_bytes(black_box(&body)).expect("parses"))
    });
    group.bench_function("request_to_upstream_bytes", |b| {
        b.iter(|| serde_json::to_vec(&black_box(&request).to_upstream_json()).expect("writes"))
    });
    group.bench_function("response_parse_and_write_1kb", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&upstream_bytes)).expect("json");
            let response = ChatResponse::from_upstream_json("up", value).expect("a response");
            serde_json::to_vec(&response.to_json()).expect("writes")
        })
    });
    group.finish();
}

criterion_group!(benches, hook_and_instance, whole_pipeline, json_conversions);
criterion_main!(benches);
