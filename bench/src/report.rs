//! Turns a run's figures into `BENCHMARKS.md`: the machine and commit, a table per measure,
//! ratios against direct and nginx, and where each target of the performance issue stands.

use std::fmt::Write as _;
use std::path::Path;

use crate::run::{Figures, SystemFigures};

/// Where the run happened.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// `git describe`-like commit.
    pub commit: String,
    /// UTC date.
    pub date: String,
    /// CPU model, cores, kernel.
    pub machine: String,
}

/// One criterion micro-benchmark: its id and median time, ns.
#[derive(Debug, Clone)]
pub struct Micro {
    /// `group/name`.
    pub id: String,
    /// Median of criterion's estimate.
    pub median_ns: f64,
}

/// Reads criterion's `<dir>/<group>/<bench>/new/estimates.json` files, and the
/// `<dir>/<bench>/new/estimates.json` of benchmarks outside a group (sorted by id). Criterion
/// writes an id's `/` as `_` in a directory name, so an ungrouped `a/b` is listed as `a_b`.
pub fn read_micro(dir: &Path) -> Vec<Micro> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ns) = median_ns(&entry.path()) {
            found.push(Micro {
                id: name,
                median_ns: ns,
            });
            continue;
        }
        let Ok(benches) = std::fs::read_dir(entry.path()) else {
            continue;
        };
        for bench in benches.flatten() {
            if let Some(ns) = median_ns(&bench.path()) {
                found.push(Micro {
                    id: format!("{name}/{}", bench.file_name().to_string_lossy()),
                    median_ns: ns,
                });
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// The median of a benchmark directory's latest run, if it has one.
fn median_ns(bench: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(bench.join("new").join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// The figures of the system labelled `prefix...`.
fn system<'a>(f: &'a Figures, prefix: &str) -> Option<&'a SystemFigures> {
    f.systems.iter().find(|s| s.label.starts_with(prefix))
}

/// A target of the issue: what, the figure, the bound, met or not.
#[derive(Debug, Clone)]
pub struct Target {
    /// What it says.
    pub what: &'static str,
    /// The measured value in words.
    pub measured: String,
    /// Whether it holds.
    pub met: bool,
}

/// Why a throughput ratio cannot be judged in this run, if it cannot: the probe of a system
/// that does strictly less work (`lighter`) served less than one doing more (`heavier`), which
/// only a disturbance on the shared machine explains.
fn disturbed(lighter: &SystemFigures, heavier: &SystemFigures) -> Option<String> {
    (lighter.max_rps < heavier.max_rps).then(|| {
        format!(
            "; not judged: the probe of \"{}\" ({:.0}/s) was below \"{}\" ({:.0}/s), which does \
             more work, so it was disturbed",
            lighter.label, lighter.max_rps, heavier.label, heavier.max_rps
        )
    })
}

/// Evaluates the targets on `f`. A throughput target whose probes contradict each other (see
/// [`disturbed`]) is reported as not met, with the reason.
pub fn targets(f: &Figures) -> Vec<Target> {
    let mut out = Vec::new();
    let (Some(direct), Some(nginx), Some(bare), Some(noop), Some(real), Some(pooled), Some(fresh)) = (
        system(f, "direct"),
        system(f, "nginx"),
        system(f, "gateway, 0"),
        system(f, "gateway, 5 no-op plugins ("),
        system(f, "gateway, 5 realistic plugins ("),
        system(f, "gateway, 5 realistic plugins, pooled"),
        system(f, "gateway, 5 realistic, per-request"),
    ) else {
        return out;
    };
    let added = |s: &SystemFigures| s.p50_us - direct.p50_us;
    let added99 = |s: &SystemFigures| s.p99_us - direct.p99_us;
    let latency = |what: &'static str, real: &SystemFigures| {
        let ratio = added(real) / added(nginx);
        Target {
            what,
            measured: format!(
                "{:.0} µs vs nginx {:.0} µs: {ratio:.2}x (p99 added {:.0} µs)",
                added(real),
                added(nginx),
                added99(real)
            ),
            met: ratio <= 1.2,
        }
    };
    out.push(latency(
        "added p50, 5 realistic plugins <= 1.2 x nginx's added p50",
        real,
    ));
    // `heavier`: the realistic five on the same isolation, which do strictly more work.
    let against_bare = |what: &'static str, noop: &SystemFigures, heavier: &SystemFigures| {
        let extra = noop.p50_us - bare.p50_us;
        let share = noop.max_rps / bare.max_rps;
        let bare_disturbed = disturbed(bare, noop).or_else(|| disturbed(noop, heavier));
        Target {
            what,
            measured: format!(
                "{extra:+.1} µs at p50; {:.0} %% of the max RPS{}",
                share * 100.0,
                bare_disturbed.as_deref().unwrap_or_default()
            )
            .replace("%%", "%"),
            met: extra <= 20.0 && share >= 0.85 && bare_disturbed.is_none(),
        }
    };
    out.push(against_bare(
        "5 no-op plugins vs 0: <= 20 µs more at p50 and >= 85 % of the throughput",
        noop,
        real,
    ));
    // Per-request instances run the same five and instantiate them for every request too.
    let throughput = |what: &'static str, real: &SystemFigures| {
        let nginx_disturbed = disturbed(nginx, bare).or_else(|| disturbed(real, fresh));
        let rps_ratio = real.max_rps / nginx.max_rps;
        Target {
            what,
            measured: format!(
                "{:.0} vs {:.0}: {rps_ratio:.2}x{}",
                real.max_rps,
                nginx.max_rps,
                nginx_disturbed.as_deref().unwrap_or_default()
            ),
            met: rps_ratio >= 0.6 && nginx_disturbed.is_none(),
        }
    };
    out.push(throughput(
        "max RPS at p99 < 5 ms, 5 realistic plugins >= 0.6 x nginx's",
        real,
    ));
    // The target is in MB (10^6 bytes); the table's RSS columns are in MiB.
    let peak_mb = real.rss_peak_kib as f64 * 1024.0 / 1e6;
    let peak_mib = real.rss_peak_kib as f64 / 1024.0;
    out.push(Target {
        what: "RSS with 5 plugins under load <= 100 MB",
        measured: format!("{peak_mb:.0} MB ({peak_mib:.0} MiB) peak"),
        met: peak_mb <= 100.0,
    });
    let fresh_share = fresh.max_rps / pooled.max_rps;
    let pooled_disturbed = disturbed(pooled, fresh);
    out.push(Target {
        what: "per-request instances keep >= 80 % of the pooled throughput",
        measured: format!(
            "{:.0} vs {:.0} RPS: {:.0} %{}",
            fresh.max_rps,
            pooled.max_rps,
            fresh_share * 100.0,
            pooled_disturbed.as_deref().unwrap_or_default()
        ),
        met: fresh_share >= 0.8 && pooled_disturbed.is_none(),
    });
    // The same targets for plugins that do not declare `shared-instances` (or are configured
    // `"isolation": "pooled"`): one instance held per request in flight.
    if let Some(noop_pooled) = system(f, "gateway, 5 no-op plugins, pooled") {
        out.push(against_bare(
            "the same with pooled instances (what a plugin that does not declare \
             `shared-instances` gets)",
            noop_pooled,
            pooled,
        ));
    }
    out.push(latency(
        "added p50, the realistic five on pooled instances <= 1.2 x nginx's",
        pooled,
    ));
    out.push(throughput(
        "max RPS, the realistic five on pooled instances >= 0.6 x nginx's",
        pooled,
    ));
    out
}

