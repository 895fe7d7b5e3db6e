//! Streamed completions (`stream: true`): OpenAI server-sent events from the mock provider,
//! the stream-chunk hooks (edit, drop, end with an error), post-hooks that see the assembled
//! response, short-circuits and fallbacks for streams, and the error stage on a broken stream.
//! The stream-chunk tests run against the Rust, Python and JavaScript versions of `scripted`.

use serde_json::{Value, json};
use wasmgate::providers::{MockConfig, ProviderConfig};
use wasmgate_e2e::{Lang, TestGateway, artifacts, plugin, scripted, scripted_in};

/// A streamed request's raw outcome: status, content type and the `data:` payloads in order.
struct Sse {
    status: u16,
    content_type: String,
    events: Vec<String>,
}

impl Sse {
    /// The JSON events (everything but `[DONE]`).
    fn json(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).expect("each event is JSON"))
            .collect()
    }

    /// The concatenated `delta.content` of every chunk.
    fn text(&self) -> String {
        self.json()
            .iter()
            .filter_map(|e| {
                e.pointer("/choices/0/delta/content")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    fn done(&self) -> bool {
        self.events.last().is_some_and(|e| e == "[DONE]")
    }
}

fn stream_body(model: &str, text: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]})
}

async fn stream(gw: &TestGateway, body: &Value) -> Sse {
    let resp = gw.post("/v1/chat/completions", body.to_string(), &[]).await;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.expect("body");
    let events = text
        .split("\n\n")
        .filter_map(|block| block.trim().strip_prefix("data:"))
        .map(|data| data.trim().to_string())
        .collect();
    Sse {
        status,
        content_type,
        events,
    }
}

/// A gateway whose mock cuts answers into `chunks` pieces, with plugins `plugins`.
async fn gateway(chunks: u32, plugins: Vec<wasmgate::config::PluginConfig>) -> TestGateway {
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
        config.plugins = plugins;
    })
    .await
}

#[tokio::test]
async fn a_stream_is_openai_server_sent_events_ending_in_done() {
    let gw = gateway(5, vec![]).await;
    let sse = stream(&gw, &stream_body("mock/echo", "hello streaming world")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.content_type, "text/event-stream");
    assert!(sse.done(), "{:?}", sse.events);
    let events = sse.json();
    assert_eq!(events.len(), 6, "5 pieces and a final chunk: {events:?}");
    for e in &events {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["model"], "echo");
        assert_eq!(e["id"], events[0]["id"]);
    }
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(sse.text(), "echo: hello streaming world");
    assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
    assert!(events[5].get("usage").is_none(), "usage only when asked");

    let mut body = stream_body("mock/echo", "hi");
    body["stream_options"] = json!({"include_usage": true});
    let sse = stream(&gw, &body).await;
    let last = sse.json().pop().expect("events");
    assert_eq!(
        last["choices"],
        json!([]),
        "usage comes in a chunk of its own"
    );
    assert!(
        last["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0,
        "{last}"
    );
    gw.stop().await;
}

async fn chunk_hooks_edit_and_drop_chunks_in_post_hook_order(lang: Lang) {
    let gw = gateway(
        4,
        vec![
            scripted_in(lang, "A", json!({"chunk": "upper"})),
            scripted_in(lang, "B", json!({"chunk": "drop-odd"})),
        ],
    )
    .await;
    let sse = stream(&gw, &stream_body("mock/echo", "abcdefgh")).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done());
    // "echo: abcdefgh" in 4 pieces of 4: "echo", ": ab", "cdef", "gh"; B (runs first on
    // chunks, as post-hooks do) drops pieces 1 and 3, A upper-cases the rest.
    assert_eq!(sse.text(), "ECHOCDEF");
    gw.stop().await;
}

async fn a_chunk_pass_sends_on_what_earlier_chunk_hooks_left(lang: Lang) {
    // B runs first on chunks and upper-cases them; A answers `pass` (nothing handed back): the
    // client gets B's chunks.
    let gw = gateway(
        4,
        vec![
            scripted_in(lang, "A", json!({})),
            scripted_in(lang, "B", json!({"chunk": "upper"})),
        ],
    )
    .await;
    let sse = stream(&gw, &stream_body("mock/echo", "abcdefgh")).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done());
    assert_eq!(sse.text(), "ECHO: ABCDEFGH");
    gw.stop().await;
}

async fn a_chunk_hook_can_end_the_stream_with_an_error_that_goes_through_the_error_stage(
    lang: Lang,
) {
    let gw = gateway(
        4,
        vec![
            scripted_in(lang, "A", json!({"on_error": "mask"})),
            scripted_in(lang, "B", json!({"chunk": "fail-at:2"})),
        ],
    )
    .await;
    let sse = stream(&gw, &stream_body("mock/echo", "abcdefgh")).await;
    assert_eq!(sse.status, 200, "the stream had started");
    assert!(!sse.done(), "no [DONE] after an error: {:?}", sse.events);
    let events = sse.json();
    assert_eq!(sse.text(), "echo: ab", "chunks 0 and 1 went out");
    let last = events.last().expect("an error event");
    assert_eq!(last["error"]["message"], "masked by A", "{last}");
    gw.stop().await;
}

