//! The catalogue's stateful plugins under `"isolation": "shared"`, where each hook call may
//! run on any instance and one instance serves many requests in flight: what a pre-hook keeps
//! for its post-hook (and a stream chunk for the next) travels in the request's context, so
//! two requests whose hooks interleave on one instance each get their own state back.
//!
//! Each test overlaps two requests so that both pre-hooks run before either post-hook (the
//! shared instance is idle in between, so the same one serves all four calls), then checks
//! that every answer carries what belongs to its own request.

use serde_json::{Value, json};
use wasmgate::config::PluginConfig;
use wasmgate::providers::{MockConfig, ProviderConfig};
use wasmgate::runtime::Isolation;
use wasmgate_e2e::{TestGateway, artifacts, chat_body, content_of, plugin};

const MONTH: u64 = 30 * 86_400;
/// The model of the first request of a pair: its post-hook runs this long after its pre-hook,
/// which leaves room for the second's pre-hook on a busy machine.
const FIRST_MODEL: &str = "mock/slow-800";
/// The model of the second: its post-hook comes well after the first's.
const SECOND_MODEL: &str = "mock/slow-1400";

/// Plugin `name` (the component at `path`, with `config`) on shared instances.
fn shared(name: &str, path: &str, config: Value) -> PluginConfig {
    let mut p = plugin(name, path, config);
    p.isolation = Some(Isolation::Shared);
    p
}

