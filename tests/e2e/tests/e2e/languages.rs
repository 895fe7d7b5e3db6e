//! Plugins written in Python, JavaScript and C, built from source by the test build with their
//! own toolchains, in the same gateway as the Rust ones: the hello-world ports behave alike, the
//! example plugins do their job, failures name the plugin, and the large components go through
//! the compiled-component cache. (The pipeline-semantics tests run the Python and JavaScript
//! ports of `scripted` too: see `pipeline.rs` and `ordering.rs`.)

use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use wasmgate::config::LimitsConfig;
use wasmgate::runtime::Isolation;
use wasmgate_e2e::{
    Lang, TestGateway, artifacts, chat_body, content_of, kv_counter, plugin, scripted_in, trace_of,
    with_limits,
};

/// Every hello-world: Rust, Python, JavaScript and C.
const HELLO_WORLDS: [(&str, &str); 4] = [
    ("rust", artifacts::HELLO_WORLD),
    ("python", artifacts::PYTHON_HELLO_WORLD),
    ("js", artifacts::JS_HELLO_WORLD),
    ("c", artifacts::C_HELLO_WORLD),
];

#[tokio::test]
async fn hello_world_behaves_the_same_in_every_language() {
    let gw = TestGateway::with_plugins(
        HELLO_WORLDS
            .iter()
            .map(|(lang, path)| plugin(lang, path, json!({"greeting": "hi"})))
            .collect(),
    )
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hello", "the request is unchanged");
    let (status, body) = gw.chat(&chat_body("mock/fail-503", "hello")).await;
    assert_eq!(status, 503, "errors pass unchanged: {body}");

    let every_hook = json!({"transport_interceptor": true, "pre_hook": true, "post_hook": true,
        "stream_chunk": true, "on_error": true, "cleanup": true});
    for (lang, _) in HELLO_WORLDS {
        let view = gw.plugin_status(lang).await;
        assert_eq!(view["status"], "active", "{view}");
        assert_eq!(view["reported_name"], "hello-world", "{view}");
        assert_eq!(view["hooks"], every_hook, "{lang}: {view}");
        let calls = &view["stats"]["by_hook"];
        for hook in ["transport-interceptor", "pre-hook", "post-hook", "on-error"] {
            assert!(
                calls[hook]["calls"].as_u64().unwrap_or(0) >= 1,
                "{lang} ran {hook}: {view}"
            );
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn only_plugins_that_declare_shared_instances_get_them_in_every_language() {
    // Every hello-world declares it keeps no request state in its memory (Rust's
    // `SHARED_INSTANCES`, Python's `shared_instances`, JavaScript's `sharedInstances`, C's
    // flag); the scripted ports leave the SDKs' default. No config sets `isolation`.
    let mut plugins: Vec<_> = HELLO_WORLDS
        .iter()
        .map(|(lang, path)| plugin(lang, path, json!({})))
        .collect();
    for (lang, name) in [
        (Lang::Rust, "scripted-rust"),
        (Lang::Python, "scripted-python"),
        (Lang::Js, "scripted-js"),
    ] {
        plugins.push(scripted_in(lang, name, json!({})));
    }
    plugins.push(plugin(
        "scripted-c",
        artifacts::C_SCRIPTED,
        json!({"tag": "scripted-c"}),
    ));
    let gw = TestGateway::with_plugins(plugins).await;
    for (name, expected) in [
        ("rust", "shared"),
        ("python", "shared"),
        ("js", "shared"),
        ("c", "shared"),
        ("scripted-rust", "pooled"),
        ("scripted-python", "pooled"),
        ("scripted-js", "pooled"),
        ("scripted-c", "pooled"),
    ] {
        let view = gw.plugin_status(name).await;
        assert_eq!(view["status"], "active", "{view}");
        assert_eq!(view["isolation"], expected, "{name}: {view}");
    }
    let (status, body) = gw.chat(&chat_body("mock/echo", "hello")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn invalid_configs_are_rejected_naming_the_field_in_every_language() {
    let gw = TestGateway::with_plugins(
        HELLO_WORLDS
            .iter()
            .map(|(lang, path)| plugin(lang, path, json!({"greeting": 7})))
            .collect(),
    )
    .await;
    for (lang, _) in HELLO_WORLDS {
        let view = gw.plugin_status(lang).await;
        assert_eq!(view["status"], "failed", "{view}");
        let error = view["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("init rejected the config") && error.contains("greeting"),
            "{lang}: {error}"
        );
    }
    let (status, body) = gw.chat(&chat_body("mock/echo", "still served")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn the_pii_redactor_removes_emails_phones_and_card_numbers_from_prompts() {
    let upstream = wasmgate_e2e::fake_openai().await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(
                json!({"type": "openai", "base_url": format!("http://{upstream}/v1")}),
            )
            .expect("provider config"),
        );
        config.plugins = vec![plugin(
            "pii",
            artifacts::PYTHON_PII_REDACTOR,
            json!({"marker": "<{kind}>"}),
        )];
    })
    .await;
    let mut req = chat_body(
        "up/gpt",
        "I am ann.lee@example.org, +1 (415) 555-0100, card 4111 1111 1111 1111, order 4111111111111112",
    );
    req["messages"].as_array_mut().expect("messages").insert(
        0,
        json!({"role": "assistant", "content": "write to ops@example.org"}),
    );
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    let sent = &body["received"]["messages"];
    assert_eq!(
        sent[1]["content"], "I am <email>, <phone>, card <card>, order 4111111111111112",
        "the Luhn-invalid number is not a card: {body}"
    );
    assert_eq!(
        sent[0]["content"], "write to ops@example.org",
        "assistant messages are not in the default roles"
    );
    gw.stop().await;

    let gw = TestGateway::with_plugins(vec![plugin(
        "pii",
        artifacts::PYTHON_PII_REDACTOR,
        json!({"reject": true, "kinds": ["email"]}),
    )])
    .await;
    let mut req = chat_body("mock/echo", "mail me at a@b.io");
    req["fallbacks"] = json!(["mock/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "pii_detected", "{body}");
    let (status, body) = gw.chat(&chat_body("mock/echo", "call 555 0100 123")).await;
    assert_eq!(status, 200, "phones are not in kinds: {body}");
    gw.stop().await;

    let gw = TestGateway::with_plugins(vec![plugin(
        "pii",
        artifacts::PYTHON_PII_REDACTOR,
        json!({"kinds": ["email", "ssn"]}),
    )])
    .await;
    let view = gw.plugin_status("pii").await;
    let error = view["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("kinds[1]") && error.contains("ssn"),
        "{view}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_header_router_sends_requests_where_the_header_says() {
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "backup".into(),
            wasmgate::providers::ProviderConfig::Mock(Default::default()),
        );
        config.plugins = vec![
            plugin(
                "router",
                artifacts::JS_HEADER_ROUTER,
                json!({"routes": {"fast": "backup/echo", "broken": "mock/fail-503"},
                       "default": "fast", "strict": true}),
            ),
            scripted_in(Lang::Rust, "T", json!({})),
        ];
    })
    .await;
    let (status, body) = gw
        .chat_with_headers(&chat_body("mock/echo", "hi"), &[("x-route", "broken")])
        .await;
    assert_eq!(status, 503, "routed to mock/fail-503: {body}");
    assert_eq!(trace_of(&body), "T.transport,T.pre,T.post", "{body}");

    let (status, body) = gw.chat(&chat_body("mock/slow-1", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "echo", "the default route: {body}");

    let (status, body) = gw
        .chat_with_headers(&chat_body("mock/echo", "hi"), &[("x-route", "nope")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_route", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("broken, fast"), "{message}");
    gw.stop().await;
}

#[tokio::test]
async fn the_c_port_of_scripted_follows_the_pipeline_rules() {
    let c = |name: &str, settings: Value| {
        let mut settings = settings;
        settings["tag"] = json!(name);
        plugin(name, artifacts::C_SCRIPTED, settings)
    };
    let gw = TestGateway::with_plugins(vec![
        c("A", json!({})),
        c("B", json!({"pre": "respond"})),
        c("C", json!({})),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "responded by B");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,B.post,A.post"
    );
    gw.stop().await;

    // A's post-hook answers `keep`: B's response reaches the client as B wrote it.
    let gw =
        TestGateway::with_plugins(vec![c("A", json!({"post": "keep"})), c("B", json!({}))]).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hi");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,A.pre,B.pre,B.post"
    );
    gw.stop().await;

    let gw = TestGateway::with_plugins(vec![
        c("A", json!({})),
        c("B", json!({"pre": "fail-no-fallbacks"})),
        c("C", json!({"pre": "error"})),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["message"], "failed by B", "{body}");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,B.post,A.post"
    );
    gw.stop().await;

    let gw = TestGateway::with_plugins(vec![c("A", json!({"post": "annotate"}))]).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["annotated_by"], "A",
        "set through the lent outcome: {body}"
    );
    assert_eq!(body["typed_refused"], true, "{body}");
    assert_eq!(body["model"], "echo", "{body}");
    let (status, body) = gw.chat(&chat_body("mock/fail-503", "hi")).await;
    assert_eq!(status, 500, "a failed post-hook: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("annotate refused: the outcome is an error"),
        "{body}"
    );
    gw.stop().await;

    let gw = TestGateway::with_plugins(vec![c("A", json!({"pre": "error"}))]).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin `A` failed in pre-hook") && message.contains("error from A"),
        "{message}"
    );
    gw.stop().await;

    let gw = TestGateway::with_plugins(vec![c("A", json!({"pre": "explode"}))]).await;
    let error = gw.plugin_status("A").await["error"].clone();
    assert!(
        error
            .as_str()
            .unwrap_or_default()
            .contains("pre: unknown action"),
        "{error}"
    );
    gw.stop().await;
}

/// The C SDK's allocator (in place of dlmalloc) hands freed blocks out again: one instance with
/// a 4 MiB memory limit serves many requests that each move ~1.5 MiB through it (the body in the
/// transport interceptor, the request in the pre-hook, the response in the post-hook).
#[tokio::test]
async fn the_c_allocator_reuses_freed_memory_across_requests() {
    let limits = LimitsConfig {
        memory_mb: Some(4),
        ..LimitsConfig::default()
    };
    let gw = TestGateway::with_plugins(vec![with_limits(
        plugin("c", artifacts::C_HELLO_WORLD, json!({})),
        limits,
    )])
    .await;
    let prompt = "x".repeat(256 << 10);
    for i in 0..24 {
        let (status, body) = gw.chat(&chat_body("mock/echo", &prompt)).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(content_of(&body).len(), prompt.len() + "echo: ".len());
    }
    let view = gw.plugin_status("c").await;
    assert_eq!(view["stats"]["instances_created"], 1, "{view}");
    assert_eq!(view["stats"]["traps"], 0, "{view}");
    gw.stop().await;
}

async fn a_trap_is_reported_with_the_plugin_and_the_instance_replaced(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![scripted_in(lang, "T", json!({"pre": "trap"}))]).await;
    for _ in 0..2 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "plugin_trap", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("plugin `T`") && message.contains("trap in T"),
            "the guest's own message, from its stderr: {message}"
        );
    }
    let view = gw.plugin_status("T").await;
    assert_eq!(
        view["stats"]["instances_created"], 2,
        "the second request needed a new instance: {view}"
    );
    assert_eq!(
        view["idle_instances"], 0,
        "no trapped instance kept: {view}"
    );
    gw.stop().await;
}

async fn init_and_cleanup_run_once_per_instance_and_kv_is_shared(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![scripted_in(lang, "K", json!({}))]).await;
    let body = chat_body("mock/echo", "hi");
    let answers = futures::future::join_all((0..4).map(|_| gw.chat(&body))).await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
    }
    let kv = gw.gateway.registry().runtime().kv().clone();
    let created = gw.plugin_status("K").await["stats"]["instances_created"]
        .as_u64()
        .unwrap_or(0);
    assert!(created >= 1);
    assert_eq!(kv_counter(&kv, "K", "inits").await, created);
    gw.stop().await;
    assert_eq!(
        kv_counter(&kv, "K", "cleanups").await,
        created,
        "every instance was cleaned up at shutdown"
    );
}

