//! The catalogue's limit plugins end to end: `rate-limit` and `governance` as users configure
//! them, on a gateway with two mock providers (`mock` and `backup`).
//!
//! Rate-limit windows are 30 days long (aligned to the Unix epoch), so a test crossing a window
//! boundary is vanishingly unlikely; the window arithmetic itself is unit-tested in the crate.
//! Governance budgets here never reset.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use wasmgate::config::PluginConfig;
use wasmgate::providers::{MockConfig, ProviderConfig};
use wasmgate_e2e::{TestGateway, artifacts, chat_body, content_of, plugin};

const MONTH: u64 = 30 * 86_400;

/// A gateway with a second mock provider `backup` and `plugins`.
async fn gateway(plugins: Vec<PluginConfig>) -> TestGateway {
    TestGateway::start_with(|config| {
        config
            .providers
            .insert("backup".into(), ProviderConfig::Mock(MockConfig::default()));
        config.plugins = plugins;
    })
    .await
}

/// A `rate-limit` plugin with `rules`.
fn rate_limit(rules: Value) -> PluginConfig {
    plugin(
        "rate-limit",
        artifacts::RATE_LIMIT,
        json!({ "rules": rules }),
    )
}

/// POSTs a chat body with `headers`; returns the status, the response headers and the JSON body.
async fn chat_raw(
    gw: &TestGateway,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Value) {
    let resp = gw
        .post("/v1/chat/completions", body.to_string(), headers)
        .await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.expect("JSON body"))
}

/// The value of header `name`, or "" when absent.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `usage.<field>` of a chat completion body.
fn usage(body: &Value, field: &str) -> u64 {
    body["usage"][field].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn rate_limit_admits_n_requests_per_key_then_fails_with_429_and_retry_after() {
    let gw = gateway(vec![rate_limit(json!([
        {"name": "per-key", "key": "header:x-api-key", "requests": 3, "window_seconds": MONTH}
    ]))])
    .await;
    let body = chat_body("mock/echo", "hi");
    let key_a = [("x-api-key", "key-a")];
    for remaining in [2, 1, 0] {
        let (status, _, resp) = chat_raw(&gw, &body, &key_a).await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(content_of(&resp), "echo: hi");
        let report = &resp["x_wasmgate_ratelimit"]["per-key"];
        assert_eq!(report["limit_requests"], 3, "{resp}");
        assert_eq!(report["remaining_requests"], remaining, "{resp}");
        assert!(
            report["reset_seconds"]
                .as_u64()
                .is_some_and(|s| (1..=MONTH).contains(&s))
        );
    }

    let (status, headers, resp) = chat_raw(&gw, &body, &key_a).await;
    assert_eq!(status, 429, "{resp}");
    assert_eq!(resp["error"]["type"], "rate_limit_error", "{resp}");
    assert_eq!(resp["error"]["code"], "rate_limit_exceeded", "{resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rule `per-key` allows 3 requests"),
        "{message}"
    );
    assert!(
        !message.contains("key-a"),
        "the key is never echoed: {message}"
    );
    let retry_after: u64 = header(&headers, "retry-after").parse().unwrap_or(0);
    assert!(
        (1..=MONTH).contains(&retry_after),
        "retry-after: {headers:?}"
    );
    assert_eq!(header(&headers, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(
        header(&headers, "x-ratelimit-reset-requests"),
        format!("{retry_after}s")
    );

    let (status, _, resp) = chat_raw(&gw, &body, &[("x-api-key", "key-b")]).await;
    assert_eq!(status, 200, "another key has its own bucket: {resp}");
    assert_eq!(
        resp["x_wasmgate_ratelimit"]["per-key"]["remaining_requests"],
        2
    );
    let (status, _, resp) = chat_raw(&gw, &body, &[]).await;
    assert_eq!(
        status, 200,
        "requests without the header share the anonymous bucket: {resp}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_rate_limited_provider_falls_back_to_another_target() {
    let gw = gateway(vec![rate_limit(json!([
        {"key": "provider", "requests": 1, "window_seconds": MONTH}
    ]))])
    .await;
    let (status, resp) = gw.chat(&chat_body("mock/echo", "one")).await;
    assert_eq!(status, 200, "{resp}");

    let mut req = chat_body("mock/echo", "two");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, resp) = gw.chat(&req).await;
    assert_eq!(
        status, 200,
        "the 429 allows fallbacks and `backup` is another bucket: {resp}"
    );
    assert_eq!(content_of(&resp), "echo: two");
    assert_eq!(
        resp["x_wasmgate_ratelimit"]["provider"]["remaining_requests"], 0,
        "the fallback attempt went through the pre-hooks again and was counted for backup: {resp}"
    );

    let (status, resp) = gw.chat(&chat_body("mock/echo", "three")).await;
    assert_eq!(
        status, 429,
        "without fallbacks the client gets the 429: {resp}"
    );
    let (status, resp) = gw.chat(&chat_body("backup/echo", "four")).await;
    assert_eq!(
        status, 429,
        "backup's one request went to the fallback: {resp}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn rate_limit_tokens_are_charged_from_usage_and_limit_later_requests() {
    let gw = gateway(vec![rate_limit(json!([
        {"name": "tokens", "key": "virtual-key", "tokens": 10, "window_seconds": MONTH}
    ]))])
    .await;
    let body = chat_body("mock/echo", "hi");
    let vk1 = [("x-wasmgate-vk", "vk-1")];

    let (status, _, first) = chat_raw(&gw, &body, &vk1).await;
    assert_eq!(status, 200, "{first}");
    let per_request = usage(&first, "total_tokens");
    assert!(
        (5..10).contains(&per_request),
        "the test needs a request to use 5 to 9 tokens, so that two use up 10: {first}"
    );
    assert_eq!(
        first["x_wasmgate_ratelimit"]["tokens"]["remaining_tokens"],
        10 - per_request,
        "{first}"
    );

    let (status, _, second) = chat_raw(&gw, &body, &vk1).await;
    assert_eq!(
        status, 200,
        "admitted: tokens used so far are under the limit: {second}"
    );
    assert_eq!(
        second["x_wasmgate_ratelimit"]["tokens"]["remaining_tokens"], 0,
        "{second}"
    );

    let (status, headers, resp) = chat_raw(&gw, &body, &vk1).await;
    assert_eq!(status, 429, "{resp}");
    assert_eq!(resp["error"]["type"], "rate_limit_error");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "allows 10 tokens per 2592000 seconds and {} have been used",
            2 * per_request
        )),
        "{message}"
    );
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), "10");
    assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), "0");
    assert!(!header(&headers, "retry-after").is_empty(), "{headers:?}");

    let (status, _, resp) = chat_raw(&gw, &body, &[("x-wasmgate-vk", "vk-2")]).await;
    assert_eq!(
        status, 200,
        "another virtual key has its own budget: {resp}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn rate_limit_can_require_its_key_source() {
    let gw = gateway(vec![rate_limit(json!([
        {"key": ["virtual-key", "model"], "requests": 5, "missing": "reject", "window_seconds": MONTH}
    ]))])
    .await;
    let mut req = chat_body("mock/echo", "hi");
    req["fallbacks"] = json!(["backup/echo"]);
    let (status, resp) = gw.chat(&req).await;
    assert_eq!(status, 400, "no fallbacks for a client error: {resp}");
    assert_eq!(resp["error"]["type"], "invalid_request_error");
    assert_eq!(resp["error"]["code"], "missing_rate_limit_key");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`x-wasmgate-vk` header"), "{message}");

    let (status, resp) = gw
        .chat_with_headers(&req, &[("x-wasmgate-vk", "vk-1")])
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["x_wasmgate_ratelimit"]["virtual-key+model"]["remaining_requests"], 4,
        "{resp}"
    );
    gw.stop().await;
}

