//! The systems measured side by side: the mock upstream itself, nginx proxying to it, and the
//! gateway proxying to it with 0 plugins, 5 no-op plugins (as they declare: shared per call;
//! then pooled by config), 5 realistic plugins (as they declare: shared per call; pooled by
//! config; under per-request isolation; and without fuel metering). Each is started pinned to
//! the server core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};
use wasmgate_artifacts as artifacts;

use crate::procs::{self, Proc, SERVER_CORE, Stream};

/// The gateway setups measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No plugin at all: the gateway's own cost.
    Bare,
    /// Five plugins whose pre- and post-hooks change nothing (`pass` and `none`: nothing is
    /// copied back), configured without `isolation`: they declare `shared-instances`, so
    /// instances are taken per hook call, not held by the request.
    Noop5,
    /// The same five with `"isolation": "pooled"`: one instance held per request in flight.
    Noop5Pooled,
    /// auth, rate-limit, content-filter, cache (every request a miss), logging, configured
    /// without `isolation`: they keep their per-request state in the request's context and
    /// declare `shared-instances`, so any instance serves any hook call.
    Realistic5,
    /// The same five with `"isolation": "pooled"`.
    Realistic5Pooled,
    /// The same five, each request on instances that never served another.
    Realistic5Fresh,
    /// The same five, as they declare, with fuel metering off (`runtime.fuel: false`).
    Realistic5NoFuel,
}

impl Setup {
    /// Every setup, in report order.
    pub const ALL: [Setup; 7] = [
        Setup::Bare,
        Setup::Noop5,
        Setup::Noop5Pooled,
        Setup::Realistic5,
        Setup::Realistic5Pooled,
        Setup::Realistic5Fresh,
        Setup::Realistic5NoFuel,
    ];

    /// Its label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Setup::Bare => "gateway, 0 plugins",
            Setup::Noop5 => "gateway, 5 no-op plugins (shared instances, as declared)",
            Setup::Noop5Pooled => "gateway, 5 no-op plugins, pooled instances (config)",
            Setup::Realistic5 => "gateway, 5 realistic plugins (shared instances, as declared)",
            Setup::Realistic5Pooled => "gateway, 5 realistic plugins, pooled instances (config)",
            Setup::Realistic5Fresh => "gateway, 5 realistic, per-request instances",
            Setup::Realistic5NoFuel => "gateway, 5 realistic, no fuel metering",
        }
    }

    /// Its plugin list.
    pub fn plugins(self) -> Vec<Value> {
        match self {
            Setup::Bare => vec![],
            Setup::Noop5 => (1..=5)
                .map(|i| json!({"name": format!("noop{i}"), "path": artifacts::NOOP}))
                .collect(),
            Setup::Noop5Pooled => with_isolation(Setup::Noop5.plugins(), "pooled"),
            Setup::Realistic5 | Setup::Realistic5NoFuel => realistic(),
            Setup::Realistic5Pooled => with_isolation(realistic(), "pooled"),
            Setup::Realistic5Fresh => with_isolation(realistic(), "per-request"),
        }
    }

    /// Its runtime settings (`runtime` in the config).
    pub fn runtime(self) -> Value {
        match self {
            Setup::Realistic5NoFuel => json!({"fuel": false}),
            _ => json!({}),
        }
    }
}

/// `plugins`, each with `"isolation": isolation`.
fn with_isolation(plugins: Vec<Value>, isolation: &str) -> Vec<Value> {
    plugins
        .into_iter()
        .map(|mut p| {
            p["isolation"] = json!(isolation);
            p
        })
        .collect()
}

/// auth, rate-limit, content-filter, cache and logging as a deployment would configure them.
/// The cache stores nothing (`max_entry_bytes: 1`), so every request is a miss that pays for
/// the lookup and goes on to the upstream.
fn realistic() -> Vec<Value> {
    vec![
        json!({"name": "auth", "path": artifacts::AUTH,
               "config": {"keys": ["sk-bench", "sk-other"]}}),
        json!({"name": "rate-limit", "path": artifacts::RATE_LIMIT,
               "config": {"rules": [{"key": "header:authorization", "requests": 1_000_000_000u64,
                                     "window_seconds": 60}]}}),
        json!({"name": "content-filter", "path": artifacts::CONTENT_FILTER,
               "config": {"patterns": ["\\bpassword\\b", "sk-[A-Za-z0-9]{20,40}"],
                          "action": "redact"}}),
        json!({"name": "cache", "path": artifacts::CACHE,
               "config": {"max_entry_bytes": 1}}),
        json!({"name": "logging", "path": artifacts::LOGGING, "config": {}}),
    ]
}

