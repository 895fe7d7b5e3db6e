//! The hostile-plugin matrix: every plugin under `tests/hostile-plugins/`, misbehaving in every
//! hook it can, under fail-closed and fail-open. For each, what the client gets, what the admin
//! API shows, and that the next request is served.
//!
//! | plugin (hook)                  | fail-closed client error                 | fail-open | admin API                                |
//! |--------------------------------|------------------------------------------|-----------|------------------------------------------|
//! | loop (transport, pre, post)    | 500 `plugin_out_of_fuel`                 | 200       | active, `failures.plugin_out_of_fuel` 1  |
//! | loop, ample fuel (pre)         | 500 `plugin_deadline_exceeded`           | 200       | active, `failures.plugin_deadline_exceeded` 1 |
//! | recursion (transport, pre, post) | 500 `plugin_stack_overflow`            | 200       | active, `failures.plugin_stack_overflow` 1 |
//! | memory (transport, pre, post)  | 500 `plugin_memory_limit`                | 200       | active, `failures.plugin_memory_limit` 1 |
//! | panic (transport, pre, post)   | 500 `plugin_trap` with the panic message | 200       | active, `failures.plugin_trap` 1         |
//! | huge-output, 256 MiB cap (transport, pre, post) | 500 `plugin_output_too_large` | 200 | active, `failures.plugin_output_too_large` 1 |
//! | huge-output, default cap (pre) | 500 `plugin_memory_limit`                | 200       | active                                   |
//! | nested-json (pre, post)        | 500 `plugin_invalid_output`              | 200       | active, `failures.plugin_invalid_output` 1 |
//! | slow, under its deadline (pre) | 200 (only later)                         | 200       | active, no failures                      |
//! | any of the above in `init`     | not in the chain: 200 (503 `plugin_unavailable` when `required`) | same | failed, with the cause |
//! | any of the above in `cleanup`  | shutdown and reloads complete            | same      |                                          |
//! | huge-table                     | not in the chain: 200                    | same      | failed: the table limit named            |
//! | future-world / past-world      | not in the chain: 200                    | same      | failed: both world versions named        |
//! | wasi (env, files, sockets)     | 200: every attempt refused by WASI       | same      | active                                   |
//!
//! Every failure is one request's: a benign request right after it is served by the same
//! gateway through every plugin. (Non-wasm, empty, truncated, core-module, oversized and
//! wrong-world files are in `loading.rs`.)

use serde_json::{Value, json};
use wasmgate::config::{FailurePolicy, LimitsConfig, PluginConfig};
use wasmgate::runtime::{DirGrant, Grants, Isolation};
use wasmgate_e2e::{TestGateway, artifacts, chat_body, content_of, plugin, with_limits};

/// A hostile plugin `kind` misbehaving in `hook` on requests carrying `x-hostile: <name>`.
fn hostile(name: &str, path: &str, hook: &str, extra: Value) -> PluginConfig {
    let mut config = json!({"hook": hook, "trigger": name});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    plugin(name, path, config)
}

/// One runtime misbehaviour of the matrix: the plugin entry and what fail-closed reports.
struct Case {
    plugin: PluginConfig,
    code: &'static str,
    /// A phrase the error message must contain (the cause, in words).
    needle: &'static str,
}

fn mib(mb: u64) -> LimitsConfig {
    LimitsConfig {
        memory_mb: Some(mb),
        ..Default::default()
    }
}

