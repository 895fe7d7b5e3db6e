//! Instance isolation: pooled instances are reused, so what one request leaves in a plugin's
//! memory the next can see; under `"isolation": "per-request"` every request runs on an
//! instance that never served another, and nothing crosses over; under `"isolation": "shared"`
//! an instance is taken for one hook call only, so requests in flight share a few instances;
//! and a plugin that declares it keeps no request state in its memory is shared unless its
//! config says otherwise.

use serde_json::{Value, json};
use wasmgate::runtime::Isolation;
use wasmgate_e2e::{TestGateway, artifacts, chat_body, plugin, scripted, trace_of};

async fn gateway(isolation: Isolation) -> TestGateway {
    let mut remember = plugin("remember", artifacts::REMEMBER, json!({}));
    remember.isolation = Some(isolation);
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
    assert_eq!(
        status["preinitialized"], false,
        "pooled instances each run init"
    );
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
    assert_eq!(
        status["preinitialized"], true,
        "fresh instances start from the snapshot taken after init: {status}"
    );
    assert_eq!(status["status"], "active");
    // Fourteen requests ran on fourteen distinct instances (more may wait, created ahead).
    let created = status["stats"]["instances_created"].as_u64().unwrap_or(0);
    assert!(
        created >= 14,
        "only {created} instances for 14 requests: {status}"
    );
    gw.stop().await;
}

/// Plugins `A` and `B` (scripted) with `isolation`. Sends 16 requests that each wait 1.5 s at
/// the provider, one after the other's pre-hooks ran (so no two hook calls overlap), and
/// returns, per plugin, its busy instances while all 16 are at the provider and the instances
/// it created in all.
async fn instances_for_sixteen_in_flight(isolation: Isolation) -> Vec<(String, u64, u64)> {
    let gw = TestGateway::start_with(|config| {
        config.plugins = ["A", "B"]
            .into_iter()
            .map(|name| {
                let mut p = scripted(name, json!({}));
                p.isolation = Some(isolation);
                p
            })
            .collect();
    })
    .await;
    let pre_hooks_run = async |name: &str| {
        gw.plugin_status(name).await["stats"]["by_hook"]["pre-hook"]["calls"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut requests = Vec::new();
    for i in 0..16u64 {
        let gw_ref = &gw;
        let mut request = Box::pin(async move {
            gw_ref
                .chat(&chat_body("mock/slow-1500", &format!("request {i}")))
                .await
        });
        // Drive it until both pre-hooks ran: it is at the provider.
        loop {
            tokio::select! {
                (status, body) = &mut request => panic!("answered early: {status} {body}"),
                () = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
            }
            if pre_hooks_run("B").await == i + 1 {
                break;
            }
        }
        requests.push(request);
    }
    let mut busy_in_flight = Vec::new();
    for name in ["A", "B"] {
        assert_eq!(pre_hooks_run(name).await, 16);
        let status = gw.plugin_status(name).await;
        busy_in_flight.push(status["busy_instances"].as_u64().unwrap_or(u64::MAX));
    }
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        // Every hook ran, in order, whichever instance each call got.
        assert_eq!(
            trace_of(&body),
            "A.transport,B.transport,A.pre,B.pre,B.post,A.post"
        );
    }
    let mut seen = Vec::new();
    for (name, busy) in ["A", "B"].into_iter().zip(busy_in_flight) {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["status"], "active", "{status}");
        assert_eq!(status["busy_instances"], 0, "all given back: {status}");
        let mode = serde_json::to_value(isolation).expect("serialisable");
        assert_eq!(status["isolation"], mode, "{status}");
        let created = status["stats"]["instances_created"].as_u64().unwrap_or(0);
        seen.push((name.to_string(), busy, created));
    }
    gw.stop().await;
    seen
}

#[tokio::test]
async fn shared_instances_are_held_for_a_call_not_for_a_request() {
    // Pooled: every request in flight holds an instance of each plugin from its first hook
    // to its last, so sixteen at the provider hold sixteen.
    for (name, busy, created) in instances_for_sixteen_in_flight(Isolation::Pooled).await {
        assert_eq!(busy, 16, "pooled {name}");
        assert!(created >= 16, "pooled {name}: {created} instances");
    }
    // Shared: an instance is out only while a hook runs, so requests waiting at the provider
    // hold none, and calls that never overlapped needed far fewer than sixteen (the sixteen
    // post-hooks come back together and may overlap).
    for (name, busy, created) in instances_for_sixteen_in_flight(Isolation::Shared).await {
        assert_eq!(busy, 0, "shared {name}");
        assert!(created < 16, "shared {name}: {created} instances");
    }
}

#[tokio::test]
async fn a_shared_instance_carries_memory_between_requests() {
    // Sharing is pooling at the grain of a call: what a call leaves in memory, the next call
    // on that instance sees, whichever request it belongs to.
    let gw = gateway(Isolation::Shared).await;
    assert_eq!(previous_prompt(&gw, "first").await, Value::Null);
    assert_eq!(previous_prompt(&gw, "second").await, json!("first"));
    assert_eq!(gw.plugin_status("remember").await["isolation"], "shared");
    gw.stop().await;
}