/// A `governance` plugin: team-a and team-b with the same spend budget, a token-only key, and
/// `mock/echo` priced at $1 per 1K prompt tokens and $2 per 1K completion tokens.
fn governance() -> PluginConfig {
    plugin(
        "governance",
        artifacts::GOVERNANCE,
        json!({
            "keys": {
                "vk-team-a": {"name": "team-a", "max_spend_micros": 20_000},
                "vk-team-b": {"max_spend_micros": 20_000},
                "vk-tokens": {"max_tokens": 10},
            },
            "prices": {
                "mock/echo": {"prompt_per_1k_micros": 1_000_000, "completion_per_1k_micros": 2_000_000},
            },
        }),
    )
}

/// The cost of a response at the prices of [`governance`], in micro-dollars.
fn cost_micros(body: &Value) -> u64 {
    usage(body, "prompt_tokens") * 1000 + usage(body, "completion_tokens") * 2000
}

#[tokio::test]
async fn governance_accumulates_spend_and_refuses_an_exhausted_key_with_402() {
    let gw = gateway(vec![governance()]).await;
    let team_a = [("x-wasmgate-vk", "vk-team-a")];
    let mut req = chat_body("mock/echo", "hi");
    req["fallbacks"] = json!(["backup/echo"]);

    let mut spent = 0;
    let mut served = 0;
    while spent < 20_000 {
        let (status, resp) = gw.chat_with_headers(&req, &team_a).await;
        assert_eq!(status, 200, "{spent} of 20000 micros spent: {resp}");
        let cost = cost_micros(&resp);
        assert!(cost > 0, "{resp}");
        spent += cost;
        served += 1;
        let report = &resp["x_wasmgate_budget"];
        assert_eq!(report["name"], "team-a", "{resp}");
        assert_eq!(report["cost_micros"], json!(cost as f64), "{resp}");
        assert_eq!(
            report["spend_micros"],
            json!(spent as f64),
            "accumulates: {resp}"
        );
        assert_eq!(report["max_spend_micros"], 20_000);
        assert!(
            report.get("reset_seconds").is_none(),
            "never resets: {resp}"
        );
        assert!(served < 20, "a request must cost something");
    }
    assert!(served >= 2, "the budget lasts more than one request");

    let (status, resp) = gw.chat_with_headers(&req, &team_a).await;
    assert_eq!(
        status, 402,
        "over budget, and no fallback although one is listed: {resp}"
    );
    assert_eq!(resp["error"]["type"], "insufficient_quota");
    assert_eq!(resp["error"]["code"], "budget_exceeded");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    let spent_dollars = format!("${}.{:06}", spent / 1_000_000, spent % 1_000_000);
    assert!(
        message.contains(&format!(
            "virtual key `team-a` has spent {spent_dollars} of its $0.020000"
        )),
        "{message}"
    );
    assert!(
        !message.contains("vk-team-a"),
        "the key is never echoed: {message}"
    );

    let (status, resp) = gw
        .chat_with_headers(&req, &[("x-wasmgate-vk", "vk-team-b")])
        .await;
    assert_eq!(status, 200, "team-b has its own budget: {resp}");
    assert_eq!(
        resp["x_wasmgate_budget"]["spend_micros"],
        json!(cost_micros(&resp) as f64)
    );
    gw.stop().await;
}