/// Every runtime misbehaviour (transport interceptor, pre-hook, post-hook).
fn runtime_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for hook in ["transport", "pre", "post"] {
        let fuel = LimitsConfig {
            fuel: Some(5_000_000),
            ..Default::default()
        };
        cases.push(Case {
            plugin: with_limits(
                hostile(
                    &format!("loop-{hook}"),
                    artifacts::HOSTILE_LOOP,
                    hook,
                    json!({}),
                ),
                fuel,
            ),
            code: "plugin_out_of_fuel",
            needle: "ran out of fuel",
        });
        cases.push(Case {
            plugin: hostile(
                &format!("recursion-{hook}"),
                artifacts::HOSTILE_RECURSION,
                hook,
                json!({}),
            ),
            code: "plugin_stack_overflow",
            needle: "overflowed the wasm stack",
        });
        cases.push(Case {
            plugin: with_limits(
                hostile(
                    &format!("memory-{hook}"),
                    artifacts::HOSTILE_MEMORY,
                    hook,
                    json!({}),
                ),
                mib(16),
            ),
            code: "plugin_memory_limit",
            needle: "16 MiB cap",
        });
        cases.push(Case {
            plugin: hostile(
                &format!("panic-{hook}"),
                artifacts::HOSTILE_PANIC,
                hook,
                json!({}),
            ),
            code: "plugin_trap",
            needle: "hostile-panic in",
        });
        cases.push(Case {
            plugin: with_limits(
                hostile(
                    &format!("huge-output-{hook}"),
                    artifacts::HOSTILE_HUGE_OUTPUT,
                    hook,
                    json!({}),
                ),
                // Building 100 MB takes a few hundred million instructions: enough fuel and
                // time that the output limit is what stops it.
                LimitsConfig {
                    memory_mb: Some(256),
                    fuel: Some(u64::MAX / 2),
                    timeout_ms: Some(10_000),
                    ..Default::default()
                },
            ),
            code: "plugin_output_too_large",
            needle: "returned 100000",
        });
    }
    for hook in ["pre", "post"] {
        cases.push(Case {
            plugin: hostile(
                &format!("nested-json-{hook}"),
                artifacts::HOSTILE_NESTED_JSON,
                hook,
                json!({}),
            ),
            code: "plugin_invalid_output",
            needle: "recursion limit",
        });
    }
    cases.push(Case {
        plugin: with_limits(
            hostile(
                "loop-deadline-pre",
                artifacts::HOSTILE_LOOP,
                "pre",
                json!({}),
            ),
            LimitsConfig {
                fuel: Some(u64::MAX / 2),
                timeout_ms: Some(100),
                ..Default::default()
            },
        ),
        code: "plugin_deadline_exceeded",
        needle: "100 ms deadline",
    });
    cases.push(Case {
        plugin: hostile(
            "huge-output-small-pre",
            artifacts::HOSTILE_HUGE_OUTPUT,
            "pre",
            json!({}),
        ),
        code: "plugin_memory_limit",
        needle: "64 MiB cap",
    });
    cases
}

fn hook_words(name: &str) -> &'static str {
    if name.ends_with("-transport") {
        "transport-interceptor"
    } else if name.ends_with("-post") {
        "post-hook"
    } else {
        "pre-hook"
    }
}

async fn runtime_matrix(policy: FailurePolicy) {
    let cases = runtime_cases();
    let mut plugins: Vec<PluginConfig> = cases
        .iter()
        .map(|c| PluginConfig {
            policy,
            ..c.plugin.clone()
        })
        .collect();
    plugins.push(PluginConfig {
        policy,
        ..with_limits(
            hostile(
                "slow-pre",
                artifacts::HOSTILE_SLOW,
                "pre",
                json!({"ms": 150}),
            ),
            LimitsConfig {
                timeout_ms: Some(1_000),
                ..Default::default()
            },
        )
    });
    let gw = TestGateway::start_with(|config| {
        config.runtime.max_memory_bytes = 256 << 20;
        config.plugins = plugins;
    })
    .await;

    for case in &cases {
        let name = case.plugin.name.as_str();
        let (status, body) = gw
            .chat_with_headers(&chat_body("mock/echo", "hi"), &[("x-hostile", name)])
            .await;
        match policy {
            FailurePolicy::FailClosed => {
                assert_eq!(status, 500, "{name}: {body}");
                assert_eq!(body["error"]["type"], "plugin_error", "{name}: {body}");
                assert_eq!(body["error"]["code"], case.code, "{name}: {body}");
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(&format!("plugin `{name}` failed in {}", hook_words(name))),
                    "{name}: names the plugin and the hook: {message}"
                );
                assert!(
                    message.contains(case.needle),
                    "{name}: the cause: {message}"
                );
                assert!(message.len() < 4096, "{name}: the output is not echoed");
            }
            FailurePolicy::FailOpen => {
                assert_eq!(status, 200, "{name}: the hook is skipped: {body}");
                assert_eq!(content_of(&body), "echo: hi", "{name}");
            }
        }
        let (status, body) = gw.chat(&chat_body("mock/echo", "next")).await;
        assert_eq!(
            status, 200,
            "after {name}, the next request is served: {body}"
        );
        assert_eq!(content_of(&body), "echo: next");
    }

    let (status, body) = gw
        .chat_with_headers(
            &chat_body("mock/echo", "slow"),
            &[("x-hostile", "slow-pre")],
        )
        .await;
    assert_eq!(
        status, 200,
        "a slow plugin under its deadline only delays: {body}"
    );

    for case in &cases {
        let name = case.plugin.name.as_str();
        let view = gw.plugin_status(name).await;
        assert_eq!(view["status"], "active", "{name}: {view}");
        assert_eq!(
            view["stats"]["failures"][case.code], 1,
            "{name}: the failure is counted by kind: {view}"
        );
    }
    let slow = gw.plugin_status("slow-pre").await;
    assert_eq!(slow["stats"]["failures"], json!({}), "{slow}");
    gw.stop().await;
}

