//! The HTTP edge: malformed input gets a precise OpenAI-style 4xx naming the cause, and the
//! read-only endpoints answer in OpenAI's shapes.

use serde_json::{Value, json};
use wasmgate_e2e::{TestGateway, chat_body};

async fn post_raw(gw: &TestGateway, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = gw.post("/v1/chat/completions", body, &[]).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON error body"))
}

#[tokio::test]
async fn malformed_requests_get_precise_errors() {
    let gw = TestGateway::with_plugins(vec![]).await;
    let cases: Vec<(&str, u16, &str)> = vec![
        (
            r#"{"model": "mock/echo", "messages": [{"role": "user""#,
            400,
            "not valid JSON",
        ),
        (r#"[1, 2]"#, 400, "must be a JSON object"),
        (
            r#"{"messages": [{"role": "user", "content": "x"}]}"#,
            400,
            "`model` is required",
        ),
        (
            r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}"#,
            400,
            "provider/model",
        ),
        (
            r#"{"model": "mock/echo", "messages": "hi"}"#,
            400,
            "`messages` must be an array",
        ),
        (
            r#"{"model": "mock/echo", "messages": [{"role": 7}]}"#,
            400,
            "`messages[0].role` must be a string",
        ),
        (
            r#"{"model": "mock/echo", "messages": [{"role": "user"}], "temperature": "warm"}"#,
            400,
            "`temperature` must be a number",
        ),
        (
            r#"{"model": "mock/echo", "messages": [{"role": "user"}], "stream": "yes"}"#,
            400,
            "`stream` must be a boolean",
        ),
        (
            r#"{"model": "nope/echo", "messages": [{"role": "user"}]}"#,
            404,
            "unknown provider `nope`",
        ),
        (
            r#"{"model": "mock/echo", "messages": [{"role": "user"}], "fallbacks": ["nope/x"]}"#,
            404,
            "unknown provider `nope`",
        ),
    ];
    for (body, want_status, needle) in cases {
        let (status, json) = post_raw(&gw, body).await;
        assert_eq!(status, want_status, "{body}: {json}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
        assert!(json["error"]["type"].is_string(), "{json}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let gw = TestGateway::start_with(|c| c.body_limit_bytes = 1024).await;
    let big =
        json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, body) = post_raw(&gw, big.to_string()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large");
    let (status, _) = gw.chat(&chat_body("mock/echo", "small")).await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_fields_round_trip_through_plugins_to_an_openai_upstream_and_back() {
    let upstream = wasmgate_e2e::fake_openai().await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(
                json!({"type": "openai", "base_url": format!("http://{upstream}/v1")}),
            )
            .expect("provider config"),
        );
        config.plugins = vec![
            wasmgate_e2e::scripted("A", json!({})),
            wasmgate_e2e::scripted("B", json!({})),
        ];
    })
    .await;
    let parts = json!([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}]);
    let req = json!({
        "model": "up/gpt-test", "seed": 42, "max_completion_tokens": 9, "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts, "name": "alice"}],
    });
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    let received = &body["received"];
    assert_eq!(received["model"], "gpt-test", "provider prefix stripped");
    assert_eq!(received["seed"], 42);
    assert_eq!(received["max_completion_tokens"], 9);
    assert!(received.get("max_tokens").is_none());
    assert_eq!(received["tools"], req["tools"]);
    assert_eq!(
        received["response_format"], req["response_format"],
        "JSON mode passed through"
    );
    assert_eq!(
        received["messages"][1]["content"], parts,
        "content parts untouched"
    );
    assert_eq!(received["messages"][1]["name"], "alice");
    assert!(received.get("fallbacks").is_none());
    assert_eq!(
        body["system_fingerprint"], "fp_up",
        "unknown response fields survive"
    );
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);
    assert_eq!(body["usage"]["total_tokens"], 7);
    assert_eq!(
        body["trace"],
        "A.transport,B.transport,A.pre,B.pre,B.post,A.post"
    );

    let mut limited = chat_body("up/limited", "x");
    let (status, body) = gw.chat(&limited).await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("provider `up`") && message.contains("Rate limit reached"),
        "{message}"
    );
    limited["fallbacks"] = json!(["mock/echo"]);
    let (status, body) = gw.chat(&limited).await;
    assert_eq!(status, 200, "a 429 allows fallbacks: {body}");
    gw.stop().await;
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let gw = TestGateway::with_plugins(vec![]).await;
    let (status, models) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "mock/echo"))
    );

    let (status, health) = gw.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let (status, body) = gw.get("/v1/embeddings").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_route");

    let (status, body) = gw.get("/api/plugins/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "plugin_not_found");
    gw.stop().await;
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut received = Vec::new();
    let guard = std::time::Duration::from_secs(60);
    let _ = tokio::time::timeout(guard, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection");
    received
}

#[tokio::test]
async fn a_client_trickling_headers_is_cut_off_and_others_are_served() {
    use tokio::io::AsyncWriteExt as _;
    let gw = TestGateway::start_with(|c| c.header_read_timeout_ms = 300).await;
    let mut slow = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("partial headers");
    let (status, _) = gw.chat(&chat_body("mock/echo", "meanwhile")).await;
    assert_eq!(
        status, 200,
        "others are served while the slow client dawdles"
    );
    let answer = read_to_close(&mut slow).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "closed without a request: {text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let gw = TestGateway::start_with(|c| c.max_connections = 2).await;
    let held: Vec<_> =
        futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(gw.addr)))
            .await
            .into_iter()
            .map(|c| c.expect("connect"))
            .collect();
    // Both slots are taken by idle connections: a third is accepted and closed at once.
    let mut extra = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    assert!(read_to_close(&mut extra).await.is_empty());
    drop(held);
    // Freed slots serve again. The permit returns when the server notices the close, which no
    // event tells the client about, so retry (bounded) until it has.
    let mut served = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let sent = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("mock/echo", "after"))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().as_u16() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(served, "a slot freed up once the held connections closed");
    gw.stop().await;
}