/// Renders the whole report.
pub fn render(f: &Figures, micro: &[Micro], p: &Provenance) -> String {
    let mut s = String::new();
    let direct = f.systems.first().cloned().unwrap_or_default();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `just bench` (`bench/`, see its doc comment for the method). One run; the \
         machine is shared and noisy, so read the **ratios**, not the absolute figures.\n"
    );
    let _ = writeln!(s, "- Commit: `{}`", p.commit);
    let _ = writeln!(s, "- Date: {}", p.date);
    let _ = writeln!(s, "- Machine: {}", p.machine);
    let _ = writeln!(s, "- Load generator: {} ; proxy: {}", f.oha, f.nginx);
    let _ = writeln!(
        s,
        "- Pinning: the system under test on core 0; oha and the mock upstream on core 1. \
         Gateway: release build, 1 core, default log level (info).\n"
    );

    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
    for t in targets(f) {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t.what,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }

    let _ = writeln!(s, "\n## Latency, throughput, CPU and memory\n");
    let _ = writeln!(
        s,
        "c=1: one connection, closed loop, median of the rounds' percentiles. Added: minus direct. \
         Max RPS: highest open-loop rate (latency-corrected) with p99 < 5 ms and no error (a rate \
         fails when two probes in a row fail it). CPU: the system's own process at a fixed \
         rate. RSS: after start, and the peak under all the load (start-up, which may compile \
         components, excluded).\n"
    );
    let _ = writeln!(
        s,
        "| system | p50 µs | p99 µs | added p50 µs | added p99 µs | max RPS | x nginx RPS | CPU µs/req | RSS idle MiB | RSS peak MiB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let nginx_rps = system(f, "nginx").map_or(f64::NAN, |n| n.max_rps);
    for x in &f.systems {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} |",
            x.label,
            x.p50_us,
            x.p99_us,
            x.p50_us - direct.p50_us,
            x.p99_us - direct.p99_us,
            x.max_rps,
            x.max_rps / nginx_rps,
            x.cpu_us_per_request,
            x.rss_idle_kib as f64 / 1024.0,
            x.rss_peak_kib as f64 / 1024.0
        );
    }

    if !f.slow.is_empty() {
        let _ = writeln!(s, "\n## 50 ms upstream, 64 connections\n");
        let _ = writeln!(s, "| system | RPS | p50 ms |\n|---|---:|---:|");
        for (label, rps, p50) in &f.slow {
            let _ = writeln!(s, "| {label} | {rps:.0} | {:.2} |", p50 / 1e3);
        }
    }

    let _ = writeln!(s, "\n## Startup with 10 plugins\n");
    let _ = writeln!(
        s,
        "Time from process start to serving (median of the starts): cold, with an empty \
         compiled-component cache, **{:.0} ms**; warm, loading the cache, **{:.0} ms** \
         ({:.1}x faster).",
        f.startup_cold_ms,
        f.startup_warm_ms,
        f.startup_cold_ms / f.startup_warm_ms
    );

    if !micro.is_empty() {
        let _ = writeln!(
            s,
            "\n## Micro-benchmarks (criterion, `host/benches/hot_path.rs`)\n"
        );
        let _ = writeln!(s, "| benchmark | median |\n|---|---:|");
        for m in micro {
            let _ = writeln!(s, "| {} | {} |", m.id, human_ns(m.median_ns));
        }
    }
    s
}