#[tokio::test]
async fn every_hostile_hook_fails_only_its_own_request_when_fail_closed() {
    runtime_matrix(FailurePolicy::FailClosed).await;
}

#[tokio::test]
async fn every_hostile_hook_is_skipped_when_fail_open() {
    runtime_matrix(FailurePolicy::FailOpen).await;
}

#[tokio::test]
async fn hostile_inits_and_unloadable_components_are_refused_at_load() {
    let loop_fuel = LimitsConfig {
        fuel: Some(5_000_000),
        ..Default::default()
    };
    let plugins = vec![
        with_limits(
            hostile("loop-init", artifacts::HOSTILE_LOOP, "init", json!({})),
            loop_fuel,
        ),
        hostile(
            "recursion-init",
            artifacts::HOSTILE_RECURSION,
            "init",
            json!({}),
        ),
        with_limits(
            hostile("memory-init", artifacts::HOSTILE_MEMORY, "init", json!({})),
            mib(16),
        ),
        hostile("panic-init", artifacts::HOSTILE_PANIC, "init", json!({})),
        plugin("huge-table", artifacts::HOSTILE_HUGE_TABLE, json!({})),
        plugin("future-world", artifacts::HOSTILE_FUTURE_WORLD, json!({})),
        plugin("past-world", artifacts::HOSTILE_PAST_WORLD, json!({})),
        plugin("hello", artifacts::HELLO_WORLD, json!({})),
    ];
    let gw = TestGateway::with_plugins(plugins.clone()).await;
    for (name, needles) in [
        ("loop-init", &["init", "ran out of fuel"][..]),
        ("recursion-init", &["init", "overflowed the wasm stack"]),
        ("memory-init", &["init", "16 MiB cap"]),
        ("panic-init", &["init", "hostile-panic in Init"]),
        (
            "huge-table",
            &[
                "asks for more than a plugin instance may have",
                "minimum element size of 50000",
            ],
        ),
        (
            "future-world",
            &[
                "built against wasmgate:plugin@0.8.0",
                "speaks wasmgate:plugin@0.7.0",
                "newer plugin world",
            ],
        ),
        (
            "past-world",
            &[
                "built against wasmgate:plugin@0.1.0",
                "speaks wasmgate:plugin@0.7.0",
                "older plugin world",
            ],
        ),
    ] {
        let view = gw.plugin_status(name).await;
        assert_eq!(view["status"], "failed", "{name}: {view}");
        let error = view["error"].as_str().unwrap_or_default();
        for needle in needles {
            assert!(error.contains(needle), "{name}: {needle:?} in {error}");
        }
    }
    assert_eq!(gw.plugin_status("hello").await["status"], "active");
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "the plugins that loaded serve: {body}");
    gw.stop().await;

    // The same broken plugin marked `required`: every request is refused, naming it, rather
    // than served without it.
    let mut required = plugins;
    for p in &mut required {
        p.required = p.name == "panic-init";
    }
    let gw = TestGateway::with_plugins(required).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "plugin_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin `panic-init` is required but not active")
            && message.contains("hostile-panic in Init"),
        "{message}"
    );
    assert_eq!(gw.plugin_status("panic-init").await["required"], true);
    gw.stop().await;
}

