//! Bifrost's pipeline rules, each against real `scripted` wasm plugins A, B, C in that order.
//! Every `scripted` hook appends `<tag>.<hook>` to the request context's `trace`, and the
//! outermost post-hook reports the whole trace in the response (or the error's code).
//!
//! Each test runs against the Rust, Python and JavaScript versions of `scripted` (the same
//! config language and trace): `pipeline::rust::*`, `pipeline::python::*`, `pipeline::js::*`.

use serde_json::{Value, json};
use wasmgate::providers::{MockConfig, ProviderConfig};
use wasmgate_e2e::{Lang, TestGateway, chat_body, content_of, scripted_in, trace_of};

const ALL_CONTINUE: &str =
    "A.transport,B.transport,C.transport,A.pre,B.pre,C.pre,C.post,B.post,A.post";

/// A gateway with a second mock provider `backup`, so fallbacks can change provider.
async fn gateway(lang: Lang, a: Value, b: Value, c: Value) -> TestGateway {
    TestGateway::start_with(|config| {
        config
            .providers
            .insert("backup".into(), ProviderConfig::Mock(MockConfig::default()));
        config.plugins = vec![
            scripted_in(lang, "A", a),
            scripted_in(lang, "B", b),
            scripted_in(lang, "C", c),
        ];
    })
    .await
}

async fn pre_hooks_run_in_order_and_post_hooks_in_reverse(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({}), json!({})).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(trace_of(&body), ALL_CONTINUE);
    assert_eq!(content_of(&body), "echo: hi");
    gw.stop().await;
}

async fn respond_skips_the_provider_and_only_plugins_that_ran_see_it(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({"pre": "respond"}), json!({})).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "responded by B");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,B.post,A.post"
    );
    gw.stop().await;
}

async fn fail_skips_the_provider_and_reaches_the_client_without_fallbacks(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({"pre": "fail"}), json!({})).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["message"], "failed by B");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,B.post,A.post"
    );
    gw.stop().await;
}

async fn fail_allowing_fallbacks_tries_the_next_target_with_pre_hooks_run_again(lang: Lang) {
    let gw = gateway(
        lang,
        json!({}),
        json!({"pre": "fail", "pre_only_provider": "mock"}),
        json!({}),
    )
    .await;
    let mut req = chat_body("mock/echo", "hi");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hi");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,\
         A.pre,B.pre,B.post,A.post,\
         A.pre,B.pre,C.pre,C.post,B.post,A.post"
    );
    gw.stop().await;
}

async fn fail_forbidding_fallbacks_goes_to_the_client_at_once(lang: Lang) {
    let gw = gateway(
        lang,
        json!({}),
        json!({"pre": "fail-no-fallbacks"}),
        json!({}),
    )
    .await;
    let mut req = chat_body("mock/echo", "hi");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,B.post,A.post",
        "no second attempt"
    );
    gw.stop().await;
}

async fn provider_errors_pass_through_post_hooks_then_fall_back(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({}), json!({})).await;
    let (status, body) = gw.chat(&chat_body("mock/fail-503", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(trace_of(&body), ALL_CONTINUE, "post-hooks saw the error");

    let mut req = chat_body("mock/fail-503", "hi");
    req["fallbacks"] = json!(["backup/fail-429", "backup/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    let rounds = trace_of(&body).matches("A.post").count();
    assert_eq!(
        rounds, 3,
        "three attempts, each with its post-hooks: {body}"
    );

    let mut req = chat_body("mock/fail-400", "hi");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 400, "a validation error forbids fallbacks: {body}");
    gw.stop().await;
}

async fn post_hook_recovery_is_seen_by_later_post_hooks(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({}), json!({"post": "recover"})).await;
    let mut req = chat_body("mock/fail-503", "hi");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, body) = gw.chat(&req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "recovered by C");
    assert_eq!(
        trace_of(&body),
        ALL_CONTINUE,
        "recovered: no fallback attempt"
    );
    gw.stop().await;
}

