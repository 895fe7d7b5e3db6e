//! The example plugins, end to end: auth, cache and hello-world as users configure them.

use serde_json::json;
use wasmgate_e2e::{TestGateway, artifacts, chat_body, content_of, plugin};

async fn demo_chain() -> TestGateway {
    TestGateway::start_with(|config| {
        config.providers.insert(
            "backup".into(),
            wasmgate::providers::ProviderConfig::Mock(Default::default()),
        );
        config.plugins = vec![
            plugin(
                "hello-world",
                artifacts::HELLO_WORLD,
                json!({"greeting": "hi"}),
            ),
            plugin(
                "auth",
                artifacts::AUTH,
                json!({"keys": ["sk-good", "sk-other"]}),
            ),
            plugin("cache", artifacts::CACHE, json!({"ttl_seconds": 60})),
        ];
    })
    .await
}

#[tokio::test]
async fn auth_rejects_missing_and_wrong_keys_without_fallbacks() {
    let gw = demo_chain().await;
    let mut req = chat_body("mock/echo", "hi");
    req["fallbacks"] = json!(["backup/echo"]);

    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let (status, body) = gw
        .chat_with_headers(&req, &[("authorization", "Bearer sk-wrong")])
        .await;
    assert_eq!(status, 401, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("sk-wrong"),
        "the key is never echoed: {message}"
    );

    let (status, body) = gw
        .chat_with_headers(&req, &[("authorization", "Bearer sk-good")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hi");

    let auth = gw.plugin_status("auth").await;
    assert_eq!(
        auth["hooks"],
        json!({"transport_interceptor": false, "pre_hook": true, "post_hook": false, "stream_chunk": false, "on_error": false, "cleanup": false})
    );
    assert_eq!(
        auth["stats"]["calls"], 4,
        "init plus three pre-hooks: the host never calls hooks auth does not implement: {auth}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn cache_answers_an_identical_request_from_kv() {
    let gw = demo_chain().await;
    let auth = [("authorization", "Bearer sk-good")];
    let req = chat_body("mock/echo", "cache me");
    let (status, first) = gw.chat_with_headers(&req, &auth).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["x_wasmgate_cache"], "miss", "{first}");

    let (status, second) = gw.chat_with_headers(&req, &auth).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["x_wasmgate_cache"], "hit", "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(content_of(&second), content_of(&first));

    let (_, other) = gw
        .chat_with_headers(&chat_body("mock/echo", "something else"), &auth)
        .await;
    assert_eq!(other["x_wasmgate_cache"], "miss", "{other}");

    let cache = gw.plugin_status("cache").await;
    assert_eq!(cache["status"], "active");
    assert_eq!(cache["hooks"]["pre_hook"], true);
    gw.stop().await;
}

#[tokio::test]
async fn cache_never_stores_errors() {
    let gw = demo_chain().await;
    let auth = [("authorization", "Bearer sk-good")];
    for _ in 0..2 {
        let (status, body) = gw
            .chat_with_headers(&chat_body("mock/fail-503", "x"), &auth)
            .await;
        assert_eq!(status, 503, "{body}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn example_plugins_reject_invalid_configs_and_name_the_field() {
    let gw = TestGateway::with_plugins(vec![
        plugin("auth", artifacts::AUTH, json!({"keys": []})),
        plugin("cache", artifacts::CACHE, json!({"ttl_seconds": "soon"})),
        plugin(
            "hello-world",
            artifacts::HELLO_WORLD,
            json!({"greting": "typo"}),
        ),
    ])
    .await;
    for (name, field) in [
        ("auth", "keys"),
        ("cache", "ttl_seconds"),
        ("hello-world", "greting"),
    ] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains("init"), "{name}: {error}");
        assert!(error.contains(field), "{name}: names `{field}`: {error}");
    }
    let (status, body) = gw.chat(&chat_body("mock/echo", "still served")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn auth_reads_keys_from_a_granted_environment_variable_only() {
    // PATH is set in the gateway's (this test's) process; it stands in for a key variable.
    let path = std::env::var("PATH").expect("PATH is set");
    let keys_from_env = || plugin("auth", artifacts::AUTH, json!({"keys_env": "PATH"}));
    let gw = TestGateway::with_plugins(vec![keys_from_env()]).await;
    let view = gw.plugin_status("auth").await;
    assert_eq!(view["status"], "failed", "not granted: {view}");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("keys_env") && error.contains(r#""grants": {"env": ["PATH"]}"#),
        "says how to grant it: {error}"
    );
    gw.stop().await;

    let mut granted = keys_from_env();
    granted.grants.env = vec!["PATH".into()];
    let gw = TestGateway::with_plugins(vec![granted]).await;
    let req = chat_body("mock/echo", "hi");
    let bearer = format!("Bearer {path}");
    let (status, body) = gw
        .chat_with_headers(&req, &[("authorization", bearer.as_str())])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = gw
        .chat_with_headers(&req, &[("authorization", "Bearer nope")])
        .await;
    assert_eq!(status, 401);
    gw.stop().await;
}
