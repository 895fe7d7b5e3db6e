//! The Anthropic provider against a fake Messages API that speaks the real wire protocol:
//! `POST /v1/messages` with `anthropic-version`, JSON answers with content blocks, stop reasons
//! and usage, server-sent events with `event:` lines, and Anthropic's error bodies. Clients see
//! only the OpenAI shape.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use serde_json::{Value, json};
use wasmgate_e2e::{TestGateway, chat_body};

/// The last body the fake received.
type Received = Arc<Mutex<Value>>;

async fn fake_anthropic() -> (std::net::SocketAddr, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move |headers: HeaderMap, Json(req): Json<Value>| {
            let seen = seen.clone();
            async move {
                *seen.lock().expect("lock") = req.clone();
                if headers.get("anthropic-version").and_then(|v| v.to_str().ok())
                    != Some("2023-06-01")
                {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"type": "error", "error": {"type": "invalid_request_error",
                            "message": "anthropic-version: header is required"}})),
                    )
                        .into_response();
                }
                match req["model"].as_str() {
                    Some("claude-overloaded") => {
                        return (
                            StatusCode::from_u16(529).expect("529"),
                            Json(json!({"type": "error", "error": {"type": "overloaded_error",
                                "message": "Overloaded"}})),
                        )
                            .into_response();
                    }
                    Some("claude-bad") => {
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"type": "error", "error": {"type": "invalid_request_error",
                                "message": "max_tokens: too large"}})),
                        )
                            .into_response();
                    }
                    _ => {}
                }
                if req["stream"] == true {
                    let events = [
                        ("message_start", json!({"type": "message_start", "message": {"id": "msg_s1",
                            "type": "message", "role": "assistant", "model": req["model"], "content": [],
                            "stop_reason": null, "usage": {"input_tokens": 11, "output_tokens": 1}}})),
                        ("content_block_start", json!({"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}})),
                        ("ping", json!({"type": "ping"})),
                        ("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": "Bonjour"}})),
                        ("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": " Paris"}})),
                        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                        ("message_delta", json!({"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                            "usage": {"output_tokens": 4}})),
                        ("message_stop", json!({"type": "message_stop"})),
                    ];
                    let body: String = events
                        .iter()
                        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
                        .collect();
                    return ([("content-type", "text/event-stream")], body).into_response();
                }
                let content = if req["tools"].is_array() {
                    json!([{"type": "text", "text": "Checking."},
                           {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                            "input": {"city": "Paris"}}])
                } else {
                    json!([{"type": "text", "text": "Bonjour Paris"}])
                };
                let stop = if req["tools"].is_array() { "tool_use" } else { "end_turn" };
                Json(json!({"id": "msg_01", "type": "message", "role": "assistant",
                    "model": req["model"], "content": content, "stop_reason": stop,
                    "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 4}}))
                .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, received)
}

async fn gateway() -> (TestGateway, Received) {
    let (addr, received) = fake_anthropic().await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "claude".into(),
            serde_json::from_value(json!({"type": "anthropic",
                "base_url": format!("http://{addr}/v1"), "default_max_tokens": 1024,
                "retries": {"max": 0}}))
            .expect("provider config"),
        );
    })
    .await;
    (gw, received)
}

#[tokio::test]
async fn a_chat_completion_goes_out_as_a_message_and_comes_back_openai_shaped() {
    let (gw, received) = gateway().await;
    let req = json!({"model": "claude/claude-sonnet-4", "temperature": 0.3,
        "messages": [{"role": "system", "content": "Answer in French."},
                     {"role": "user", "content": "Say hello to Paris"}]});
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Bonjour Paris");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15})
    );
    let sent = received.lock().expect("lock").clone();
    assert_eq!(sent["system"], "Answer in French.");
    assert_eq!(
        sent["max_tokens"], 1024,
        "the default, since the request set none"
    );
    assert_eq!(sent["model"], "claude-sonnet-4");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello to Paris"}]}])
    );
    gw.stop().await;
}

#[tokio::test]
async fn tool_use_comes_back_as_tool_calls() {
    let (gw, received) = gateway().await;
    let req = json!({"model": "claude/claude-sonnet-4",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(
        received.lock().expect("lock")["tools"][0]["name"],
        "get_weather"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_of_message_events_becomes_chat_completion_chunks() {
    let (gw, _) = gateway().await;
    let mut req = chat_body("claude/claude-sonnet-4", "Say hello to Paris");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = gw.post("/v1/chat/completions", req.to_string(), &[]).await;
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("stream");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect();
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Bonjour Paris", "{text}");
    assert!(
        events
            .iter()
            .all(|e| e["object"] == "chat.completion.chunk" && e["id"] == "msg_s1")
    );
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "stop"),
        "{text}"
    );
    assert!(
        events.iter().any(|e| e["usage"]["total_tokens"] == 15),
        "usage from message_start and message_delta: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"));
    gw.stop().await;
}

#[tokio::test]
async fn anthropic_errors_are_named_and_decide_the_fallbacks() {
    let (gw, _) = gateway().await;
    // Overloaded (529): temporary, so the fallback is tried.
    let mut req = chat_body("claude/claude-overloaded", "hi");
    req["fallbacks"] = json!(["mock/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    // Without a fallback the client sees the upstream's status and type, the provider named.
    let (status, body) = gw.chat(&chat_body("claude/claude-overloaded", "hi")).await;
    assert_eq!(status, 529, "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("provider `claude`") && m.contains("Overloaded"))
    );
    // A validation error is the client's: no fallback.
    let mut req = chat_body("claude/claude-bad", "hi");
    req["fallbacks"] = json!(["mock/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    gw.stop().await;
}