async fn post_hook_can_turn_a_response_into_an_error(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({"post": "to-error"}), json!({})).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["message"], "converted by B");
    assert_eq!(trace_of(&body), ALL_CONTINUE, "A's post-hook saw the error");
    gw.stop().await;
}

async fn pre_hooks_rewrite_the_request_for_later_plugins_and_the_provider(lang: Lang) {
    let gw = gateway(
        lang,
        json!({"pre": "set-model:slow-1"}),
        json!({}),
        json!({}),
    )
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model"], "slow-1",
        "the provider saw the rewritten model"
    );
    gw.stop().await;
}

async fn pass_goes_on_with_the_request_as_earlier_plugins_left_it(lang: Lang) {
    // A rewrites the model; B answers `pass` (nothing handed back); C and the provider must
    // see A's rewrite, and the conversation, exactly as they were.
    let gw = gateway(
        lang,
        json!({"pre": "set-model:slow-1"}),
        json!({"pre": "pass"}),
        json!({}),
    )
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "slow-1", "B's pass kept A's rewrite");
    assert_eq!(content_of(&body), "echo: hi");
    assert_eq!(trace_of(&body), ALL_CONTINUE);
    gw.stop().await;
}

async fn keep_hands_the_outcome_on_as_later_post_hooks_left_it(lang: Lang) {
    // Post-hooks run C, B, A. A answers `keep` (nothing handed back, so it writes no trace):
    // the client gets B's outcome exactly as B left it, for a response and for an error.
    let gw = gateway(lang, json!({"post": "keep"}), json!({}), json!({})).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hi");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,C.pre,C.post,B.post",
        "B's response, as B wrote it"
    );
    gw.stop().await;

    let gw = gateway(
        lang,
        json!({"post": "keep"}),
        json!({"post": "to-error"}),
        json!({}),
    )
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["message"], "converted by B");
    assert_eq!(
        body["error"]["code"],
        "trace:A.transport,B.transport,C.transport,A.pre,B.pre,C.pre,C.post,B.post",
        "B's error, as B wrote it"
    );
    gw.stop().await;
}

async fn transport_interceptors_rewrite_headers_or_answer_directly(lang: Lang) {
    let gw = gateway(
        lang,
        json!({"transport": "rewrite-header:x-added=yes"}),
        json!({}),
        json!({"transport": "respond:418"}),
    )
    .await;
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("mock/echo", "hi"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 418);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({"by": "C"}));
    gw.stop().await;
}

async fn fail_open_skips_a_failing_hook_and_its_post_hook(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![
        scripted_in(lang, "A", json!({})),
        wasmgate_e2e::fail_open(scripted_in(lang, "B", json!({"pre": "error"}))),
        scripted_in(lang, "C", json!({})),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        trace_of(&body),
        "A.transport,B.transport,C.transport,A.pre,B.pre,C.pre,C.post,A.post",
        "B failed in pre-hook, so B gets no post-hook"
    );
    gw.stop().await;
}

async fn context_values_are_per_request(lang: Lang) {
    let gw = gateway(lang, json!({}), json!({}), json!({})).await;
    let (one, two) = (chat_body("mock/echo", "one"), chat_body("mock/echo", "two"));
    let (a, b) = tokio::join!(gw.chat(&one), gw.chat(&two));
    assert_eq!(trace_of(&a.1), ALL_CONTINUE);
    assert_eq!(trace_of(&b.1), ALL_CONTINUE);
    gw.stop().await;
}

/// POSTs `body` and returns status, the values of header `name` and the JSON body.
async fn chat_raw(gw: &TestGateway, body: &Value, name: &str) -> (u16, Vec<String>, Value) {
    let resp = gw.post("/v1/chat/completions", body.to_string(), &[]).await;
    let status = resp.status().as_u16();
    let values = resp
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    (status, values, resp.json().await.expect("JSON body"))
}

