//! The priority/parallel chain and stages: plugins run by priority (ties by name), parallel
//! groups run their pre-hooks concurrently on the same input, may not rewrite it, and resolve
//! short-circuits deterministically; stages keep a plugin out of the rest of the request.

use serde_json::{Value, json};
use wasmgate::config::{PluginConfig, Stage};
use wasmgate_e2e::{TestGateway, chat_body, content_of, scripted, trace_of};

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

#[tokio::test]
async fn lower_priority_runs_first_and_ties_are_broken_by_name() {
    let gw = TestGateway::with_plugins(vec![
        with(scripted("A", json!({})), Some(20), false),
        with(scripted("C", json!({})), Some(10), false),
        with(scripted("B", json!({})), Some(20), false),
        // No priority: its position in the list (3).
        scripted("D", json!({})),
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

#[tokio::test]
async fn a_parallel_group_runs_every_member_and_mirrors_the_order_in_post_hooks() {
    let gw = TestGateway::with_plugins(vec![
        with(scripted("first", json!({})), Some(1), false),
        with(scripted("V1", json!({"pre": "sleep-ms:30"})), Some(2), true),
        with(scripted("V2", json!({"pre": "sleep-ms:30"})), Some(2), true),
        with(scripted("V3", json!({})), Some(2), true),
        with(scripted("last", json!({})), Some(3), false),
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

#[tokio::test]
async fn a_parallel_plugin_may_not_rewrite_the_request() {
    let gw = TestGateway::with_plugins(vec![
        with(
            scripted("R", json!({"pre": "set-model:other"})),
            Some(1),
            true,
        ),
        with(scripted("S", json!({})), Some(1), true),
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
        scripted("R", json!({"pre": "set-model:other"})),
        Some(1),
        true,
    );
    r.policy = wasmgate::config::FailurePolicy::FailOpen;
    let gw =
        TestGateway::with_plugins(vec![r, with(scripted("S", json!({})), Some(1), true)]).await;
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "echo", "the rewrite was not applied: {body}");
    gw.stop().await;
}

#[tokio::test]
async fn when_several_members_short_circuit_the_first_in_order_wins() {
    // A fails, B answers: whichever finishes first, A wins, being first in order.
    let gw = TestGateway::with_plugins(vec![
        with(
            scripted("A", json!({"pre": "fail-no-fallbacks"})),
            Some(1),
            true,
        ),
        with(scripted("B", json!({"pre": "respond"})), Some(1), true),
        with(scripted("C", json!({})), Some(1), true),
        with(scripted("Z", json!({})), Some(9), false),
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

#[tokio::test]
async fn stages_keep_a_plugin_out_of_the_other_stages() {
    let mut post_only = scripted("P", json!({"on_error": "mask"}));
    post_only.stages = Some(vec![Stage::PostRequest]);
    let mut error_only = scripted("E", json!({"on_error": "mask"}));
    error_only.stages = Some(vec![Stage::Error]);
    let gw = TestGateway::with_plugins(vec![
        post_only,
        error_only,
        scripted(
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

    let mut post_only = scripted("P", json!({}));
    post_only.stages = Some(vec![Stage::PostRequest]);
    let gw = TestGateway::with_plugins(vec![post_only, scripted("Q", json!({}))]).await;
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
