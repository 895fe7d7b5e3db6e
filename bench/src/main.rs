//! `wasmgate-bench`: the end-to-end benchmark of the gateway against a plain proxy.
//!
//! `just bench` installs the tools (oha, pinned; nginx from Debian), builds the gateway in
//! release mode, runs the criterion micro-benchmarks and then `wasmgate-bench run`, which
//! writes `BENCHMARKS.md`. Method:
//!
//! - A mock upstream (`wasmgate-bench upstream`, hyper) answers every chat completion with the
//!   same ~1 KB body, at once on `/v1/...` and after 50 ms on `/slow/v1/...`.
//! - Systems, all started up front and measured with the same oha: direct to the upstream;
//!   nginx `proxy_pass` with an upstream keep-alive pool; the gateway with 0 plugins, 5 no-op
//!   plugins (as they declare, on shared instances; then pooled by config), 5 realistic
//!   plugins (auth, rate-limit, content-filter, cache miss, logging; shared as they declare),
//!   the same 5 pooled by config, with per-request instances and without fuel metering.
//!   Systems under test run on core 0; oha, the upstream and the harness itself on core 1.
//! - After a warm-up at 64 connections (which grows the plugins' instance pools to the probes'
//!   concurrency): c=1 closed-loop latency in interleaved rounds (median of the rounds'
//!   p50/p99); CPU time of each system's process per request at a fixed open-loop rate; the
//!   highest open-loop rate (latency-corrected) with p99 < 5 ms and no error (a rate fails
//!   when two probes in a row fail it); RSS after start and at its peak under load (the peak
//!   is reset once every system has started: start-up may compile components); a 50 ms-upstream run at 64 connections; gateway startup with 10 plugins with
//!   a cold and a warm compiled-component cache.
//!
//! No figure is compared with a threshold in a test: the report states the targets and where
//! this run stands. A throughput ratio whose probes contradict each other (a system that does
//! less work served less than one that does more: nginx below the no-plugin gateway, pooled
//! below per-request instances) is reported as not judged: only a disturbance explains it.

mod load;
mod procs;
mod report;
mod run;
mod systems;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The gateway's end-to-end benchmark.
#[derive(Debug, Parser)]
#[command(name = "wasmgate-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the mock upstream (used by `run`; handy by hand too).
    Upstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Measure every system and write the report.
    Run {
        /// The gateway binary (a release build).
        #[arg(long, default_value = "target/release/wasmgate")]
        gateway: PathBuf,
        /// The oha binary.
        #[arg(long, default_value = "target/bench-tools/bin/oha")]
        oha: PathBuf,
        /// Where to write the report (stdout when absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// criterion's output directory, whose medians go into the report.
        #[arg(long, default_value = "target/criterion")]
        criterion: PathBuf,
        /// A short pass to check the harness (figures too short to trust).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Upstream { listen } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(upstream::serve(listen)),
        Cmd::Run {
            gateway,
            oha,
            out,
            criterion,
            quick,
        } => {
            anyhow::ensure!(
                gateway.exists(),
                "{} is missing: build it with `cargo build --release -p wasmgate`",
                gateway.display()
            );
            let oha = load::Oha::new(&oha)?;
            // Read before pinning: pinned, the harness would see one core.
            let provenance = provenance();
            procs::pin_self(procs::LOAD_CORE)?;
            let plan = if quick {
                run::Plan::quick()
            } else {
                run::Plan::full()
            };
            let figures = run::run(&plan, &gateway, &oha)?;
            let micro = report::read_micro(&criterion);
            let text = report::render(&figures, &micro, &provenance);
            match out {
                Some(path) => {
                    std::fs::write(&path, &text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => {
                    use std::io::Write as _;
                    std::io::stdout().write_all(text.as_bytes())?;
                }
            }
            for t in report::targets(&figures) {
                eprintln!(
                    "{} {}: {}",
                    if t.met { "met   " } else { "MISSED" },
                    t.what,
                    t.measured
                );
            }
            Ok(())
        }
    }
}

/// Commit, date and machine, read from git, date, /proc and uname.
fn provenance() -> report::Provenance {
    let out = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = !out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    report::Provenance {
        commit: format!(
            "{}{}",
            out("git", &["rev-parse", "--short", "HEAD"]),
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        date: out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: format!(
            "{cpu}, {} cores, Linux {}",
            std::thread::available_parallelism().map_or(0, usize::from),
            out("uname", &["-r"])
        ),
    }
}