#[tokio::test]
async fn governance_refuses_missing_and_unknown_keys_with_401() {
    let gw = gateway(vec![governance()]).await;
    let mut req = chat_body("mock/echo", "hi");
    req["fallbacks"] = json!(["backup/echo"]);

    let (status, resp) = gw.chat(&req).await;
    assert_eq!(status, 401, "{resp}");
    assert_eq!(resp["error"]["type"], "authentication_error");
    assert_eq!(resp["error"]["code"], "missing_virtual_key");

    let (status, resp) = gw
        .chat_with_headers(&req, &[("x-wasmgate-vk", "vk-stolen")])
        .await;
    assert_eq!(status, 401, "{resp}");
    assert_eq!(resp["error"]["code"], "invalid_virtual_key");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("vk-stolen"),
        "the key is never echoed: {message}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn governance_token_budgets_and_unpriced_models() {
    let gw = gateway(vec![governance()]).await;
    let tokens = [("x-wasmgate-vk", "vk-tokens")];
    let body = chat_body("mock/echo", "hi");
    let mut used = 0;
    while used < 10 {
        let (status, resp) = gw.chat_with_headers(&body, &tokens).await;
        assert_eq!(status, 200, "{used} of 10 tokens used: {resp}");
        used += usage(&resp, "total_tokens");
        assert_eq!(resp["x_wasmgate_budget"]["tokens_used"], used, "{resp}");
        assert_eq!(resp["x_wasmgate_budget"]["max_tokens"], 10, "{resp}");
    }
    let (status, resp) = gw.chat_with_headers(&body, &tokens).await;
    assert_eq!(status, 402, "{resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "this virtual key has used {used} of its 10 tokens"
        )),
        "{message}"
    );

    // A key with a spend budget may not use a model without a price; the 400 allows fallbacks.
    let team_b = [("x-wasmgate-vk", "vk-team-b")];
    let mut req = chat_body("mock/slow-1", "hi");
    let (status, resp) = gw.chat_with_headers(&req, &team_b).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["error"]["code"], "model_not_priced");
    req["fallbacks"] = json!(["mock/echo"]);
    let (status, resp) = gw.chat_with_headers(&req, &team_b).await;
    assert_eq!(status, 200, "fell back to a priced model: {resp}");
    assert_eq!(
        resp["x_wasmgate_budget"]["cost_micros"],
        json!(cost_micros(&resp) as f64)
    );
    gw.stop().await;
}

#[tokio::test]
async fn governance_does_not_charge_answers_from_a_later_cache() {
    let gw = gateway(vec![
        governance(),
        plugin("cache", artifacts::CACHE, json!({"ttl_seconds": 60})),
    ])
    .await;
    let team_a = [("x-wasmgate-vk", "vk-team-a")];
    let body = chat_body("mock/echo", "cache me");
    let (status, first) = gw.chat_with_headers(&body, &team_a).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["x_wasmgate_cache"], "miss");
    let cost = cost_micros(&first) as f64;
    assert_eq!(first["x_wasmgate_budget"]["spend_micros"], json!(cost));

    let (status, second) = gw.chat_with_headers(&body, &team_a).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["x_wasmgate_cache"], "hit");
    assert_eq!(
        second["x_wasmgate_budget"]["cost_micros"],
        json!(0.0),
        "no provider was paid: {second}"
    );
    assert_eq!(second["x_wasmgate_budget"]["spend_micros"], json!(cost));
    gw.stop().await;
}

#[tokio::test]
async fn limit_plugins_reject_invalid_configs_and_name_the_field() {
    let gw = TestGateway::with_plugins(vec![
        rate_limit(json!([{"key": "header:x-api-key", "requests": 0}])),
        plugin(
            "governance",
            artifacts::GOVERNANCE,
            json!({"keys": {"vk-a": {"max_spend_micros": 10}}, "period_seconds": 86400}),
        ),
    ])
    .await;
    for (name, field) in [
        ("rate-limit", "rules[0].requests"),
        ("governance", "prices"),
    ] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains(field), "{name}: names `{field}`: {error}");
    }
    let (status, body) = gw.chat(&chat_body("mock/echo", "still served")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}