#[tokio::test]
async fn hostile_cleanups_do_not_stop_shutdown() {
    let plugins = vec![
        with_limits(
            hostile(
                "loop-cleanup",
                artifacts::HOSTILE_LOOP,
                "cleanup",
                json!({}),
            ),
            LimitsConfig {
                fuel: Some(5_000_000),
                ..Default::default()
            },
        ),
        hostile(
            "recursion-cleanup",
            artifacts::HOSTILE_RECURSION,
            "cleanup",
            json!({}),
        ),
        with_limits(
            hostile(
                "memory-cleanup",
                artifacts::HOSTILE_MEMORY,
                "cleanup",
                json!({}),
            ),
            mib(16),
        ),
        hostile(
            "panic-cleanup",
            artifacts::HOSTILE_PANIC,
            "cleanup",
            json!({}),
        ),
    ];
    let gw = TestGateway::with_plugins(plugins).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "cleanup is not on the request path: {body}");
    // Shutdown runs every cleanup; each misbehaves and is stopped, and shutdown completes.
    gw.stop().await;
}

#[tokio::test]
async fn a_plugin_whose_init_keeps_a_host_resource_runs_init_in_every_per_request_instance() {
    // Reading a granted file in `init` leaves the guest holding the directory handle; a
    // snapshot of its memory would point at a handle fresh instances do not have.
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(data.path().join("motd.txt"), "granted text").expect("write");
    let mut p = plugin(
        "wasi",
        artifacts::HOSTILE_WASI,
        json!({"init_read": "/data/motd.txt", "read": "/data/motd.txt"}),
    );
    p.isolation = Some(Isolation::PerRequest);
    p.grants = Grants {
        env: vec![],
        read_dirs: vec![DirGrant {
            host: data.path().to_path_buf(),
            guest: "/data".into(),
        }],
    };
    let gw = TestGateway::with_plugins(vec![p]).await;
    for _ in 0..3 {
        let report = wasi_report(&gw).await;
        assert_eq!(report["init_read"]["ok"], "granted text", "{report}");
        assert_eq!(report["read"]["ok"], "granted text", "{report}");
    }
    let view = gw.plugin_status("wasi").await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(
        view["preinitialized"], false,
        "no snapshot of an instance holding a resource: {view}"
    );
    assert!(
        view["stats"]["instances_created"].as_u64().unwrap_or(0) >= 3,
        "{view}"
    );
    gw.stop().await;
}

/// The report `hostile-wasi` answers with.
async fn wasi_report(gw: &TestGateway) -> Value {
    let (status, body) = gw.chat(&chat_body("mock/echo", "try")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(content_of(&body)).expect("the plugin's JSON report")
}

#[tokio::test]
async fn wasi_capabilities_are_refused_unless_granted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let reachable = listener.local_addr().expect("addr").to_string();
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(data.path().join("motd.txt"), "granted text").expect("write");
    // PATH is set in the gateway's (this test's) process: the plugin sees it only when granted.
    let probe = json!({
        "env": "PATH",
        "read": "/data/motd.txt",
        "list": "/",
        "write": "/data/new.txt",
        "connect": reachable,
    });
    let wasi = |grants: Grants| {
        let mut p = plugin("wasi", artifacts::HOSTILE_WASI, probe.clone());
        p.grants = grants;
        p
    };

    let gw = TestGateway::with_plugins(vec![wasi(Grants::default())]).await;
    let report = wasi_report(&gw).await;
    for key in ["env", "read", "list", "write", "connect"] {
        assert!(
            report[key]["err"].is_string(),
            "{key} is refused by default: {report}"
        );
    }
    gw.stop().await;

    let grants = Grants {
        env: vec!["PATH".into()],
        read_dirs: vec![DirGrant {
            host: data.path().to_path_buf(),
            guest: "/data".into(),
        }],
    };
    let gw = TestGateway::with_plugins(vec![wasi(grants)]).await;
    let report = wasi_report(&gw).await;
    assert_eq!(
        report["env"]["ok"],
        std::env::var("PATH").expect("PATH"),
        "a granted variable is visible: {report}"
    );
    assert_eq!(report["read"]["ok"], "granted text", "{report}");
    assert!(
        report["write"]["err"].is_string(),
        "granted directories are read-only: {report}"
    );
    assert!(
        !data.path().join("new.txt").exists(),
        "nothing was written on the host"
    );
    assert!(
        report["connect"]["err"].is_string(),
        "the network is never granted: {report}"
    );
    let view = gw.plugin_status("wasi").await;
    assert_eq!(view["grants"]["env"], json!(["PATH"]), "{view}");
    gw.stop().await;
    drop(listener);
}
