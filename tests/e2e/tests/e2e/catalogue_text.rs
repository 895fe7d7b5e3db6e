//! The text-handling example plugins of the catalogue, end to end: `logging` (one line per
//! request, seen through its `response_field` and `error_header` debugging aids),
//! `header-injector` (headers, body defaults, model aliases) and `content-filter` (prompts,
//! completions and streams; reject and redact).

use serde_json::{Value, json};
use wasmgate::config::PluginConfig;
use wasmgate::providers::{MockConfig, ProviderConfig};
use wasmgate_e2e::{TestGateway, artifacts, chat_body, content_of, plugin};

/// A gateway with `plugins`, the mock provider cutting streamed answers into `chunks` pieces,
/// a second mock provider `backup` (a fallback target) and, with `upstream`, an OpenAI-style
/// provider `up` at that address.
async fn gateway(
    plugins: Vec<PluginConfig>,
    chunks: u32,
    upstream: Option<std::net::SocketAddr>,
) -> TestGateway {
    TestGateway::start_with(|config| {
        let mock = MockConfig {
            stream_chunks: chunks,
            ..MockConfig::default()
        };
        config
            .providers
            .insert("mock".into(), ProviderConfig::Mock(mock.clone()));
        config
            .providers
            .insert("backup".into(), ProviderConfig::Mock(mock));
        if let Some(addr) = upstream {
            config.providers.insert(
                "up".into(),
                serde_json::from_value(
                    json!({"type": "openai", "base_url": format!("http://{addr}/v1")}),
                )
                .expect("provider config"),
            );
        }
        config.plugins = plugins;
    })
    .await
}

/// POSTs a chat body with headers; returns status, response headers and JSON body.
async fn post(
    gw: &TestGateway,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = gw
        .post("/v1/chat/completions", body.to_string(), headers)
        .await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, headers, body)
}

/// The log line the `logging` plugin put in a response body under `x_wasmgate_log`, parsed.
fn log_line(body: &Value) -> Value {
    let line = body["x_wasmgate_log"]
        .as_str()
        .unwrap_or_else(|| panic!("no log line in {body}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"))
}

#[tokio::test]
async fn logging_writes_one_json_line_per_request_with_target_tokens_and_short_circuit() {
    let gw = gateway(
        vec![
            plugin(
                "logging",
                artifacts::LOGGING,
                json!({"response_field": "x_wasmgate_log"}),
            ),
            plugin("cache", artifacts::CACHE, json!({})),
        ],
        4,
        None,
    )
    .await;
    let req = chat_body("mock/echo", "a private prompt");
    let (status, headers, body) = post(&gw, &req, &[]).await;
    assert_eq!(status, 200, "{body}");
    let line = log_line(&body);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(line["request_id"], request_id, "{line}");
    assert_eq!(line["chain"], "logging,cache");
    assert_eq!(line["model"], "mock/echo");
    assert_eq!(line["target"], "mock/echo");
    assert_eq!(line["attempt"], 0);
    assert_eq!(line["stream"], false);
    assert_eq!(line["status"], "ok");
    assert_eq!(line["http_status"], 200);
    assert_eq!(line["finish_reason"], "stop");
    assert!(line["latency_ms"].is_u64(), "{line}");
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(line[field], body["usage"][field], "{field}: {line}");
    }
    assert!(line.get("short_circuit").is_none(), "{line}");
    let text = line.to_string();
    assert!(
        !text.contains("private"),
        "no bodies unless include_bodies: {text}"
    );

    // The same request again: the cache answers, so no target and a short-circuit.
    let (status, _, body) = post(&gw, &req, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["x_wasmgate_cache"], "hit");
    let line = log_line(&body);
    assert_eq!(line["short_circuit"], "cache", "{line}");
    assert!(line.get("target").is_none(), "{line}");
    assert_eq!(line["prompt_tokens"], body["usage"]["prompt_tokens"]);
    gw.stop().await;
}