async fn a_runaway_hook_is_stopped_and_the_next_request_served(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![
        wasmgate_e2e::fail_open(scripted_in(lang, "L", json!({"pre": "loop"}))),
        scripted_in(lang, "M", json!({})),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(
        status, 200,
        "fail-open: the loop was stopped and skipped: {body}"
    );
    let view = gw.plugin_status("L").await;
    let failures = &view["stats"]["failures"];
    assert!(
        failures["plugin_out_of_fuel"].as_u64().unwrap_or(0)
            + failures["plugin_deadline_exceeded"].as_u64().unwrap_or(0)
            == 1,
        "stopped by fuel or the deadline: {view}"
    );
    gw.stop().await;
}

async fn per_request_instances_start_from_a_snapshot_after_one_init(lang: Lang) {
    let mut p = scripted_in(lang, "P", json!({}));
    p.isolation = Some(Isolation::PerRequest);
    let gw = TestGateway::with_plugins(vec![p]).await;
    for i in 0..4 {
        let (status, body) = gw.chat(&chat_body("mock/echo", &format!("r{i}"))).await;
        assert_eq!(status, 200, "request {i}: {body}");
        // The config `init` parsed (the tag) is there in every fresh instance.
        assert_eq!(trace_of(&body), "P.transport,P.pre,P.post", "{body}");
    }
    let view = gw.plugin_status("P").await;
    assert_eq!(view["preinitialized"], true, "{view}");
    let created = view["stats"]["instances_created"].as_u64().unwrap_or(0);
    assert!(created >= 4, "four requests, four fresh instances: {view}");
    let kv = gw.gateway.registry().runtime().kv().clone();
    assert_eq!(
        kv_counter(&kv, "P", "inits").await,
        1,
        "init ran once, at load, for {created} instances"
    );
    gw.stop().await;
}

wasmgate_e2e::for_each_lang!(
    a_runaway_hook_is_stopped_and_the_next_request_served,
    a_trap_is_reported_with_the_plugin_and_the_instance_replaced,
    init_and_cleanup_run_once_per_instance_and_kv_is_shared,
    per_request_instances_start_from_a_snapshot_after_one_init,
);

/// Whether the compiled-component cache holds an entry for the component at `path`.
fn cached(path: &str) -> bool {
    let bytes = std::fs::read(path).expect("component");
    let sha = hex::encode(Sha256::digest(bytes));
    std::fs::read_dir(Path::new(artifacts::COMPILE_CACHE_DIR))
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with(&sha))
}

#[tokio::test]
async fn large_components_are_compiled_once_into_the_shared_cache() {
    let gw = TestGateway::with_plugins(vec![
        plugin("py", artifacts::PYTHON_HELLO_WORLD, json!({})),
        plugin("js", artifacts::JS_HELLO_WORLD, json!({})),
    ])
    .await;
    for path in [artifacts::PYTHON_HELLO_WORLD, artifacts::JS_HELLO_WORLD] {
        assert!(cached(path), "{path} is in the cache");
    }
    // Instances stay warm: sequential requests reuse the one instance of each plugin.
    for _ in 0..3 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 200, "{body}");
    }
    for name in ["py", "js"] {
        let view = gw.plugin_status(name).await;
        assert_eq!(view["stats"]["instances_created"], 1, "{view}");
    }
    gw.stop().await;
}
