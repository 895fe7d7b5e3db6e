//! Named pipelines: several ordered plugin lists with per-pipeline overrides and instances of
//! their own, chosen per request by route, header or virtual key, the default otherwise.

use serde_json::{Value, json};
use wasmgate::config::{PipelineConfig, PipelinePlugin};
use wasmgate_e2e::{TestGateway, chat_body, scripted, trace_of};

async fn gateway() -> TestGateway {
    TestGateway::start_with(|config| {
        let mut only_strict = scripted("S", json!({}));
        only_strict.default_pipeline = false;
        config.plugins = vec![scripted("A", json!({})), only_strict];
        config.pipelines.insert(
            "strict".into(),
            PipelineConfig {
                plugins: vec![
                    PipelinePlugin {
                        name: "S".into(),
                        priority: Some(0),
                        ..PipelinePlugin::default()
                    },
                    PipelinePlugin {
                        name: "A".into(),
                        priority: Some(1),
                        config: Some(json!({"tag": "A-strict"})),
                        ..PipelinePlugin::default()
                    },
                ],
                virtual_keys: vec!["vk-strict".into()],
            },
        );
    })
    .await
}

async fn post(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let resp = gw
        .post(path, chat_body("mock/echo", "hi").to_string(), headers)
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

const STRICT: &str = "S.transport,A-strict.transport,S.pre,A-strict.pre,A-strict.post,S.post";

#[tokio::test]
async fn a_request_runs_the_pipeline_its_route_header_or_virtual_key_names() {
    let gw = gateway().await;
    let (status, body) = post(&gw, "/v1/chat/completions", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        trace_of(&body),
        "A.transport,A.pre,A.post",
        "default pipeline"
    );

    for (path, headers) in [
        ("/pipelines/strict/v1/chat/completions", vec![]),
        (
            "/v1/chat/completions",
            vec![("x-wasmgate-pipeline", "strict")],
        ),
        ("/v1/chat/completions", vec![("x-wasmgate-vk", "vk-strict")]),
        (
            // The route wins over the header.
            "/pipelines/strict/v1/chat/completions",
            vec![("x-wasmgate-pipeline", "default")],
        ),
    ] {
        let (status, body) = post(&gw, path, &headers).await;
        assert_eq!(status, 200, "{path} {headers:?}: {body}");
        assert_eq!(trace_of(&body), STRICT, "{path} {headers:?}");
    }
    let (status, body) = post(
        &gw,
        "/v1/chat/completions",
        &[("x-wasmgate-vk", "vk-other")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        trace_of(&body),
        "A.transport,A.pre,A.post",
        "an unrouted key"
    );

    let (status, body) = post(&gw, "/pipelines/nope/v1/chat/completions", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "pipeline_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no pipeline named `nope`"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn each_pipeline_has_its_own_instances_and_settings() {
    let gw = gateway().await;
    for _ in 0..3 {
        post(&gw, "/pipelines/strict/v1/chat/completions", &[]).await;
    }
    let default_a = gw.plugin_status("A").await;
    let strict_a = gw.plugin_status("A@strict").await;
    assert_eq!(default_a["pipeline"], Value::Null, "{default_a}");
    assert_eq!(strict_a["pipeline"], "strict", "{strict_a}");
    assert_eq!(strict_a["status"], "active");
    // Three requests, each calling transport, pre and post; plus init.
    assert_eq!(strict_a["stats"]["calls"], 10, "{strict_a}");
    assert_eq!(
        default_a["stats"]["calls"], 1,
        "the default pipeline's A only ran init: {default_a}"
    );
    let (_, list) = gw.get("/api/plugins").await;
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["A", "S@strict", "A@strict"],
        "S is in no default chain"
    );
    gw.stop().await;
}

#[test]
fn pipeline_configs_are_validated() {
    for (text, needle) in [
        (
            r#"{"pipelines": {"default": {"plugins": []}}}"#,
            "pipelines.default",
        ),
        (
            r#"{"pipelines": {"p": {"plugins": [{"name": "a"}, {"name": "a"}]}}}"#,
            "pipelines.p.plugins[1].name",
        ),
        (
            r#"{"pipelines": {"p": {"plugins": [], "virtual_keys": ["k"]}, "q": {"plugins": [], "virtual_keys": ["k"]}}}"#,
            "already routed to pipeline `p`",
        ),
        (
            r#"{"pipelines": {"p": {"plugins": [{"name": "a", "fuel": 1}]}}}"#,
            "pipelines.p.plugins[0]",
        ),
    ] {
        let err = format!(
            "{:#}",
            wasmgate::config::Config::parse(text).expect_err(text)
        );
        assert!(err.contains(needle), "{text}: {err}");
    }
}