/// Ten distinct plugins with working configs, for the startup measurement.
pub fn ten_plugins() -> Vec<Value> {
    let mut plugins = realistic();
    plugins.extend([
        json!({"name": "noop", "path": artifacts::NOOP}),
        json!({"name": "hello-world", "path": artifacts::HELLO_WORLD}),
        json!({"name": "header-injector", "path": artifacts::HEADER_INJECTOR,
               "config": {}}),
        json!({"name": "governance", "path": artifacts::GOVERNANCE,
               "config": {"keys": {"vk-bench": {}}, "require_known_keys": false}}),
        json!({"name": "stamp", "path": artifacts::STAMP_V1}),
    ]);
    plugins
}

/// A gateway config serving `upstream` as provider `up` (and `slow`, 50 ms) with `plugins`
/// and `runtime` settings.
pub fn gateway_config(
    dir: &Path,
    upstream: SocketAddr,
    plugins: Vec<Value>,
    runtime: Value,
) -> Value {
    json!({
        "listen": "127.0.0.1:0",
        "plugins_dir": dir.join("no-plugins"),
        "cache_dir": dir.join("cache"),
        "runtime": runtime,
        "plugins": plugins,
        "providers": {
            "up": {"type": "openai", "base_url": format!("http://{upstream}/v1")},
            "slow": {"type": "openai", "base_url": format!("http://{upstream}/slow/v1")},
        },
    })
}

/// Starts the gateway binary `bin` with `config` (written to `dir/<file>`), pinned to the
/// server core; returns it, its address and how long it took to serve.
pub fn start_gateway(
    bin: &Path,
    dir: &Path,
    file: &str,
    config: &Value,
) -> anyhow::Result<(Proc, SocketAddr, std::time::Duration)> {
    std::fs::create_dir_all(dir.join("no-plugins"))?;
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
    let mut command = procs::pinned(SERVER_CORE, bin);
    command.arg("--config").arg(&path);
    // The default log level: the logging plugin's line per request is part of its cost.
    command.env("RUST_LOG", "info");
    let (proc, line, took) =
        procs::start_until_line(file, command, Stream::Stdout, "wasmgate is serving")?;
    let addr = procs::addr_in(&line)?;
    Ok((proc, addr, took))
}

/// Starts nginx as a single process (no master) on the server core, proxying to `upstream`
/// with a keep-alive pool, as a reverse proxy in front of an LLM API would be set up.
pub fn start_nginx(dir: &Path, upstream: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let port = procs::free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\n\
         daemon off;\n\
         master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           upstream llm {{ server {upstream}; keepalive 64; }}\n\
           server {{\n\
             listen {addr};\n\
             location / {{\n\
               proxy_pass http://llm;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
             }}\n\
           }}\n\
         }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut command = procs::pinned(SERVER_CORE, &nginx_binary()?);
    command.arg("-c").arg(&path).arg("-p").arg(dir);
    let proc = procs::start_until_listening("nginx", command, addr)?;
    Ok((proc, addr))
}

/// nginx's binary (Debian's package puts it in /usr/sbin).
pub fn nginx_binary() -> anyhow::Result<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("nginx is not installed: `just bench` installs it (apt-get install nginx-light)")
}

/// nginx's version line.
pub fn nginx_version() -> String {
    nginx_binary()
        .ok()
        .and_then(|bin| std::process::Command::new(bin).arg("-v").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_differ_from_their_base_only_in_isolation() {
        let strip = |plugins: Vec<Value>| -> Vec<Value> {
            plugins
                .into_iter()
                .map(|mut p| {
                    p.as_object_mut().map(|o| o.remove("isolation"));
                    p
                })
                .collect()
        };
        for (variant, base, isolation) in [
            (Setup::Noop5Pooled, Setup::Noop5, "pooled"),
            (Setup::Realistic5Pooled, Setup::Realistic5, "pooled"),
            (Setup::Realistic5Fresh, Setup::Realistic5, "per-request"),
        ] {
            let plugins = variant.plugins();
            assert_eq!(plugins.len(), 5);
            assert!(
                plugins.iter().all(|p| p["isolation"] == isolation),
                "{plugins:?}"
            );
            assert!(base.plugins().iter().all(|p| p.get("isolation").is_none()));
            assert_eq!(strip(plugins), base.plugins());
        }
    }
}