/// One request of a pair: its prompt and its headers.
struct Request {
    prompt: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn request(prompt: &'static str, headers: &[(&'static str, &'static str)]) -> Request {
    Request {
        prompt,
        headers: headers.to_vec(),
    }
}

/// The pre-hook calls plugin `name` has run so far.
async fn pre_hooks(gw: &TestGateway, name: &str) -> u64 {
    gw.plugin_status(name).await["stats"]["by_hook"]["pre-hook"]["calls"]
        .as_u64()
        .unwrap_or(0)
}

/// Sends `first` (model [`FIRST_MODEL`]) and, once plugin `probe` has run its pre-hook for
/// it, `second` ([`SECOND_MODEL`]); drives both until `probe` has run both pre-hooks, failing
/// if either is answered before; returns both answers (status, body) in order. The first
/// post-hook runs about 800 ms after both pre-hooks, the second about 600 ms after that.
async fn overlapped(
    gw: &TestGateway,
    probe: &str,
    first: &Request,
    second: &Request,
) -> [(u16, Value); 2] {
    let before = pre_hooks(gw, probe).await;
    let send = |req: &Request, model: &str| {
        let body = chat_body(model, req.prompt);
        let headers = req.headers.clone();
        async move { gw.chat_with_headers(&body, &headers).await }
    };
    let mut a = Box::pin(send(first, FIRST_MODEL));
    let mut b = None;
    loop {
        let ran = pre_hooks(gw, probe).await - before;
        if ran == 2 {
            break;
        }
        if ran == 1 && b.is_none() {
            b = Some(Box::pin(send(second, SECOND_MODEL)));
        }
        let tick = tokio::time::sleep(std::time::Duration::from_millis(2));
        match &mut b {
            None => tokio::select! {
                (status, body) = &mut a => panic!("the first was answered early: {status} {body}"),
                () = tick => {}
            },
            Some(b) => tokio::select! {
                (status, body) = &mut a => panic!("the first was answered early: {status} {body}"),
                (status, body) = b => panic!("the second was answered early: {status} {body}"),
                () = tick => {}
            },
        }
    }
    let b = b.unwrap_or_else(|| unreachable!("sent when the first pre-hook ran"));
    let (a, b) = tokio::join!(a, b);
    assert_eq!(gw.plugin_status(probe).await["isolation"], "shared");
    [a, b]
}

/// `usage.total_tokens` of a chat completion body.
fn total_tokens(body: &Value) -> u64 {
    body["usage"]["total_tokens"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn rate_limit_charges_each_request_to_its_own_bucket_in_each_of_two_entries() {
    // Two entries of one component: their state must not collide either. The outer one
    // reports (its post-hook runs last); the inner one's 1-token limit makes the next request
    // of a key fail with what was charged to that key.
    let rule = |name: &str, tokens: u64| {
        json!({"rules": [{"name": name, "key": "virtual-key", "tokens": tokens,
                          "window_seconds": MONTH}]})
    };
    let gw = TestGateway::with_plugins(vec![
        shared("rl-outer", artifacts::RATE_LIMIT, rule("outer", 1000)),
        shared("rl-inner", artifacts::RATE_LIMIT, rule("inner", 1)),
    ])
    .await;
    let long = request(
        "a prompt a good deal longer than the other one, so that it costs more tokens",
        &[("x-wasmgate-vk", "vk-long")],
    );
    let short = request("hi", &[("x-wasmgate-vk", "vk-short")]);
    let answers = overlapped(&gw, "rl-inner", &long, &short).await;
    for (req, (status, body)) in [&long, &short].into_iter().zip(&answers) {
        assert_eq!(status, &200, "{body}");
        let used = total_tokens(body);
        assert_eq!(
            body["x_wasmgate_ratelimit"]["outer"]["remaining_tokens"],
            1000 - used,
            "{}: charged its own {used} tokens: {body}",
            req.prompt
        );
        let (status, refused) = gw
            .chat_with_headers(&chat_body("mock/echo", "again"), &req.headers)
            .await;
        assert_eq!(status, 429, "{refused}");
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("rule `inner` allows 1 tokens")
                && message.contains(&format!("and {used} have been used")),
            "{}: the inner entry charged {used}: {message}",
            req.prompt
        );
    }
    assert_ne!(total_tokens(&answers[0].1), total_tokens(&answers[1].1));
    gw.stop().await;
}

#[tokio::test]
async fn governance_charges_each_request_to_its_own_key() {
    let gw = TestGateway::with_plugins(vec![shared(
        "governance",
        artifacts::GOVERNANCE,
        json!({"keys": {"vk-1": {"max_tokens": 1000}, "vk-2": {"max_tokens": 1000}}}),
    )])
    .await;
    let one = request(
        "the first key's prompt, the longer of the two",
        &[("x-wasmgate-vk", "vk-1")],
    );
    let two = request("the second", &[("x-wasmgate-vk", "vk-2")]);
    for round in 1..=2 {
        let answers = overlapped(&gw, "governance", &one, &two).await;
        for (req, (status, body)) in [&one, &two].into_iter().zip(&answers) {
            assert_eq!(status, &200, "{body}");
            assert_eq!(
                body["x_wasmgate_budget"]["tokens_used"],
                round * total_tokens(body),
                "{} (round {round}) accumulates its own tokens: {body}",
                req.prompt
            );
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn cache_stores_each_response_under_its_own_key() {
    let gw = TestGateway::with_plugins(vec![shared("cache", artifacts::CACHE, json!({}))]).await;
    let first = request("what is one plus one", &[]);
    let second = request("name a colour", &[]);
    for (req, (status, body)) in [&first, &second]
        .into_iter()
        .zip(overlapped(&gw, "cache", &first, &second).await)
    {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["x_wasmgate_cache"], "miss", "{body}");
        assert_eq!(content_of(&body), format!("echo: {}", req.prompt));
    }
    for (req, model) in [(&first, FIRST_MODEL), (&second, SECOND_MODEL)] {
        let (status, body) = gw.chat(&chat_body(model, req.prompt)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["x_wasmgate_cache"], "hit", "{}: {body}", req.prompt);
        assert_eq!(
            content_of(&body),
            format!("echo: {}", req.prompt),
            "stored under its own key"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn logging_writes_each_line_with_its_own_request() {
    let gw = TestGateway::with_plugins(vec![shared(
        "logging",
        artifacts::LOGGING,
        json!({"response_field": "x_wasmgate_log", "include_bodies": true}),
    )])
    .await;
    let first = request("the first prompt", &[]);
    let second = request("the second prompt", &[]);
    let answers = overlapped(&gw, "logging", &first, &second).await;
    for ((req, model), (status, body)) in [(&first, FIRST_MODEL), (&second, SECOND_MODEL)]
        .into_iter()
        .zip(answers)
    {
        assert_eq!(status, 200, "{body}");
        let line = body["x_wasmgate_log"].as_str().unwrap_or_default();
        let line: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {body}"));
        assert_eq!(line["model"], model, "{line}");
        assert_eq!(line["prompt"], req.prompt, "{line}");
        assert_eq!(
            line["total_tokens"], body["usage"]["total_tokens"],
            "{line}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn content_filter_redacts_two_interleaved_streams_each_in_its_own_window() {
    // Seven pieces of each answer, 100 ms apart, streamed at once: their chunk hooks alternate
    // on the shared instance, and each banned word is split across two chunks.
    let gw = TestGateway::start_with(|config| {
        let mock = MockConfig {
            stream_chunks: 7,
            stream_delay_ms: 100,
            ..MockConfig::default()
        };
        config
            .providers
            .insert("mock".into(), ProviderConfig::Mock(mock));
        config.plugins = vec![shared(
            "content-filter",
            artifacts::CONTENT_FILTER,
            json!({"patterns": ["damn", "heck"], "action": "redact", "scope": "completions"}),
        )];
    })
    .await;
    let stream = async |prompt: &str| {
        let body = json!({"model": "mock/echo", "stream": true,
                          "messages": [{"role": "user", "content": prompt}]});
        let resp = gw.post("/v1/chat/completions", body.to_string(), &[]).await;
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().await.expect("body");
        let mut seen = String::new();
        for data in text
            .split("\n\n")
            .filter_map(|block| block.trim().strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| *d != "[DONE]")
        {
            let event: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
            if let Some(piece) = event.pointer("/choices/0/delta/content") {
                seen.push_str(piece.as_str().unwrap_or_default());
            }
        }
        seen
    };
    // "echo: well damn it" and "echo: oh heck no!" in 7 pieces split both words.
    let (a, b) = tokio::join!(stream("well damn it"), stream("oh heck no!"));
    assert_eq!(a, "echo: well [redacted] it");
    assert_eq!(b, "echo: oh [redacted] no!");
    let calls =
        gw.plugin_status("content-filter").await["stats"]["by_hook"]["stream-chunk"]["calls"]
            .as_u64()
            .unwrap_or(0);
    assert!(
        calls >= 14,
        "every chunk of both streams was filtered: {calls}"
    );
    gw.stop().await;
}

/// The SDK's request state in each language: `scripted`'s pre-hook keeps the request's
/// provider and model in the context, and `recover` (in plugin A, after B turned the response
/// into an error) answers with them. Two overlapped requests on shared instances each recover
/// with their own model.
async fn sdk_state_is_per_request_on_shared_instances(lang: wasmgate_e2e::Lang) {
    let script = |name: &str, post: &str| {
        let mut p = wasmgate_e2e::scripted_in(lang, name, json!({"post": post}));
        p.isolation = Some(Isolation::Shared);
        p
    };
    let gw = TestGateway::with_plugins(vec![script("A", "recover"), script("B", "to-error")]).await;
    let first = request("first", &[]);
    let second = request("second", &[]);
    let answers = overlapped(&gw, "B", &first, &second).await;
    for (model, (status, body)) in [FIRST_MODEL, SECOND_MODEL].into_iter().zip(answers) {
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_of(&body), "recovered by A", "{body}");
        let (_, name) = model.split_once('/').unwrap_or_default();
        assert_eq!(body["model"], name, "recovered with its own model: {body}");
    }
    gw.stop().await;
}

wasmgate_e2e::for_each_lang!(sdk_state_is_per_request_on_shared_instances);

/// In its own module: `for_each_lang!` names one test module per language.
mod over_the_context_limit {
    use super::*;

    /// The SDK's request state in each language refuses state the gateway would drop (JSON over
    /// its 64 KiB per context value) rather than let a later hook read older state: `scripted`
    /// keeping 70,000 characters fails its pre-hook naming the key and the limit, one keeping
    /// 60,000 is served.
    async fn sdk_state_over_the_context_limit_fails_the_hook_naming_it(lang: wasmgate_e2e::Lang) {
        let keep = |n: u32| {
            wasmgate_e2e::scripted_in(lang, "A", json!({"pre": format!("keep-state:{n}")}))
        };
        let gw = TestGateway::with_plugins(vec![keep(70_000)]).await;
        let (status, body) = gw
            .chat(&wasmgate_e2e::chat_body("mock/echo", "hello"))
            .await;
        assert_eq!(status, 500, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        for part in [
            "plugin `A` failed in pre-hook",
            "the state \"pad\" is 70002 bytes as JSON, over the gateway's 65536 bytes per \
             context value",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        gw.stop().await;
        let gw = TestGateway::with_plugins(vec![keep(60_000)]).await;
        let (status, body) = gw
            .chat(&wasmgate_e2e::chat_body("mock/echo", "hello"))
            .await;
        assert_eq!(status, 200, "{body}");
        gw.stop().await;
    }

    wasmgate_e2e::for_each_lang!(sdk_state_over_the_context_limit_fails_the_hook_naming_it);
}
