//! The request a pre-hook and the outcome a post-hook are lent (the world's `exchange`
//! interface): every accessor reads the value as the plugins before left it, and a post-hook
//! sets response fields through the lent outcome, over real HTTP, through the `scripted`
//! plugins' `describe` and `annotate` actions.

use serde_json::{Value, json};
use wasmgate_e2e::{Lang, TestGateway, content_of, for_each_lang, scripted, scripted_in};

#[tokio::test]
async fn every_part_of_the_lent_request_reads_what_the_plugins_before_left() {
    let gw = TestGateway::with_plugins(vec![
        scripted("A", json!({"pre": "set-model:renamed"})),
        scripted("B", json!({"pre": "describe"})),
    ])
    .await;
    let (status, body) = gw
        .chat(&json!({
            "model": "mock/echo",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"},
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 64,
            "user": "alice",
            "fallbacks": ["mock/slow-1"],
            "seed": 7,
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    let described: Value = serde_json::from_str(content_of(&body)).expect("a JSON description");
    assert_eq!(
        described,
        json!({
            "provider": "mock",
            "model": "renamed",
            "target": "mock/renamed",
            "message_count": 4,
            "last_user_text": "second",
            "messages": 4,
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 64,
            "stream": false,
            "user": "alice",
            "fallbacks": ["mock/slow-1"],
            "extra": "{\"seed\":7}",
            "seed": 7,
            "whole_model": "renamed",
        })
    );
    gw.stop().await;
}

#[tokio::test]
async fn every_part_of_the_lent_outcome_reads_the_response_or_the_error() {
    let gw = TestGateway::with_plugins(vec![scripted("A", json!({"post": "describe"}))]).await;
    let (status, body) = gw
        .chat(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let usage = body["usage"]["total_tokens"].clone();
    assert!(usage.is_u64(), "the mock reports usage: {body}");
    assert_eq!(
        body["described"],
        json!({
            "is_error": false,
            "status": 200,
            "usage": usage,
            "model": "echo",
            "text": "echo: hi",
            "finish_reason": "stop",
            "error": null,
        })
    );

    let (status, body) = gw
        .chat(&json!({"model": "mock/fail-503", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let described: Value = serde_json::from_str(message).expect("a JSON description");
    assert_eq!(described["is_error"], true, "{described}");
    assert_eq!(described["status"], 503, "{described}");
    assert_eq!(described["usage"], Value::Null, "{described}");
    assert_eq!(described["text"], Value::Null, "{described}");
    assert!(
        described["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the error's message: {described}"
    );
    gw.stop().await;
}

async fn a_post_hook_sets_response_fields_through_the_lent_outcome(lang: Lang) {
    // B's post-hook runs first (reverse order); both annotate and hand the outcome on with
    // `none`, so A's field is the one the client sees.
    let gw = TestGateway::with_plugins(vec![
        scripted_in(lang, "A", json!({"post": "annotate"})),
        scripted_in(lang, "B", json!({"post": "annotate"})),
    ])
    .await;
    let (status, body) = gw
        .chat(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["annotated_by"], "A", "the later field wins: {body}");
    assert_eq!(
        body["model"], "echo",
        "a typed field is never set this way: {body}"
    );
    assert_eq!(content_of(&body), "echo: hi", "{body}");
    let refusal = body["typed_refusal"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("`model` is a typed part of the response"),
        "the refusal names the field: {body}"
    );

    // An error outcome has no body to annotate: the plugin is told so.
    let (status, body) = gw
        .chat(&json!({"model": "mock/fail-503", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("annotate refused: the outcome is an error"),
        "{body}"
    );
    gw.stop().await;
}

for_each_lang!(a_post_hook_sets_response_fields_through_the_lent_outcome);

#[tokio::test]
async fn fields_set_through_the_lent_outcome_apply_to_the_response_a_hook_returns() {
    // `annotate-then-pass` sets its field, then returns a copy of the outcome with its trace.
    let gw =
        TestGateway::with_plugins(vec![scripted("A", json!({"post": "annotate-then-pass"}))]).await;
    let (status, body) = gw
        .chat(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["annotated_by"], "A", "{body}");
    assert_eq!(body["trace"], "A.transport,A.pre,A.post", "{body}");
    assert_eq!(content_of(&body), "echo: hi", "{body}");
    gw.stop().await;
}
