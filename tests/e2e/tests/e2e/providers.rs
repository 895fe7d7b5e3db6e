//! Upstream retries: rate limits, server errors and connection failures are retried as the
//! provider's `retries` say, waiting as long as a `Retry-After` asks within its cap; client
//! errors are not; once the retries are spent the request goes on to its fallbacks; redirects
//! are reported, not followed; keys go out in the header each provider is configured with; a
//! provider's `timeout_ms` ends a call that gets no answer. The tests count the calls the fake
//! upstream received rather than timing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use wasmgate_e2e::{TestGateway, chat_body, fake_upstream};

/// A fake upstream answering its calls with `script` in turn (the last entry repeats): a status
/// and an optional `Retry-After`. Returns its address and its call counter.
async fn scripted_upstream(
    script: Vec<(u16, Option<&'static str>)>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let script = Arc::new(script);
    let addr = fake_upstream(move |Json(req): Json<Value>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let script = script.clone();
        async move {
            let (status, retry_after) = script[n.min(script.len() - 1)];
            let mut headers = HeaderMap::new();
            if let Some(value) = retry_after {
                headers.insert("retry-after", HeaderValue::from_static(value));
            }
            let body = if status == 200 {
                json!({
                    "id": "chatcmpl-up", "object": "chat.completion", "created": 1,
                    "model": req["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": format!("answer to call {}", n + 1)}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                })
            } else {
                json!({"error": {"message": format!("scripted {status}"), "type": "scripted", "code": null}})
            };
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                headers,
                Json(body),
            )
        }
    })
    .await;
    (addr, calls)
}

async fn gateway(upstream: std::net::SocketAddr, retries: Value) -> TestGateway {
    TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(json!({
                "type": "openai",
                "base_url": format!("http://{upstream}/v1"),
                "retries": retries,
            }))
            .expect("provider config"),
        );
    })
    .await
}

fn fast_retries(max: u32) -> Value {
    json!({"max": max, "initial_backoff_ms": 1, "max_backoff_ms": 5, "max_retry_after_ms": 2000})
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_an_answer() {
    let (upstream, calls) =
        scripted_upstream(vec![(429, Some("0")), (503, None), (200, None)]).await;
    let gw = gateway(upstream, fast_retries(2)).await;
    let (status, body) = gw.chat(&chat_body("up/m", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "answer to call 3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    gw.stop().await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (upstream, calls) = scripted_upstream(vec![(400, None), (200, None)]).await;
    let gw = gateway(upstream, fast_retries(3)).await;
    let (status, body) = gw.chat(&chat_body("up/m", "hi")).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("provider `up`") && message.contains("scripted 400"),
        "{message}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test]
async fn spent_retries_go_on_to_the_fallbacks() {
    let (upstream, calls) = scripted_upstream(vec![(502, None)]).await;
    let gw = gateway(upstream, fast_retries(2)).await;
    let mut req = chat_body("up/m", "hi");
    req["fallbacks"] = json!(["mock/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one call and two retries");
    gw.stop().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_not_waited_for() {
    // The upstream asks for two minutes; the cap is two seconds: no retry, straight to the
    // client (or the fallbacks) with the provider named.
    let (upstream, calls) = scripted_upstream(vec![(429, Some("120")), (200, None)]).await;
    let gw = gateway(upstream, fast_retries(3)).await;
    let (status, body) = gw.chat(&chat_body("up/m", "hi")).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("provider `up`")),
        "{body}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_falls_back_or_is_named() {
    // A port nothing listens on: every attempt (retries included) fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let gw = gateway(closed, fast_retries(2)).await;
    let mut req = chat_body("up/m", "hi");
    req["fallbacks"] = json!(["mock/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    let (status, body) = gw.chat(&chat_body("up/m", "no fallback")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "provider_unreachable");
    gw.stop().await;
}

#[tokio::test]
async fn configured_fallbacks_serve_requests_that_give_none() {
    let (upstream, calls) = scripted_upstream(vec![(503, None)]).await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(json!({"type": "openai",
                "base_url": format!("http://{upstream}/v1"), "retries": {"max": 0}}))
            .expect("provider config"),
        );
        config.fallbacks = serde_json::from_value(json!({
            "up": ["mock/echo"],
            "up/special": ["mock/fail-503", "mock/echo"],
        }))
        .expect("fallbacks");
    })
    .await;
    // The provider's entry.
    let (status, body) = gw.chat(&chat_body("up/m", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    // The model's entry wins over the provider's, in its order.
    let (status, body) = gw.chat(&chat_body("up/special", "in order")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: in order");
    // The request's own fallbacks replace the configured ones.
    let mut req = chat_body("up/m", "mine");
    req["fallbacks"] = json!(["mock/fail-502"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    gw.stop().await;
}

/// A redirect is not followed (it would send the prompt somewhere not configured): the client
/// gets a 502 naming the provider and where it pointed, and the upstream saw one call.
#[tokio::test]
async fn a_redirect_is_reported_not_followed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = fake_upstream(move |Json(_): Json<Value>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut headers = HeaderMap::new();
            headers.insert("location", HeaderValue::from_static("/v1/elsewhere"));
            (StatusCode::TEMPORARY_REDIRECT, headers, Json(json!({})))
        }
    })
    .await;
    let gw = gateway(upstream, fast_retries(2)).await;
    let (status, body) = gw.chat(&chat_body("up/m", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "provider_bad_response", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("provider `up`")
            && message.contains("HTTP 307 redirecting to /v1/elsewhere")
            && message.contains("not followed"),
        "{message}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test]
async fn keys_are_presented_as_each_provider_is_configured_to() {
    // The key is read from an environment variable at start; HOME is one every test run has.
    let key = std::env::var("HOME").expect("HOME is set");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let record = seen.clone();
    let upstream = fake_upstream(move |headers: HeaderMap, Json(req): Json<Value>| {
        let record = record.clone();
        async move {
            for name in ["authorization", "api-key"] {
                if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((name.to_string(), value.to_string()));
                }
            }
            Json(json!({
                "id": "chatcmpl-up", "object": "chat.completion", "created": 1,
                "model": req["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
            }))
        }
    })
    .await;
    let gw = TestGateway::start_with(|config| {
        for (name, extra) in [
            ("bearer", json!({})),
            ("azure", json!({"key_header": "api-key"})),
        ] {
            let mut provider = json!({"type": "openai", "base_url": format!("http://{upstream}/v1"),
                                      "api_key_env": "HOME"});
            if let (Some(p), Some(e)) = (provider.as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            config.providers.insert(
                name.into(),
                serde_json::from_value(provider).expect("provider config"),
            );
        }
    })
    .await;
    for target in ["bearer/m", "azure/m"] {
        let (status, body) = gw.chat(&chat_body(target, "hi")).await;
        assert_eq!(status, 200, "{target}: {body}");
    }
    assert_eq!(
        *seen.lock().unwrap_or_else(|p| p.into_inner()),
        vec![
            ("authorization".to_string(), format!("Bearer {key}")),
            ("api-key".to_string(), key),
        ]
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_named() {
    let upstream = fake_upstream(|| async {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        StatusCode::OK
    })
    .await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(json!({
                "type": "openai",
                "base_url": format!("http://{upstream}/v1"),
                "timeout_ms": 200,
                "retries": {"max": 0},
            }))
            .expect("provider config"),
        );
    })
    .await;
    let (status, body) = gw.chat(&chat_body("up/m", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "provider_unreachable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("provider `up` timed out: no complete answer within 200ms"),
        "{body}"
    );
    gw.stop().await;
}
