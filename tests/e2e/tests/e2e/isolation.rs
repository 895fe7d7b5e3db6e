//! Instance isolation: pooled instances are reused, so what one request leaves in a plugin's
//! memory the next can see; under `"isolation": "per-request"` every request runs on an
//! instance that never served another, and nothing crosses over.

use serde_json::{Value, json};
use wasmgate::runtime::Isolation;
use wasmgate_e2e::{TestGateway, artifacts, chat_body, plugin};

async fn gateway(isolation: Isolation) -> TestGateway {
    let mut remember = plugin("remember", artifacts::REMEMBER, json!({}));
    remember.isolation = isolation;
    TestGateway::with_plugins(vec![remember]).await
}

async fn previous_prompt(gw: &TestGateway, prompt: &str) -> Value {
    let (status, body) = gw.chat(&chat_body("mock/echo", prompt)).await;
    assert_eq!(status, 200, "{body}");
    body["previous_prompt"].clone()
}

#[tokio::test]
async fn a_pooled_instance_carries_memory_from_one_request_to_the_next() {
    // The control: the plugin really does leak through its memory when instances are reused.
    let gw = gateway(Isolation::Pooled).await;
    assert_eq!(previous_prompt(&gw, "first secret").await, Value::Null);
    assert_eq!(previous_prompt(&gw, "second").await, json!("first secret"));
    let status = gw.plugin_status("remember").await;
    assert_eq!(status["isolation"], "pooled");
    assert_eq!(status["stats"]["instances_created"], 1, "{status}");
    gw.stop().await;
}

#[tokio::test]
async fn per_request_instances_never_see_an_earlier_request() {
    let gw = gateway(Isolation::PerRequest).await;
    for i in 0..6 {
        assert_eq!(
            previous_prompt(&gw, &format!("secret {i}")).await,
            Value::Null,
            "request {i} ran on an instance that had served another"
        );
    }
    // Concurrent requests too: each gets its own never-used instance.
    let gw_ref = &gw;
    let answers = futures::future::join_all(
        (0..8).map(|i| async move { previous_prompt(gw_ref, &format!("parallel {i}")).await }),
    );
    for answer in answers.await {
        assert_eq!(answer, Value::Null);
    }
    let status = gw.plugin_status("remember").await;
    assert_eq!(status["isolation"], "per-request");
    assert_eq!(status["status"], "active");
    // Fourteen requests ran on fourteen distinct instances (more may wait, created ahead).
    let created = status["stats"]["instances_created"].as_u64().unwrap_or(0);
    assert!(
        created >= 14,
        "only {created} instances for 14 requests: {status}"
    );
    gw.stop().await;
}