#[tokio::test]
async fn a_plugin_that_declares_shared_instances_gets_them_unless_its_config_says_otherwise() {
    // hello-world sets the `shared-instances` flag of its `hooks` export; remember, which
    // keeps the last prompt in its memory, does not. Neither config sets `isolation`.
    let gw = TestGateway::with_plugins(vec![
        plugin("hello-world", artifacts::HELLO_WORLD, json!({})),
        plugin("remember", artifacts::REMEMBER, json!({})),
    ])
    .await;
    assert_eq!(gw.plugin_status("hello-world").await["isolation"], "shared");
    assert_eq!(gw.plugin_status("remember").await["isolation"], "pooled");
    // Not only reported: with eight requests waiting at the provider, each holds an instance
    // of remember (pooled: all of a request's hooks on one instance) and none of hello-world.
    let gw_ref = &gw;
    let mut requests: Vec<_> = (0..8)
        .map(|i| {
            Box::pin(async move {
                gw_ref
                    .chat(&chat_body("mock/slow-2000", &format!("request {i}")))
                    .await
            })
        })
        .collect();
    loop {
        let remember = gw.plugin_status("remember").await;
        if remember["stats"]["by_hook"]["pre-hook"]["calls"] == 8 {
            break;
        }
        // Drive the requests a little, so they reach the provider.
        let step = futures::future::select_all(requests.iter_mut());
        tokio::select! {
            ((status, body), _, _) = step => panic!("answered early: {status} {body}"),
            () = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
        }
    }
    assert_eq!(gw.plugin_status("remember").await["busy_instances"], 8);
    assert_eq!(gw.plugin_status("hello-world").await["busy_instances"], 0);
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    gw.stop().await;

    // The config's `isolation` wins over the declaration.
    let mut forced = plugin("hello-world", artifacts::HELLO_WORLD, json!({}));
    forced.isolation = Some(Isolation::Pooled);
    let gw = TestGateway::with_plugins(vec![forced]).await;
    assert_eq!(gw.plugin_status("hello-world").await["isolation"], "pooled");
    gw.stop().await;
}

/// Three plugins on a runtime that allows `max_instances` instances, with `timeout_ms` limits.
async fn small_runtime(max_instances: u32, timeout_ms: u64) -> TestGateway {
    TestGateway::start_with(|config| {
        config.runtime.max_instances = max_instances;
        config.plugins = ["A", "B", "C"]
            .into_iter()
            .map(|name| {
                let mut p = scripted(name, json!({}));
                p.limits.timeout_ms = Some(timeout_ms);
                p
            })
            .collect();
    })
    .await
}

#[tokio::test]
async fn requests_beyond_the_instance_budget_queue_instead_of_failing() {
    // Room for two requests' chains at a time; twelve at once must all be served, none of the
    // plugins quarantined.
    let gw = small_runtime(6, 5_000).await;
    let gw_ref = &gw;
    let answers = futures::future::join_all((0..12).map(|i| async move {
        gw_ref
            .chat(&chat_body("mock/slow-30", &format!("request {i}")))
            .await
    }));
    for (status, body) in answers.await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            trace_of(&body),
            "A.transport,B.transport,C.transport,A.pre,B.pre,C.pre,C.post,B.post,A.post"
        );
    }
    for name in ["A", "B", "C"] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["quarantine"]["quarantined"], false, "{status}");
        let created = status["stats"]["instances_created"].as_u64().unwrap_or(0);
        assert!(created <= 6, "{name}: {created} instances, over the budget");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_request_that_cannot_get_an_instance_in_time_is_told_to_retry() {
    // One chain fits; the first request holds it for a second at the provider, the second
    // waits for its plugins' 300 ms and is refused with a 503 naming the limit.
    let gw = small_runtime(3, 300).await;
    let hold = chat_body("mock/slow-1500", "hold the instances");
    let holder = gw.chat(&hold);
    let refused = async {
        // Wait until the holder has its three instances out.
        loop {
            let busy = gw.plugin_status("C").await["busy_instances"].as_u64();
            if busy == Some(1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let resp = gw
            .post(
                "/v1/chat/completions",
                chat_body("mock/echo", "no room").to_string(),
                &[],
            )
            .await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.expect("a JSON error");
        (status, headers, body)
    };
    let ((held_status, held), (status, headers, body)) = tokio::join!(holder, refused);
    assert_eq!(held_status, 200, "{held}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "plugin_capacity_exhausted", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("runtime.max_instances"), "{message}");
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    // Not the plugins' fault: none is quarantined, and the next request is served.
    for name in ["A", "B", "C"] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["quarantine"]["quarantined"], false, "{status}");
    }
    let (status, body) = gw.chat(&chat_body("mock/echo", "room again")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}
