//! The HTTP edge: malformed input gets a precise OpenAI-style 4xx naming the cause, and the
//! read-only endpoints answer in OpenAI's shapes.

use serde_json::{Value, json};
use wasmgate_e2e::{TestGateway, chat_body};

async fn post_raw(gw: &TestGateway, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
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
            r#"{"model": "mock/echo", "messages": [{"role": "user"}], "stream": true}"#,
            400,
            "stream",
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

/// A fake OpenAI upstream on loopback: answers a chat completion that carries the request body
/// it received under `received`, or the OpenAI error body for model `limited` (429).
async fn fake_openai() -> std::net::SocketAddr {
    use axum::{Json, Router, http::StatusCode, routing::post};
    async fn completions(Json(req): Json<Value>) -> (StatusCode, Json<Value>) {
        if req["model"] == "limited" {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(
                    json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
                ),
            );
        }
        (
            StatusCode::OK,
            Json(json!({
                "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": req["model"],
                "system_fingerprint": "fp_up",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from upstream"}, "finish_reason": "stop", "logprobs": null}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                "received": req,
            })),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let app = Router::new().route("/v1/chat/completions", post(completions));
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn unknown_fields_round_trip_through_plugins_to_an_openai_upstream_and_back() {
    let upstream = fake_openai().await;
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