async fn a_failing_chunk_hook_follows_its_policy(lang: Lang) {
    let mut open = scripted_in(lang, "B", json!({"chunk": "trap"}));
    open.policy = wasmgate::config::FailurePolicy::FailOpen;
    let gw = gateway(3, vec![open]).await;
    let sse = stream(&gw, &stream_body("mock/echo", "abc")).await;
    assert!(sse.done(), "fail-open: the chunks pass unchanged");
    assert_eq!(sse.text(), "echo: abc");
    gw.stop().await;

    let gw = gateway(3, vec![scripted_in(lang, "B", json!({"chunk": "error"}))]).await;
    let sse = stream(&gw, &stream_body("mock/echo", "abc")).await;
    let last = sse.json().pop().expect("events");
    assert_eq!(last["error"]["type"], "plugin_error", "fail-closed: {last}");
    assert_eq!(
        last["error"]["code"], "trace:B.transport,B.pre,B.chunk,B.post",
        "the post-hook saw the error after the chunk hook: {last}"
    );
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("plugin `B` failed in stream-chunk"),
        "{last}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn post_hooks_see_the_assembled_stream_so_the_cache_serves_streams_too() {
    let gw = gateway(
        3,
        vec![plugin(
            "cache",
            artifacts::CACHE,
            json!({"ttl_seconds": 60}),
        )],
    )
    .await;
    let sse = stream(&gw, &stream_body("mock/echo", "cache me")).await;
    assert!(sse.done());
    assert_eq!(sse.text(), "echo: cache me");
    // The post-hook stored what the stream assembled: the plain request is a hit...
    let (status, body) = gw
        .chat(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "cache me"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["x_wasmgate_cache"], "hit", "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: cache me");
    assert!(
        body["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0,
        "usage kept: {body}"
    );
    // ...and a streamed hit (a short-circuit) is streamed from the cache.
    let sse = stream(&gw, &stream_body("mock/echo", "cache me")).await;
    assert!(sse.done());
    assert_eq!(sse.text(), "echo: cache me");
    let plugin = gw.plugin_status("cache").await;
    assert_eq!(plugin["stats"]["failures"], json!({}), "{plugin}");
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_that_fails_to_start_falls_back_like_a_plain_request() {
    let gw = gateway(2, vec![scripted("A", json!({}))]).await;
    let mut body = stream_body("mock/fail-503", "hi");
    body["fallbacks"] = json!(["backup/echo"]);
    let sse = stream(&gw, &body).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done());
    assert_eq!(sse.text(), "echo: hi");

    let sse = stream(&gw, &stream_body("mock/fail-400", "hi")).await;
    assert_eq!(
        sse.status, 400,
        "an error before the stream starts is a plain error"
    );
    assert_eq!(sse.content_type, "application/json", "not an event stream");
    gw.stop().await;
}

#[tokio::test]
async fn a_short_circuit_of_a_streamed_request_is_streamed() {
    let gw = gateway(2, vec![scripted("A", json!({"pre": "respond"}))]).await;
    let sse = stream(&gw, &stream_body("mock/echo", "hi")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.content_type, "text/event-stream");
    assert!(sse.done());
    assert_eq!(sse.text(), "responded by A");
    gw.stop().await;
}

/// A fake OpenAI upstream that streams like the real one: `data:` events for the role, two
/// pieces of text, the finish reason and the usage, then `[DONE]`, written in 7-byte pieces so
/// events arrive split across reads. It refuses (400) a request that did not ask to stream
/// with usage.
async fn fake_streaming_openai() -> std::net::SocketAddr {
    use axum::body::{Body, Bytes};
    use axum::response::{IntoResponse, Response};
    use axum::{Json, http::StatusCode};
    async fn completions(Json(req): Json<Value>) -> Response {
        if req["stream"] != true || req["stream_options"]["include_usage"] != true {
            let error = json!({"error": {"message": "expected a streamed request with usage"}});
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 5,
                   "model": "gpt-test", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let events = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 5, "model": "gpt-test",
                   "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        ];
        let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        let pieces: Vec<Result<Bytes, std::convert::Infallible>> = text
            .into_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut response = Response::new(Body::from_stream(futures::stream::iter(pieces)));
        response.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("text/event-stream"),
        );
        response
    }
    wasmgate_e2e::fake_upstream(completions).await
}

#[tokio::test]
async fn an_openai_upstream_stream_is_relayed_through_the_chunk_hooks() {
    let upstream = fake_streaming_openai().await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(
                json!({"type": "openai", "base_url": format!("http://{upstream}/v1")}),
            )
            .expect("provider config"),
        );
        config.plugins = vec![
            scripted("A", json!({"chunk": "upper"})),
            plugin("cache", artifacts::CACHE, json!({})),
        ];
    })
    .await;
    let mut body = stream_body("up/gpt-test", "hi");
    body["stream_options"] = json!({"include_usage": true});
    let sse = stream(&gw, &body).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done(), "{:?}", sse.events);
    assert_eq!(sse.text(), "HELLO");
    let events = sse.json();
    assert!(
        events.iter().all(|e| e["id"] == "chatcmpl-up"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(|e| e["usage"]["total_tokens"].clone()),
        Some(json!(5)),
        "the upstream's usage is relayed"
    );
    // The cache's post-hook stored the assembled (upper-cased) response with its usage.
    let (status, body) = gw
        .chat(&json!({"model": "up/gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["x_wasmgate_cache"], "hit");
    assert_eq!(body["choices"][0]["message"]["content"], "HELLO");
    assert_eq!(body["usage"]["total_tokens"], 5);
    gw.stop().await;
}

wasmgate_e2e::for_each_lang!(
    chunk_hooks_edit_and_drop_chunks_in_post_hook_order,
    a_chunk_pass_sends_on_what_earlier_chunk_hooks_left,
    a_chunk_hook_can_end_the_stream_with_an_error_that_goes_through_the_error_stage,
    a_failing_chunk_hook_follows_its_policy,
);
