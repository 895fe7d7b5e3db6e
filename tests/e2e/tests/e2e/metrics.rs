//! `GET /metrics`: requests by status and target, per plugin and hook counters that agree with
//! `GET /api/plugins`, short-circuits and loads, scraped over HTTP and parsed as Prometheus text.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wasmgate::providers::{MockConfig, ProviderConfig};
use wasmgate_e2e::{TestGateway, chat_body, scripted};

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus text: `name{k="v",...} value` lines; comments skipped.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
                None => (series, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            };
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// `k="v",k2="v\"2"` into a map, undoing the escapes.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} opens with a quote");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {text}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The value of the sample `name` whose labels are exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// The samples of `name` for one plugin.
fn of_plugin<'a>(samples: &'a [Sample], name: &str, plugin: &str) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("plugin").map(String::as_str) == Some(plugin))
        .collect()
}

async fn scrape(gw: &TestGateway, accept: Option<&str>) -> (String, String) {
    let mut req = gw.client.get(gw.url("/metrics"));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = req.send().await.expect("scraped");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (content_type, resp.text().await.expect("body"))
}

#[tokio::test]
async fn metrics_count_requests_and_agree_with_the_admin_api() {
    // `gate` answers requests for `backup` itself (a short-circuit); `crashy` traps on
    // requests for `crash` (fail-closed: a 500); requests for `mock` pass both.
    let gw = TestGateway::start_with(|config| {
        for provider in ["backup", "crash"] {
            config
                .providers
                .insert(provider.into(), ProviderConfig::Mock(MockConfig::default()));
        }
        config.plugins = vec![
            scripted(
                "gate",
                json!({"pre": "respond", "pre_only_provider": "backup"}),
            ),
            scripted(
                "crashy",
                json!({"pre": "trap", "pre_only_provider": "crash"}),
            ),
        ];
    })
    .await;

    for _ in 0..2 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = gw.chat(&chat_body("backup/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "responded by gate"
    );
    let (status, body) = gw.chat(&chat_body("crash/echo", "hi")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("trapped")),
        "{body}"
    );
    let (status, body) = gw.chat(&chat_body("nowhere/echo", "hi")).await;
    assert_eq!(status, 404, "{body}");
    let resp = gw.post("/v1/chat/completions", "{not json", &[]).await;
    assert_eq!(resp.status(), 400);

    // The admin view first, then the scrape: nothing runs in between.
    let (status, admin) = gw.get("/api/plugins").await;
    assert_eq!(status, 200, "{admin}");
    let (content_type, text) = scrape(&gw, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse(&text);

    // Requests by status and the provider and model that served them.
    let requests = |status: &str, provider: &str, model: &str| {
        value(
            &samples,
            "wasmgate_requests_total",
            &[("status", status), ("provider", provider), ("model", model)],
        )
    };
    assert_eq!(requests("200", "mock", "echo"), Some(2.0), "{text}");
    assert_eq!(requests("200", "backup", "echo"), Some(1.0), "{text}");
    assert_eq!(requests("500", "crash", "echo"), Some(1.0), "{text}");
    assert_eq!(
        requests("404", "", ""),
        Some(1.0),
        "unknown targets are no label: {text}"
    );
    assert_eq!(requests("400", "", ""), Some(1.0), "{text}");
    assert_eq!(
        value(
            &samples,
            "wasmgate_request_duration_seconds_count",
            &[("status_class", "2xx"), ("provider", "mock")],
        ),
        Some(2.0),
        "{text}"
    );

    // Per plugin and hook, the same numbers as the admin API.
    for plugin in ["gate", "crashy"] {
        let view = admin["plugins"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == plugin))
            .unwrap_or_else(|| panic!("{plugin} in {admin}"));
        let stats = &view["stats"];
        let by_hook = stats["by_hook"].as_object().expect("by_hook");
        let calls = of_plugin(&samples, "wasmgate_plugin_calls_total", plugin);
        assert!(!calls.is_empty(), "{plugin} has call series: {text}");
        let mut total = 0.0;
        for sample in &calls {
            let hook = &sample.labels["hook"];
            let admin_calls = by_hook
                .get(hook)
                .map_or(0, |h| h["calls"].as_u64().unwrap_or(0));
            assert_eq!(sample.value, admin_calls as f64, "{plugin} {hook}: {view}");
            let labels = [("plugin", plugin), ("hook", hook.as_str())];
            assert_eq!(
                value(
                    &samples,
                    "wasmgate_plugin_call_duration_seconds_count",
                    &labels
                ),
                Some(sample.value),
                "{plugin} {hook}: the histogram counts every call"
            );
            total += sample.value;
        }
        assert_eq!(Some(total), stats["calls"].as_f64(), "{plugin}: {view}");
        for (hook, counters) in by_hook {
            let labels = [("plugin", plugin), ("hook", hook.as_str())];
            assert_eq!(
                value(&samples, "wasmgate_plugin_calls_total", &labels),
                counters["calls"].as_f64(),
                "{plugin} {hook}: every hook of the admin API is a series"
            );
            let failures = counters["failures"].as_object().expect("failures");
            for (kind, n) in failures {
                let labels = [("plugin", plugin), ("hook", hook.as_str()), ("kind", kind)];
                assert_eq!(
                    value(&samples, "wasmgate_plugin_failures_total", &labels),
                    n.as_f64(),
                    "{plugin} {hook} {kind}"
                );
            }
        }
        let failures = of_plugin(&samples, "wasmgate_plugin_failures_total", plugin);
        let failed: f64 = failures.iter().map(|s| s.value).sum();
        let admin_failed: u64 = stats["failures"]
            .as_object()
            .expect("failures")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(failed, admin_failed as f64, "{plugin}: {view}");
        assert_eq!(
            value(
                &samples,
                "wasmgate_plugin_quarantined",
                &[("plugin", plugin)]
            ),
            Some(0.0)
        );
    }
    let pre = |plugin: &'static str, name: &str| {
        value(&samples, name, &[("plugin", plugin), ("hook", "pre-hook")])
    };
    assert_eq!(
        pre("crashy", "wasmgate_plugin_calls_total"),
        Some(3.0),
        "two mock requests and the crash one reached crashy: {text}"
    );
    assert_eq!(
        value(
            &samples,
            "wasmgate_plugin_failures_total",
            &[
                ("plugin", "crashy"),
                ("hook", "pre-hook"),
                ("kind", "plugin_trap")
            ],
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        pre("gate", "wasmgate_plugin_short_circuits_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        pre("crashy", "wasmgate_plugin_short_circuits_total"),
        Some(0.0),
        "a hook failure is a failure, not a short-circuit: {text}"
    );
    let gate = admin["plugins"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "gate"))
        .map(|p| p["stats"]["by_hook"]["pre-hook"]["short_circuits"].clone());
    assert_eq!(gate, Some(json!(1)), "{admin}");
    assert!(
        pre("gate", "wasmgate_plugin_fuel_consumed_total").is_some_and(|fuel| fuel > 0.0),
        "{text}"
    );
    let loaded = value(&samples, "wasmgate_reloads_total", &[("result", "ok")]);
    assert!(loaded.is_some_and(|n| n >= 2.0), "{text}");
    assert_eq!(
        value(&samples, "wasmgate_reloads_total", &[("result", "failed")]),
        Some(0.0)
    );

    // Prometheus asks for OpenMetrics and gets it.
    let (content_type, text) = scrape(
        &gw,
        Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"),
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == r#"wasmgate_requests_total{status="200",provider="mock",model="echo"} 2"#),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_failed_load_is_counted() {
    let gw = TestGateway::start_with(|config| {
        config.plugins = vec![scripted("refuses", json!({"init": "fail"}))];
    })
    .await;
    let (_, text) = scrape(&gw, None).await;
    let samples = parse(&text);
    assert_eq!(
        value(&samples, "wasmgate_reloads_total", &[("result", "failed")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        of_plugin(&samples, "wasmgate_plugin_calls_total", "refuses").is_empty(),
        "a plugin that never loaded has no series: {text}"
    );
    gw.stop().await;
}
