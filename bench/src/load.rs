//! The load generator: `oha` (pinned to the load core) run closed-loop (`-c N -n M`) or
//! open-loop at a fixed rate with latency correction (`-q R -z T --latency-correction`), and
//! its JSON summary read into the figures the report needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::procs::{LOAD_CORE, pinned};

/// One request as every system gets it: the same body and headers.
#[derive(Debug, Clone)]
pub struct Request {
    /// Full URL.
    pub url: String,
    /// JSON body.
    pub body: String,
}

/// How much load, and how it is generated.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `connections` clients each sending the next request when the last is answered, for
    /// `requests` requests in all.
    Closed {
        /// Concurrent connections.
        connections: usize,
        /// Requests in all.
        requests: usize,
    },
    /// Requests sent at `rate` per second for `duration` whatever the answers, over up to
    /// `connections` connections; latency counted from when each request was due.
    Open {
        /// Requests per second.
        rate: u32,
        /// How long.
        duration: Duration,
        /// Connections available.
        connections: usize,
    },
}

/// What one oha run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Answers per second achieved.
    pub rps: f64,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed or were answered with another status.
    pub errors: u64,
}

/// Runs `oha` at `bin`.
#[derive(Debug, Clone)]
pub struct Oha {
    bin: PathBuf,
}

impl Oha {
    /// Uses the binary at `bin`, checking it runs.
    pub fn new(bin: &Path) -> anyhow::Result<Self> {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} (install it with `just bench`)", bin.display()))?;
        if !out.status.success() {
            bail!("{} --version failed", bin.display());
        }
        Ok(Self {
            bin: bin.to_path_buf(),
        })
    }

    /// The version line.
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// Sends `shape` of `request` and returns what oha measured.
    pub fn run(&self, request: &Request, shape: Shape) -> anyhow::Result<Measured> {
        let mut command = pinned(LOAD_CORE, &self.bin);
        command.args(["--no-tui", "--output-format", "json", "-m", "POST"]);
        command.args(["-H", "content-type: application/json"]);
        command.args(["-H", "authorization: Bearer sk-bench"]);
        command.args(["-d", &request.body]);
        match shape {
            Shape::Closed {
                connections,
                requests,
            } => {
                command.args(["-c", &connections.to_string()]);
                command.args(["-n", &requests.to_string()]);
            }
            Shape::Open {
                rate,
                duration,
                connections,
            } => {
                command.args(["-c", &connections.to_string()]);
                command.args(["-q", &rate.to_string(), "--latency-correction"]);
                command.args(["-z", &format!("{}ms", duration.as_millis())]);
                // Requests still in flight at the end are not errors.
                command.arg("-w");
            }
        }
        command.arg(&request.url);
        let out = command
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "oha failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "oha's output is not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        parse(&json)
    }
}

/// Reads oha's JSON summary (`--output-format json`): times are in seconds.
pub fn parse(json: &Value) -> anyhow::Result<Measured> {
    let seconds = |v: &Value, what: &str| {
        v.as_f64()
            .with_context(|| format!("oha's JSON has no number at {what}"))
    };
    let percentiles = &json["latencyPercentiles"];
    let statuses = json["statusCodeDistribution"]
        .as_object()
        .context("oha's JSON has no statusCodeDistribution")?;
    let mut ok = 0;
    let mut errors = 0;
    for (status, count) in statuses {
        let count = count.as_u64().unwrap_or(0);
        if status == "200" {
            ok += count;
        } else {
            errors += count;
        }
    }
    if let Some(failures) = json["errorDistribution"].as_object() {
        errors += failures.values().filter_map(Value::as_u64).sum::<u64>();
    }
    Ok(Measured {
        p50_us: seconds(&percentiles["p50"], "latencyPercentiles.p50").unwrap_or(f64::NAN) * 1e6,
        p99_us: seconds(&percentiles["p99"], "latencyPercentiles.p99").unwrap_or(f64::NAN) * 1e6,
        rps: seconds(&json["summary"]["requestsPerSec"], "summary.requestsPerSec")?,
        ok,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_is_read_with_errors_counted() {
        let json = serde_json::json!({
            "summary": {"successRate": 0.99, "requestsPerSec": 1234.5},
            "latencyPercentiles": {"p50": 0.000150, "p99": 0.000900},
            "statusCodeDistribution": {"200": 990, "502": 4},
            "errorDistribution": {"connection closed": 6}
        });
        let m = parse(&json).unwrap();
        assert!((m.p50_us - 150.0).abs() < 1e-6 && (m.p99_us - 900.0).abs() < 1e-6);
        assert_eq!((m.ok, m.errors), (990, 10));
        assert!((m.rps - 1234.5).abs() < 1e-9);
    }

    #[test]
    fn a_summary_without_statuses_is_refused() {
        assert!(parse(&serde_json::json!({"summary": {"requestsPerSec": 1.0}})).is_err());
    }
}