async fn the_error_stage_runs_in_post_hook_order_on_the_final_error_only(lang: Lang) {
    let gw = gateway(
        lang,
        json!({"on_error": "mask"}),
        json!({"pre": "fail-no-fallbacks", "on_error": "mask"}),
        json!({"on_error": "mask"}),
    )
    .await;
    let (status, masked_by, body) =
        chat_raw(&gw, &chat_body("mock/echo", "hi"), "x-masked-by").await;
    assert_eq!(status, 403, "the status is kept: {body}");
    assert_eq!(
        body["error"]["message"], "masked by A",
        "A runs last: {body}"
    );
    assert_eq!(
        masked_by,
        ["C", "B", "A"],
        "every plugin of the chain, in post-hook order, C included though its pre-hook did not run"
    );
    gw.stop().await;

    let gw = gateway(lang, json!({"on_error": "mask"}), json!({}), json!({})).await;
    let (status, masked_by, body) =
        chat_raw(&gw, &chat_body("mock/echo", "hi"), "x-masked-by").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        masked_by.is_empty(),
        "a successful request never reaches the error stage"
    );
    let (status, _, body) = chat_raw(&gw, &chat_body("mock/fail-429", "hi"), "x-masked-by").await;
    assert_eq!(status, 429, "a provider error goes through it too: {body}");
    assert_eq!(body["error"]["message"], "masked by A");
    gw.stop().await;
}

async fn an_error_stage_pass_hands_on_the_error_as_earlier_hooks_left_it(lang: Lang) {
    // The error stage runs C, B, A. C masks; B and A answer `none` (nothing handed back): the
    // client gets C's rewrite, status and header included.
    let gw = gateway(
        lang,
        json!({}),
        json!({"pre": "fail-no-fallbacks"}),
        json!({"on_error": "mask"}),
    )
    .await;
    let (status, masked_by, body) =
        chat_raw(&gw, &chat_body("mock/echo", "hi"), "x-masked-by").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["message"], "masked by C", "{body}");
    assert_eq!(masked_by, ["C"]);
    gw.stop().await;
}

async fn a_failing_error_stage_hook_is_handled_by_its_policy(lang: Lang) {
    let gw = gateway(
        lang,
        json!({"on_error": "mask"}),
        json!({"on_error": "trap"}),
        json!({"pre": "fail-no-fallbacks"}),
    )
    .await;
    let (status, masked_by, body) =
        chat_raw(&gw, &chat_body("mock/echo", "hi"), "x-masked-by").await;
    assert_eq!(
        status, 500,
        "B's trap replaced the error (fail-closed): {body}"
    );
    assert_eq!(body["error"]["code"], "plugin_trap", "{body}");
    assert_eq!(
        body["error"]["message"], "masked by A",
        "and A still ran: {body}"
    );
    assert_eq!(masked_by, ["A"]);
    gw.stop().await;
}

wasmgate_e2e::for_each_lang!(
    pre_hooks_run_in_order_and_post_hooks_in_reverse,
    respond_skips_the_provider_and_only_plugins_that_ran_see_it,
    fail_skips_the_provider_and_reaches_the_client_without_fallbacks,
    fail_allowing_fallbacks_tries_the_next_target_with_pre_hooks_run_again,
    fail_forbidding_fallbacks_goes_to_the_client_at_once,
    provider_errors_pass_through_post_hooks_then_fall_back,
    post_hook_recovery_is_seen_by_later_post_hooks,
    post_hook_can_turn_a_response_into_an_error,
    pre_hooks_rewrite_the_request_for_later_plugins_and_the_provider,
    pass_goes_on_with_the_request_as_earlier_plugins_left_it,
    keep_hands_the_outcome_on_as_later_post_hooks_left_it,
    transport_interceptors_rewrite_headers_or_answer_directly,
    fail_open_skips_a_failing_hook_and_its_post_hook,
    context_values_are_per_request,
    the_error_stage_runs_in_post_hook_order_on_the_final_error_only,
    an_error_stage_pass_hands_on_the_error_as_earlier_hooks_left_it,
    a_failing_error_stage_hook_is_handled_by_its_policy,
);