#[tokio::test]
async fn logging_kv_lines_carry_errors_and_truncated_bodies() {
    let gw = gateway(
        vec![
            plugin(
                "logging",
                artifacts::LOGGING,
                json!({"format": "kv", "include_bodies": true, "max_body_chars": 5,
                       "response_field": "x_wasmgate_log", "error_header": "x-wasmgate-log"}),
            ),
            plugin("auth", artifacts::AUTH, json!({"keys": ["sk-good"]})),
        ],
        4,
        None,
    )
    .await;
    let header = |headers: &reqwest::header::HeaderMap| {
        headers
            .get("x-wasmgate-log")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };

    // auth short-circuits with a 401.
    let (status, headers, body) = post(&gw, &chat_body("mock/echo", "hello world"), &[]).await;
    assert_eq!(status, 401, "{body}");
    let line = header(&headers);
    for part in [
        "chain=logging,auth",
        "model=mock/echo",
        "attempt=0",
        "stream=false",
        "status=error",
        "http_status=401",
        "error_type=authentication_error",
        "error_code=invalid_api_key",
        "short_circuit=auth",
        // Non-ASCII is escaped in the header (`…` is U+2026).
        r"prompt=hello\u2026",
        r"error_message=missi\u2026",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    assert!(!line.contains("target="), "{line}");

    // A provider error: the target is known, there is no short-circuit.
    let key = [("authorization", "Bearer sk-good")];
    let (status, headers, body) = post(&gw, &chat_body("mock/fail-503", "x"), &key).await;
    assert_eq!(status, 503, "{body}");
    let line = header(&headers);
    assert!(
        line.contains("target=mock/fail-503") && line.contains("http_status=503"),
        "{line}"
    );
    assert!(!line.contains("short_circuit"), "{line}");

    // A response: kv line in the body, bodies cut to 5 characters.
    let (status, _, body) = post(&gw, &chat_body("mock/echo", "hello world"), &key).await;
    assert_eq!(status, 200, "{body}");
    let line = body["x_wasmgate_log"].as_str().unwrap_or_default();
    assert!(line.starts_with("request_id=req-"), "{line}");
    for part in [
        " status=ok http_status=200 ",
        " target=mock/echo ",
        " prompt=hello… completion=echo:…",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn header_injector_rewrites_headers_defaults_and_model_aliases() {
    let upstream = wasmgate_e2e::fake_openai().await;
    let gw = gateway(
        vec![
            plugin(
                "header-injector",
                artifacts::HEADER_INJECTOR,
                json!({
                    "set_headers": {"Authorization": "Bearer sk-good"},
                    "defaults": {"temperature": 0.2, "max_tokens": 256},
                    "model_aliases": {"fast": "mock/echo", "smart": "up/gpt-test"},
                }),
            ),
            plugin("auth", artifacts::AUTH, json!({"keys": ["sk-good"]})),
        ],
        4,
        Some(upstream),
    )
    .await;

    // The alias resolves to the mock; the injected key overrides the client's wrong one.
    let wrong = [("authorization", "Bearer sk-wrong")];
    let (status, _, body) = post(&gw, &chat_body("fast", "hi"), &wrong).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hi");

    // What reached the upstream: defaults filled in where absent, the client's value kept.
    let mut req = chat_body("smart", "hi");
    req["temperature"] = json!(0.9);
    req["fallbacks"] = json!(["fast"]);
    let (status, _, body) = post(&gw, &req, &[]).await;
    assert_eq!(status, 200, "{body}");
    let received = &body["received"];
    assert_eq!(received["model"], "gpt-test", "{received}");
    assert_eq!(received["temperature"], 0.9);
    assert_eq!(received["max_tokens"], 256);

    // A body that is not JSON passes unchanged: the gateway reports the parse error itself.
    let resp = gw.post("/v1/chat/completions", "{not json", &[]).await;
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("JSON error");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn header_injector_removes_headers_before_the_hooks_see_them() {
    let gw = gateway(
        vec![
            plugin(
                "header-injector",
                artifacts::HEADER_INJECTOR,
                json!({"remove_headers": ["X-Api-Key"]}),
            ),
            plugin(
                "auth",
                artifacts::AUTH,
                json!({"keys": ["sk-good"], "header": "x-api-key"}),
            ),
        ],
        4,
        None,
    )
    .await;
    let (status, _, body) = post(
        &gw,
        &chat_body("mock/echo", "hi"),
        &[("x-api-key", "sk-good")],
    )
    .await;
    assert_eq!(status, 401, "auth never saw the removed header: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("missing API key"), "{message}");
    gw.stop().await;
}

#[tokio::test]
async fn content_filter_rejects_banned_prompts_without_fallbacks() {
    let gw = gateway(
        vec![plugin(
            "content-filter",
            artifacts::CONTENT_FILTER,
            json!({"patterns": [r"\bdamn\b", "sk-[a-z0-9]{8}"]}),
        )],
        4,
        None,
    )
    .await;
    let mut req = chat_body("mock/echo", "well DAMN it");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, _, body) = post(&gw, &req, &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "content_filter");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("message 0") && !message.to_lowercase().contains("damn"),
        "{message}"
    );

    // Word boundaries hold, and assistant messages are not scanned by default.
    let req = json!({"model": "mock/echo", "messages": [
        {"role": "assistant", "content": "damn"},
        {"role": "user", "content": "damnation is fine"},
    ]});
    let (status, _, body) = post(&gw, &req, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: damnation is fine");
    gw.stop().await;
}

#[tokio::test]
async fn content_filter_redacts_prompts_and_completions() {
    let gw = gateway(
        vec![
            plugin(
                "prompts",
                artifacts::CONTENT_FILTER,
                json!({"patterns": ["damn"], "action": "redact", "scope": "prompts"}),
            ),
            plugin(
                "completions",
                artifacts::CONTENT_FILTER,
                json!({"patterns": ["secret"], "action": "redact", "replacement": "***",
                       "scope": "completions"}),
            ),
        ],
        4,
        None,
    )
    .await;
    // The provider sees the redacted prompt (the echo shows it); the completion's "secret"
    // (not scanned in the prompt) is redacted on the way back.
    let (status, _, body) = post(&gw, &chat_body("mock/echo", "damn, a SECRET"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: [redacted], a ***");
    gw.stop().await;
}

#[tokio::test]
async fn content_filter_rejects_banned_completions_with_422() {
    let gw = gateway(
        vec![plugin(
            "content-filter",
            artifacts::CONTENT_FILTER,
            json!({"patterns": ["^echo"], "scope": "completions"}),
        )],
        4,
        None,
    )
    .await;
    let mut req = chat_body("mock/echo", "echo is fine in a prompt");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, _, body) = post(&gw, &req, &[]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "content_filter");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("choice 0"), "{message}");
    gw.stop().await;
}

/// Streams a request; returns the status and the `data:` payloads (without `[DONE]`) and
/// whether the stream ended with `[DONE]`.
async fn stream(gw: &TestGateway, text: &str) -> (u16, Vec<Value>, bool) {
    let body = json!({"model": "mock/echo", "stream": true,
                      "messages": [{"role": "user", "content": text}]});
    let resp = gw.post("/v1/chat/completions", body.to_string(), &[]).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|block| block.trim().strip_prefix("data:"))
        .map(str::trim)
        .collect();
    let done = data.last() == Some(&"[DONE]");
    let events = data
        .into_iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("event not JSON ({e}): {d}")))
        .collect();
    (status, events, done)
}

/// The `delta.content` of each chunk event.
fn deltas(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e.pointer("/choices/0/delta/content")?.as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn content_filter_redacts_a_banned_word_split_across_stream_chunks() {
    // "echo: well damn it" is 18 characters; 7 pieces of 3 split "damn" as "l d" + "amn".
    let redact = |name: &str| {
        plugin(
            name,
            artifacts::CONTENT_FILTER,
            json!({"patterns": ["damn"], "action": "redact", "scope": "completions"}),
        )
    };
    for chunks in [2, 5, 7, 18] {
        let gw = gateway(vec![redact("content-filter")], chunks, None).await;
        let (status, events, done) = stream(&gw, "well damn it").await;
        assert_eq!(status, 200);
        assert!(done, "{events:?}");
        let pieces = deltas(&events);
        let mut seen = String::new();
        for piece in &pieces {
            seen.push_str(piece);
            assert!(!seen.contains("damn"), "{chunks} chunks leaked: {pieces:?}");
        }
        assert_eq!(
            seen, "echo: well [redacted] it",
            "{chunks} chunks: {pieces:?}"
        );
        assert_eq!(
            events[0]["choices"][0]["delta"]["role"], "assistant",
            "{events:?}"
        );
        let last = events.last().expect("events");
        assert_eq!(last["choices"][0]["finish_reason"], "stop", "{events:?}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn content_filter_ends_a_stream_with_an_error_before_the_banned_word() {
    let gw = gateway(
        vec![plugin(
            "content-filter",
            artifacts::CONTENT_FILTER,
            json!({"patterns": ["damn"], "scope": "completions"}),
        )],
        7,
        None,
    )
    .await;
    let (status, events, done) = stream(&gw, "well damn it").await;
    assert_eq!(status, 200, "the stream had started");
    assert!(!done, "an error ends the stream: {events:?}");
    let last = events.last().expect("events");
    assert_eq!(last["error"]["code"], "content_filter", "{events:?}");
    // Only text before the word was sent ("echo: well " at most), none of the word itself.
    let text = deltas(&events).concat();
    assert!("echo: well ".starts_with(&text), "{text:?}");
    gw.stop().await;
}

#[tokio::test]
async fn content_filter_handles_a_mebibyte_prompt_within_the_default_fuel() {
    // Twenty patterns and a match every 39 characters, in the prompt and again in the echo.
    let words: Vec<String> = (0..20).map(|i| format!("banned{i}word")).collect();
    let gw = gateway(
        vec![plugin(
            "content-filter",
            artifacts::CONTENT_FILTER,
            json!({"patterns": words, "action": "redact"}),
        )],
        4,
        None,
    )
    .await;
    let text = "lorem ipsum dolor sit amet banned3word ".repeat(1024 * 1024 / 39);
    let (status, _, body) = post(&gw, &chat_body("mock/echo", &text), &[]).await;
    assert_eq!(status, 200, "{}", body["error"]);
    let content = content_of(&body);
    assert!(!content.contains("banned3word"));
    assert_eq!(content.matches("[redacted]").count(), 1024 * 1024 / 39);
    gw.stop().await;
}

#[tokio::test]
async fn catalogue_text_plugins_reject_invalid_configs_and_name_the_field() {
    let gw = gateway(
        vec![
            plugin("logging", artifacts::LOGGING, json!({"format": "xml"})),
            plugin(
                "header-injector",
                artifacts::HEADER_INJECTOR,
                json!({"model_aliases": {"fast": "echo"}}),
            ),
            plugin(
                "content-filter",
                artifacts::CONTENT_FILTER,
                json!({"patterns": ["ok", "(unclosed"]}),
            ),
        ],
        4,
        None,
    )
    .await;
    for (name, field) in [
        ("logging", "format"),
        ("header-injector", "model_aliases.fast"),
        ("content-filter", "patterns[1]"),
    ] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains(field), "{name}: names `{field}`: {error}");
    }
    let (status, _, body) = post(&gw, &chat_body("mock/echo", "still served"), &[]).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}
