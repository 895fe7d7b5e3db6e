//! The hot path counted in instructions, not time: on a shared, noisy machine a wall-clock
//! A/B of a 3 µs hook moves by ±30 % from one run to the next, while the number of
//! instructions executed does not. Runs one workload `--iterations` times inside
//! [`measure`], which `just instructions` has callgrind count (`--toggle-collect`), and divides.
//!
//! Workloads (`--workload`): `hook` (one pre-hook of the no-op plugin on a 1 KB request, warm
//! instance), `pipeline-0`, `pipeline-noop5`, `pipeline-realistic5` (the whole pipeline without
//! HTTP against the mock provider, as `host/benches/hot_path.rs` measures it) and
//! `pipeline-only-<name>` (one of the realistic five alone, e.g. `pipeline-only-cache`), with
//! the plugins as they declare (shared instances); each pipeline also as `pipeline-fresh-...`,
//! under per-request isolation, and `pipeline-pooled-...`, pooled. The
//! runtime is sized small (`max_instances`) so that valgrind can map its pooling allocator.

#![expect(clippy::print_stdout, reason = "the probe prints what it ran")]

use std::hint::black_box;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};
use wasmgate::chat::ChatRequest;
use wasmgate::config::Config;
use wasmgate::context::RequestContext;
use wasmgate::pipeline::Pipeline;
use wasmgate::providers::Providers;
use wasmgate::registry::Registry;
use wasmgate::runtime::{
    Grants, Isolation, Limits, PluginSetup, QuarantinePolicy, Runtime, RuntimeOptions,
};
use wasmgate_artifacts as artifacts;
use workload::{headers, request_json};

#[path = "../benches/workload/mod.rs"]
mod workload;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The workloads, for an error message.
const WORKLOADS: &str = "use hook or pipeline-[fresh-|pooled-]<chain>, where <chain> is 0, \
                         noop5, realistic5 or only-<one of the realistic five>";

/// One workload, ready to run an iteration.
enum Workload {
    Hook {
        plugin: Arc<wasmgate::runtime::LoadedPlugin>,
        instance: Box<wasmgate::runtime::PluginInstance>,
        request: Arc<ChatRequest>,
        ctx: Arc<RequestContext>,
    },
    Pipeline {
        pipeline: Pipeline,
        body: Value,
    },
}

impl Workload {
    async fn new(name: &str) -> anyhow::Result<Self> {
        if name == "hook" {
            let runtime = Runtime::new(
                RuntimeOptions {
                    max_instances: 2,
                    ..RuntimeOptions::default()
                },
                None,
            )?;
            let bytes = std::fs::read(artifacts::NOOP).context("reading the no-op plugin")?;
            let limits = Limits::default();
            let compiled = runtime.compile(&bytes, limits.stack_bytes)?;
            let setup = PluginSetup {
                config: "{}".into(),
                limits,
                quarantine: QuarantinePolicy::default(),
                grants: Grants::default(),
                isolation: Some(Isolation::Pooled),
            };
            let plugin = runtime.load("noop", &compiled, setup).await?;
            let instance = Box::new(plugin.checkout().await?);
            return Ok(Workload::Hook {
                plugin,
                instance,
                request: Arc::new(ChatRequest::from_json(request_json())?),
                ctx: Arc::new(RequestContext::new(headers())),
            });
        }
        let Some(chain) = name.strip_prefix("pipeline-") else {
            anyhow::bail!("unknown workload {name:?}: {WORKLOADS}");
        };
        // `fresh-`: each request on instances that never served another, i.e. what
        // per-request isolation costs (instantiation, `init`, `cleanup`); `pooled-`: the
        // plugins pooled whatever they declare. Otherwise as they declare (every plugin here
        // declares `shared-instances`).
        let (isolation, chain) = if let Some(chain) = chain.strip_prefix("fresh-") {
            (Some("per-request"), chain)
        } else if let Some(chain) = chain.strip_prefix("pooled-") {
            (Some("pooled"), chain)
        } else {
            (None, chain)
        };
        let mut plugins = match chain {
            "0" => json!([]),
            "noop5" => workload::noop5(),
            "realistic5" => workload::realistic5(),
            other => match other.strip_prefix("only-") {
                // One plugin of the realistic five alone, e.g. `pipeline-only-cache`: where
                // the five's cost goes.
                Some(plugin) => json!(
                    workload::realistic5()
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["name"] == plugin)
                        .collect::<Vec<_>>()
                ),
                None => anyhow::bail!("unknown workload {name:?}: {WORKLOADS}"),
            },
        };
        if let Some(isolation) = isolation {
            for plugin in plugins.as_array_mut().into_iter().flatten() {
                plugin["isolation"] = json!(isolation);
            }
        }
        let config = Config::parse(
            &json!({
                "plugins_dir": "/nonexistent-wasmgate-probe",
                "cache_dir": null,
                "runtime": {"max_instances": 6},
                "plugins": plugins,
            })
            .to_string(),
        )?;
        let runtime = Runtime::new(config.runtime, None)?;
        let providers = Arc::new(Providers::from_config(&config.providers)?);
        let registry = Arc::new(Registry::new(runtime));
        registry.reconcile(&config).await;
        Ok(Workload::Pipeline {
            pipeline: Pipeline::new(registry, providers),
            body: request_json(),
        })
    }

    async fn iterate(&mut self) -> anyhow::Result<()> {
        match self {
            Workload::Hook {
                plugin,
                instance,
                request,
                ctx,
            } => {
                black_box(plugin.pre_hook(instance, ctx, black_box(request)).await?);
            }
            Workload::Pipeline { pipeline, body } => {
                let request = ChatRequest::from_json(body.clone())?;
                let chain = pipeline.select(None, &headers())?;
                let mut session = pipeline.session(chain, headers());
                black_box(pipeline.run(&mut session, request).await?);
            }
        }
        Ok(())
    }
}

/// The measured part: what callgrind counts (`--toggle-collect=*instructions::measure*`).
#[inline(never)]
fn measure(
    rt: &tokio::runtime::Runtime,
    workload: &mut Workload,
    iterations: usize,
) -> anyhow::Result<()> {
    run(rt, workload, iterations)
}

/// Runs `iterations` iterations inside one `block_on`: one `block_on` per iteration entered the
/// runtime and copied the iteration's future into place every time (~1.4 k instructions), which
/// the gateway pays once per request, not per hook call.
fn run(
    rt: &tokio::runtime::Runtime,
    workload: &mut Workload,
    iterations: usize,
) -> anyhow::Result<()> {
    rt.block_on(async {
        for _ in 0..iterations {
            workload.iterate().await?;
        }
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let name = arg("--workload").unwrap_or_else(|| "hook".into());
    let iterations: usize = arg("--iterations")
        .map(|v| v.parse())
        .transpose()
        .context("--iterations takes a number")?
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut workload = rt.block_on(Workload::new(&name))?;
    // Warm: first calls fill caches and grow instance memory.
    warm_up(&rt, &mut workload)?;
    measure(&rt, &mut workload, iterations)?;
    if let Workload::Hook {
        plugin, instance, ..
    } = workload
    {
        plugin.checkin(*instance);
    }
    println!("{name}: {iterations} iterations");
    Ok(())
}

/// Ten iterations outside the counted part.
#[inline(never)]
fn warm_up(rt: &tokio::runtime::Runtime, workload: &mut Workload) -> anyhow::Result<()> {
    run(rt, workload, 10)
}
