//! The priority/parallel chain and stages: plugins run by priority (ties by name), parallel
//! groups run their pre-hooks concurrently on the same input, may not rewrite it, and resolve
//! short-circuits deterministically; stages keep a plugin out of the rest of the request.
//!
//! Each test runs against the Rust, Python and JavaScript versions of `scripted`.

use serde_json::{Value, json};
use wasmgate::config::{PluginConfig, Stage};
use wasmgate_e2e::{Lang, TestGateway, chat_body, content_of, scripted_in, trace_of};

fn with(mut p: PluginConfig, priority: Option<i64>, parallel: bool) -> PluginConfig {
    p.priority = priority;
    p.parallel = parallel;
    p
}

/// The chain order the admin API reports.
async fn order(gw: &TestGateway) -> Vec<String> {
    let (_, list) = gw.get("/api/plugins").await;
    list["plugins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn lower_priority_runs_first_and_ties_are_broken_by_name(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![
        with(scripted_in(lang, "A", json!({})), Some(20), false),
        with(scripted_in(lang, "C", json!({})), Some(10), false),
        with(scripted_in(lang, "B", json!({})), Some(20), false),
        // No priority: its position in the list (3).
        scripted_in(lang, "D", json!({})),
    ])
    .await;
    assert_eq!(order(&gw).await, ["D", "C", "A", "B"]);
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        trace_of(&body),
        "D.transport,C.transport,A.transport,B.transport,D.pre,C.pre,A.pre,B.pre,B.post,A.post,C.post,D.post"
    );
    let view = gw.plugin_status("C").await;
    assert_eq!(view["priority"], 10, "{view}");
    assert_eq!(gw.plugin_status("D").await["priority"], 3);
    gw.stop().await;
}

/// The post-hook part of a trace (post-hooks run one after another, so it is exact; parallel
/// pre-hooks append to the context concurrently).
fn posts(body: &Value) -> Vec<String> {
    posts_of(&trace_of(body))
}

fn posts_of(trace: &str) -> Vec<String> {
    trace
        .split(',')
        .filter(|s| s.ends_with(".post"))
        .map(str::to_string)
        .collect()
}

async fn a_parallel_group_runs_every_member_and_mirrors_the_order_in_post_hooks(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![
        with(scripted_in(lang, "first", json!({})), Some(1), false),
        with(
            scripted_in(lang, "V1", json!({"pre": "sleep-ms:30"})),
            Some(2),
            true,
        ),
        with(
            scripted_in(lang, "V2", json!({"pre": "sleep-ms:30"})),
            Some(2),
            true,
        ),
        with(scripted_in(lang, "V3", json!({})), Some(2), true),
        with(scripted_in(lang, "last", json!({})), Some(3), false),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_of(&body), "echo: hi");
    assert_eq!(
        posts(&body),
        ["last.post", "V3.post", "V2.post", "V1.post", "first.post"]
    );
    for name in ["V1", "V2", "V3"] {
        let view = gw.plugin_status(name).await;
        assert_eq!(view["parallel"], true, "{view}");
        assert_eq!(view["stats"]["failures"], json!({}), "{view}");
    }
    gw.stop().await;
}

async fn a_parallel_plugin_may_not_rewrite_the_request(lang: Lang) {
    let gw = TestGateway::with_plugins(vec![
        with(
            scripted_in(lang, "R", json!({"pre": "set-model:other"})),
            Some(1),
            true,
        ),
        with(scripted_in(lang, "S", json!({})), Some(1), true),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["type"], "plugin_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin `R` failed in pre-hook")
            && message.contains("may only pass it on, answer it or fail it"),
        "{message}"
    );
    gw.stop().await;

    // Fail-open: the rewrite is dropped, the original request goes on.
    let mut r = with(
        scripted_in(lang, "R", json!({"pre": "set-model:other"})),
        Some(1),
        true,
    );
    r.policy = wasmgate::config::FailurePolicy::FailOpen;
    let gw = TestGateway::with_plugins(vec![
        r,
        with(scripted_in(lang, "S", json!({})), Some(1), true),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "echo", "the rewrite was not applied: {body}");
    gw.stop().await;
}

async fn when_several_members_short_circuit_the_first_in_order_wins(lang: Lang) {
    // A fails, B answers: whichever finishes first, A wins, being first in order.
    let gw = TestGateway::with_plugins(vec![
        with(
            scripted_in(lang, "A", json!({"pre": "fail-no-fallbacks"})),
            Some(1),
            true,
        ),
        with(
            scripted_in(lang, "B", json!({"pre": "respond"})),
            Some(1),
            true,
        ),
        with(scripted_in(lang, "C", json!({})), Some(1), true),
        with(scripted_in(lang, "Z", json!({})), Some(9), false),
    ])
    .await;
    for _ in 0..5 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["message"], "failed by A", "{body}");
        let trace = body["error"]["code"].as_str().unwrap_or_default();
        assert_eq!(
            posts_of(trace),
            ["C.post", "B.post", "A.post"],
            "every member ran, so every member's post-hook ran; Z (after the group) did not: {trace}"
        );
    }
    gw.stop().await;
}

async fn stages_keep_a_plugin_out_of_the_other_stages(lang: Lang) {
    let mut post_only = scripted_in(lang, "P", json!({"on_error": "mask"}));
    post_only.stages = Some(vec![Stage::PostRequest]);
    let mut error_only = scripted_in(lang, "E", json!({"on_error": "mask"}));
    error_only.stages = Some(vec![Stage::Error]);
    let gw = TestGateway::with_plugins(vec![
        post_only,
        error_only,
        scripted_in(
            lang,
            "F",
            json!({"pre_only_provider": "mock", "pre": "fail-no-fallbacks"}),
        ),
    ])
    .await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"]["message"], "masked by E",
        "P's on-error is outside its stages; E's runs: {body}"
    );
    gw.stop().await;

    let mut post_only = scripted_in(lang, "P", json!({}));
    post_only.stages = Some(vec![Stage::PostRequest]);
    let gw = TestGateway::with_plugins(vec![post_only, scripted_in(lang, "Q", json!({}))]).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        trace_of(&body),
        "Q.transport,Q.pre,Q.post,P.post",
        "P's transport and pre-hook are never called; its post-hook still runs"
    );
    let view = gw.plugin_status("P").await;
    assert_eq!(view["stages"], json!(["post-request"]), "{view}");
    gw.stop().await;
}

wasmgate_e2e::for_each_lang!(
    lower_priority_runs_first_and_ties_are_broken_by_name,
    a_parallel_group_runs_every_member_and_mirrors_the_order_in_post_hooks,
    a_parallel_plugin_may_not_rewrite_the_request,
    when_several_members_short_circuit_the_first_in_order_wins,
    stages_keep_a_plugin_out_of_the_other_stages,
);