/// `1234.5` ns as `1.23 µs`, and so on.
pub fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_benchmarks_are_read_in_and_outside_groups() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, ns: f64| {
            let new = dir.path().join(path).join("new");
            std::fs::create_dir_all(&new).unwrap();
            let json = serde_json::json!({"median": {"point_estimate": ns}});
            std::fs::write(new.join("estimates.json"), json.to_string()).unwrap();
        };
        write("hook/pre_hook_1kb_noop", 3480.0);
        write("instance_checkout_checkin", 540.0);
        // criterion's own report directory has no estimates: skipped.
        std::fs::create_dir_all(dir.path().join("report")).unwrap();
        let found: Vec<(String, f64)> = read_micro(dir.path())
            .into_iter()
            .map(|m| (m.id, m.median_ns))
            .collect();
        assert_eq!(
            found,
            [
                ("hook/pre_hook_1kb_noop".to_string(), 3480.0),
                ("instance_checkout_checkin".to_string(), 540.0),
            ]
        );
    }

    fn sys(label: &str, p50: f64, rps: f64, peak_kib: u64) -> SystemFigures {
        SystemFigures {
            label: label.into(),
            p50_us: p50,
            p99_us: p50 * 2.0,
            max_rps: rps,
            rss_peak_kib: peak_kib,
            ..SystemFigures::default()
        }
    }

    fn figures() -> Figures {
        Figures {
            systems: vec![
                sys("direct to the mock upstream", 100.0, 20000.0, 5000),
                sys("nginx proxy_pass (keepalive)", 150.0, 10000.0, 5000),
                sys("gateway, 0 plugins", 140.0, 9000.0, 30000),
                sys(
                    "gateway, 5 no-op plugins (shared instances, as declared)",
                    155.0,
                    8000.0,
                    40000,
                ),
                sys(
                    "gateway, 5 no-op plugins, pooled instances (config)",
                    170.0,
                    7500.0,
                    45000,
                ),
                sys(
                    "gateway, 5 realistic plugins (shared instances, as declared)",
                    155.0,
                    8000.0,
                    40000,
                ),
                sys(
                    "gateway, 5 realistic plugins, pooled instances (config)",
                    200.0,
                    7000.0,
                    60000,
                ),
                sys(
                    "gateway, 5 realistic, per-request instances",
                    230.0,
                    5000.0,
                    70000,
                ),
            ],
            ..Figures::default()
        }
    }

    #[test]
    fn targets_are_judged_from_the_figures() {
        let t = targets(&figures());
        assert_eq!(t.len(), 8);
        // The targets name the plugins as configured by default: shared, as they declare.
        // added p50: 55 vs nginx 50 = 1.1x: met.
        assert!(t[0].met && t[0].measured.contains("1.10x"), "{t:?}");
        // +15 µs and 89 % of the throughput: met.
        assert!(t[1].met, "{t:?}");
        assert!(t[1].measured.starts_with("+15.0 µs at p50; 89 %"), "{t:?}");
        // 8000 / 10000 = 0.8: met.
        assert!(
            t[2].met && t[2].measured.starts_with("8000 vs 10000: 0.80x"),
            "{t:?}"
        );
        // 40000 KiB = 39 MiB: met.
        assert!(t[3].met, "{t:?}");
        // Per-request against pooled: 5000 / 7000 = 71 %: missed.
        assert!(!t[4].met, "{t:?}");
        assert!(t[4].measured.starts_with("5000 vs 7000 RPS: 71 %"), "{t:?}");
        // Pooled no-op five: +30 µs, 83 %: missed.
        assert!(!t[5].met, "{t:?}");
        // Pooled realistic five: 100 vs 50 = 2x: missed; 7000 / 10000 = 0.7: met.
        assert!(!t[6].met && t[6].measured.contains("2.00x"), "{t:?}");
        assert!(t[7].met, "{t:?}");

        // Without the pooled no-op five, their row is left out.
        let mut f = figures();
        f.systems.remove(4);
        assert_eq!(targets(&f).len(), 7);

        // A no-op five faster than no plugin (noise at c=1) reads as a negative difference.
        let mut f = figures();
        f.systems[3].p50_us = 127.0;
        assert!(
            targets(&f)[1].measured.starts_with("-13.0 µs at p50"),
            "{f:?}"
        );

        // The memory target is in MB: 98,000 KiB is 95.7 MiB but 100.4 MB, missed.
        let mut f = figures();
        f.systems[5].rss_peak_kib = 98_000;
        let t = targets(&f);
        assert!(!t[3].met, "{t:?}");
        assert!(t[3].measured.starts_with("100 MB (96 MiB)"), "{t:?}");
    }

    #[test]
    fn contradicting_throughput_probes_are_not_judged() {
        // nginx below the no-plugin gateway, per-request above pooled, 5 no-op above 0 plugins:
        // each ratio would pass, but only a disturbed probe produces such figures.
        let mut f = figures();
        f.systems[1].max_rps = 93.0;
        f.systems[2].max_rps = 7000.0;
        f.systems[3].max_rps = 8000.0;
        f.systems[6].max_rps = 93.0;
        f.systems[7].max_rps = 287.0;
        let t = targets(&f);
        for i in [1, 2, 4, 7] {
            assert!(!t[i].met, "{t:?}");
            assert!(t[i].measured.contains("not judged"), "{t:?}");
        }
        // A system below one that does strictly more work: the realistic five (shared) below
        // the same five under per-request isolation, the pooled no-op five below the pooled
        // realistic five.
        let mut f = figures();
        f.systems[5].max_rps = 93.0;
        f.systems[4].max_rps = 1150.0;
        let t = targets(&f);
        for i in [2, 5] {
            assert!(!t[i].met, "{t:?}");
            assert!(t[i].measured.contains("not judged"), "{t:?}");
        }
        assert!(t[2].measured.contains("per-request"), "{t:?}");
        assert!(
            t[5].measured
                .contains("pooled instances (config)\" (7000/s)"),
            "{t:?}"
        );

        // The undisturbed figures are judged as before.
        let t = targets(&figures());
        assert!(
            t.iter().all(|t| !t.measured.contains("not judged")),
            "{t:?}"
        );
    }

    #[test]
    fn the_report_names_every_system_and_target() {
        let text = render(&figures(), &[], &Provenance::default());
        for s in &figures().systems {
            assert!(text.contains(&s.label), "{}", s.label);
        }
        assert!(text.contains("| **no** |") && text.contains("| yes |"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ns(512.0), "512 ns");
        assert_eq!(human_ns(2_500.0), "2.50 µs");
        assert_eq!(human_ns(3_000_000.0), "3.00 ms");
    }
}
