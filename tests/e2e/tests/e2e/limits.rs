//! Sandbox limits and failure policies: every trap or exceeded limit fails only the request
//! that hit it (fail-closed: a 500 naming the plugin and the cause; fail-open: the hook is
//! skipped), the broken instance is discarded, and the next request is served.

use serde_json::json;
use wasmgate::config::LimitsConfig;
use wasmgate_e2e::{TestGateway, chat_body, content_of, fail_open, scripted, with_limits};

/// Runs one plugin whose pre-hook misbehaves with `action` on provider `mock` only, checks the
/// failed request's error, then checks a request to `backup` succeeds on a fresh instance.
async fn misbehave(action: &str, limits: LimitsConfig, code: &str, needle: &str) {
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "backup".into(),
            wasmgate::providers::ProviderConfig::Mock(Default::default()),
        );
        config.plugins = vec![with_limits(
            scripted("bad", json!({"pre": action, "pre_only_provider": "mock"})),
            limits,
        )];
    })
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 500, "{action}: {body}");
    assert_eq!(body["error"]["code"], code, "{action}: {body}");
    assert_eq!(body["error"]["type"], "plugin_error", "{action}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin `bad`"),
        "{action}: names the plugin: {message}"
    );
    assert!(
        message.contains("pre-hook"),
        "{action}: names the hook: {message}"
    );
    assert!(
        message.contains(needle),
        "{action}: names the cause: {message}"
    );

    let (status, body) = gw.chat(&chat_body("backup/echo", "next")).await;
    assert_eq!(status, 200, "{action}: the next request is served: {body}");
    assert_eq!(content_of(&body), "echo: next");

    let plugin = gw.plugin_status("bad").await;
    assert_eq!(plugin["status"], "active", "{plugin}");
    assert_eq!(
        plugin["stats"]["instances_created"], 2,
        "{action}: the broken instance was replaced: {plugin}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_fuel() {
    let limits = LimitsConfig {
        fuel: Some(5_000_000),
        ..Default::default()
    };
    misbehave("loop", limits, "plugin_out_of_fuel", "fuel").await;
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_deadline_when_fuel_is_plentiful() {
    let limits = LimitsConfig {
        fuel: Some(u64::MAX / 2),
        timeout_ms: Some(50),
        ..Default::default()
    };
    misbehave("loop", limits, "plugin_deadline_exceeded", "50 ms deadline").await;
}

#[tokio::test]
async fn without_fuel_metering_a_loop_is_stopped_by_the_deadline() {
    let gw = TestGateway::start_with(|config| {
        config.runtime.fuel = false;
        config.providers.insert(
            "backup".into(),
            wasmgate::providers::ProviderConfig::Mock(Default::default()),
        );
        config.plugins = vec![
            with_limits(
                scripted("bad", json!({"pre": "loop", "pre_only_provider": "mock"})),
                LimitsConfig {
                    timeout_ms: Some(50),
                    ..Default::default()
                },
            ),
            scripted("good", json!({})),
        ];
    })
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "plugin_deadline_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("50 ms deadline"), "{message}");

    // Other requests are served, and no fuel is reported where none is metered.
    for _ in 0..3 {
        let (status, body) = gw.chat(&chat_body("backup/echo", "next")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_of(&body), "echo: next");
    }
    let good = gw.plugin_status("good").await;
    assert!(good["stats"]["calls"].as_u64() > Some(3), "{good}");
    assert_eq!(good["stats"]["fuel_used"], 0, "{good}");
    gw.stop().await;
}

#[tokio::test]
async fn growing_memory_past_the_cap_is_stopped() {
    let limits = LimitsConfig {
        memory_mb: Some(16),
        ..Default::default()
    };
    misbehave("grow", limits, "plugin_memory_limit", "16 MiB").await;
}

#[tokio::test]
async fn unbounded_recursion_is_a_trap_not_a_crash() {
    misbehave(
        "recurse",
        LimitsConfig::default(),
        "plugin_stack_overflow",
        "stack",
    )
    .await;
}

#[tokio::test]
async fn a_per_plugin_stack_limit_applies_to_its_calls() {
    let limits = LimitsConfig {
        stack_kb: Some(64),
        ..Default::default()
    };
    misbehave("recurse", limits, "plugin_stack_overflow", "stack").await;
    let gw =
        TestGateway::with_plugins(vec![with_limits(scripted("small", json!({})), limits)]).await;
    let plugin = gw.plugin_status("small").await;
    assert_eq!(plugin["limits"]["stack_kb"], 64, "{plugin}");
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(
        status, 200,
        "a small stack is enough for normal calls: {body}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_rust_shadow_stack_overflow_is_a_trap_with_a_hint() {
    misbehave(
        "recurse-shadow",
        LimitsConfig::default(),
        "plugin_trap",
        "shadow stack",
    )
    .await;
}

#[tokio::test]
async fn a_panic_is_a_trap_reported_with_the_panic_message() {
    misbehave(
        "trap",
        LimitsConfig::default(),
        "plugin_trap",
        "trap in bad",
    )
    .await;
}

#[tokio::test]
async fn a_guest_error_fails_closed_with_its_message() {
    let gw = TestGateway::with_plugins(vec![scripted("bad", json!({"pre": "error"}))]).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "plugin_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("error from bad"), "{message}");
    let plugin = gw.plugin_status("bad").await;
    assert_eq!(plugin["stats"]["guest_errors"], 1, "{plugin}");
    assert_eq!(
        plugin["stats"]["instances_created"], 1,
        "a guest error does not break the instance: {plugin}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn fail_open_skips_a_trapping_or_looping_plugin() {
    for action in ["trap", "loop", "grow", "recurse", "recurse-shadow"] {
        let limits = LimitsConfig {
            fuel: Some(5_000_000),
            memory_mb: Some(16),
            ..Default::default()
        };
        let gw = TestGateway::with_plugins(vec![
            fail_open(with_limits(scripted("bad", json!({"pre": action})), limits)),
            scripted("good", json!({})),
        ])
        .await;
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(content_of(&body), "echo: hi");
        let trace = body["trace"].as_str().unwrap_or_default();
        assert!(!trace.contains("bad.post"), "{action}: {trace}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_post_hook_trap_fails_closed_and_earlier_post_hooks_see_the_error() {
    let gw = TestGateway::with_plugins(vec![
        scripted("A", json!({})),
        scripted("bad", json!({"post": "trap"})),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 500, "{body}");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        code.starts_with("trace:") && code.ends_with("bad.pre,bad.post,A.post"),
        "A's post-hook saw the plugin error (and put its trace into the code): {body}"
    );
    let (status, _) = gw.chat(&chat_body("mock/echo", "again")).await;
    assert_eq!(status, 500, "the plugin still traps, on a fresh instance");
    let plugin = gw.plugin_status("bad").await;
    assert_eq!(plugin["stats"]["traps"], 2, "{plugin}");
    gw.stop().await;
}

#[tokio::test]
async fn concurrent_requests_use_separate_instances_and_cleanup_runs_once_per_instance() {
    let gw = TestGateway::with_plugins(vec![scripted("A", json!({"pre": "sleep-ms:30"}))]).await;
    let bodies: Vec<_> = (0..4)
        .map(|i| chat_body("mock/echo", &format!("r{i}")))
        .collect();
    let requests: Vec<_> = bodies.iter().map(|b| gw.chat(b)).collect();
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    let plugin = gw.plugin_status("A").await;
    let created = plugin["stats"]["instances_created"].as_u64().unwrap_or(0);
    assert!(
        created >= 2,
        "concurrent requests need separate instances: {plugin}"
    );
    let kv = gw.gateway.registry().runtime().kv().clone();
    gw.stop().await;
    let count = async |key: &str| wasmgate_e2e::kv_counter(&kv, "A", key).await;
    assert_eq!(count("inits").await, created, "init ran once per instance");
    assert_eq!(
        count("cleanups").await,
        created,
        "cleanup ran once per instance on shutdown"
    );
}

fn quarantined(
    mut p: wasmgate::config::PluginConfig,
    backoff_ms: u64,
) -> wasmgate::config::PluginConfig {
    p.quarantine = wasmgate::runtime::QuarantinePolicy {
        after_failures: 3,
        backoff_ms,
        max_backoff_ms: backoff_ms * 4,
    };
    p
}

async fn with_backup(plugins: Vec<wasmgate::config::PluginConfig>) -> TestGateway {
    TestGateway::start_with(|config| {
        config.providers.insert(
            "backup".into(),
            wasmgate::providers::ProviderConfig::Mock(Default::default()),
        );
        config.plugins = plugins;
    })
    .await
}

#[tokio::test]
async fn repeated_failures_quarantine_a_plugin_which_then_fails_fast_without_running() {
    let bad = scripted("bad", json!({"pre": "trap", "pre_only_provider": "mock"}));
    let gw = with_backup(vec![quarantined(bad, 600_000)]).await;
    for _ in 0..3 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (500, &json!("plugin_trap")),
            "{body}"
        );
    }
    let (status, body) = gw.chat(&chat_body("backup/echo", "hi")).await;
    assert_eq!(status, 503, "quarantined: refused without a call: {body}");
    assert_eq!(body["error"]["code"], "plugin_quarantined");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin `bad`") && message.contains("quarantined"),
        "{message}"
    );
    let plugin = gw.plugin_status("bad").await;
    assert_eq!(plugin["quarantine"]["quarantined"], true, "{plugin}");
    assert_eq!(plugin["quarantine"]["quarantines"], 1, "{plugin}");
    assert_eq!(
        plugin["stats"]["traps"], 3,
        "the quarantined plugin was not called: {plugin}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_quarantined_fail_open_plugin_is_skipped_and_retried_after_its_backoff() {
    let bad = fail_open(scripted(
        "bad",
        json!({"pre": "trap", "pre_only_provider": "mock"}),
    ));
    let gw = with_backup(vec![quarantined(bad, 200)]).await;
    for _ in 0..3 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 200, "fail-open: {body}");
    }
    let calls = gw.plugin_status("bad").await["stats"]["calls"].clone();
    let (status, body) = gw.chat(&chat_body("mock/echo", "skipped")).await;
    assert_eq!(status, 200, "{body}");
    let plugin = gw.plugin_status("bad").await;
    assert_eq!(
        plugin["stats"]["calls"], calls,
        "skipped while quarantined: {plugin}"
    );
    assert_eq!(plugin["quarantine"]["quarantined"], true, "{plugin}");

    // The backoff is what is being waited for here, not a synchronisation point.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let (status, body) = gw.chat(&chat_body("backup/echo", "trial")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["trace"]
            .as_str()
            .unwrap_or_default()
            .contains("bad.pre"),
        "the trial call ran: {body}"
    );
    let plugin = gw.plugin_status("bad").await;
    assert_eq!(
        plugin["quarantine"]["quarantined"], false,
        "a good trial ends it: {plugin}"
    );
    assert_eq!(plugin["quarantine"]["consecutive_failures"], 0, "{plugin}");
    gw.stop().await;
}

#[tokio::test]
async fn every_hook_can_misbehave_and_only_its_request_fails() {
    let limits = LimitsConfig {
        fuel: Some(5_000_000),
        ..Default::default()
    };
    for (hook, settings, code) in [
        (
            "transport-interceptor",
            json!({"transport": "trap"}),
            "plugin_trap",
        ),
        (
            "transport-interceptor",
            json!({"transport": "loop"}),
            "plugin_out_of_fuel",
        ),
        (
            "transport-interceptor",
            json!({"transport": "error"}),
            "plugin_error",
        ),
        ("post-hook", json!({"post": "loop"}), "plugin_out_of_fuel"),
        ("post-hook", json!({"post": "error"}), "plugin_error"),
    ] {
        let gw =
            TestGateway::with_plugins(vec![with_limits(scripted("bad", settings.clone()), limits)])
                .await;
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 500, "{settings}: {body}");
        assert_eq!(body["error"]["code"], code, "{settings}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("plugin `bad` failed in {hook}")),
            "{settings}: {message}"
        );
        let (status, _) = gw.chat(&chat_body("mock/echo", "again")).await;
        assert_eq!(
            status, 500,
            "the next request meets the same plugin, on a fresh instance if it broke"
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_trapping_or_looping_cleanup_does_not_stop_shutdown() {
    for cleanup in ["trap", "loop"] {
        let limits = LimitsConfig {
            fuel: Some(5_000_000),
            ..Default::default()
        };
        let gw = TestGateway::with_plugins(vec![with_limits(
            scripted("bad", json!({"cleanup": cleanup})),
            limits,
        )])
        .await;
        let (status, _) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 200);
        let kv = gw.gateway.registry().runtime().kv().clone();
        gw.stop().await;
        assert_eq!(
            wasmgate_e2e::kv_counter(&kv, "bad", "cleanups").await,
            1,
            "{cleanup}: cleanup ran and was stopped"
        );
    }
}
