//! The gateway driven by real clients on a real socket: the official `openai` Python package
//! (pinned in `tests/e2e/python/requirements.txt`, installed into a project-local virtualenv
//! under the target directory on first use) runs `tests/e2e/python/sdk_check.py`: a plain
//! completion, a stream read with the SDK's iterator, tool calls through an OpenAI-compatible
//! upstream, errors raised as the SDK's own exception classes, and a fallback to a second
//! provider. And `curl -N` reads a stream as server-sent events. Without Python 3 or curl these
//! tests fail saying what to install: they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde_json::{Value, json};
use wasmgate_e2e::{TestGateway, artifacts, fake_upstream, plugin};

const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// An OpenAI-compatible upstream that calls `get_weather` when offered tools and no tool result
/// came back yet, and answers "from upstream" otherwise; streamed requests get the tool call as
/// server-sent events, its arguments in two pieces, as OpenAI sends them.
async fn tool_upstream() -> std::net::SocketAddr {
    fake_upstream(|Json(req): Json<Value>| async move {
        let messages = req["messages"].as_array().cloned().unwrap_or_default();
        let answered = messages.iter().any(|m| m["role"] == "tool");
        let call = req["tools"].is_array() && !answered;
        if req["stream"] == true {
            return sse(&req, call).into_response();
        }
        let message = if call {
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_abc123", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
        } else {
            json!({"role": "assistant", "content": "from upstream"})
        };
        let finish = if call { "tool_calls" } else { "stop" };
        Json(json!({
            "id": "chatcmpl-up", "object": "chat.completion", "created": 1_700_000_000,
            "model": req["model"], "system_fingerprint": "fp_up",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
        }))
        .into_response()
    })
    .await
}

/// The streamed answer: a tool call in pieces, or text.
fn sse(req: &Value, call: bool) -> axum::response::Response {
    let event = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": req["model"], "choices": choices, "usage": usage})
    };
    let mut events = if call {
        vec![
            event(
                json!([{"index": 0, "finish_reason": null, "delta": {"role": "assistant", "content": null,
                    "tool_calls": [{"index": 0, "id": "call_abc123", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}}]),
                Value::Null,
            ),
            event(
                json!([{"index": 0, "finish_reason": null, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": "{\"city\":"}}]}}]),
                Value::Null,
            ),
            event(
                json!([{"index": 0, "finish_reason": null, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": "\"Paris\"}"}}]}}]),
                Value::Null,
            ),
            event(
                json!([{"index": 0, "finish_reason": "tool_calls", "delta": {}}]),
                Value::Null,
            ),
        ]
    } else {
        vec![
            event(
                json!([{"index": 0, "finish_reason": null, "delta": {"role": "assistant", "content": "from "}}]),
                Value::Null,
            ),
            event(
                json!([{"index": 0, "finish_reason": "stop", "delta": {"content": "upstream"}}]),
                Value::Null,
            ),
        ]
    };
    events.push(event(
        json!([]),
        json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}),
    ));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}

/// An upstream that is always overloaded.
async fn down_upstream() -> std::net::SocketAddr {
    fake_upstream(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"message": "overloaded", "type": "server_error", "code": null}})),
        )
    })
    .await
}

async fn gateway() -> TestGateway {
    let up = tool_upstream().await;
    let down = down_upstream().await;
    TestGateway::start_with(|config| {
        for (name, addr) in [("up", up), ("down", down)] {
            config.providers.insert(
                name.into(),
                serde_json::from_value(json!({
                    "type": "openai",
                    "base_url": format!("http://{addr}/v1"),
                    "retries": {"max": 0},
                }))
                .expect("provider config"),
            );
        }
        config.plugins = vec![plugin("auth", artifacts::AUTH, json!({"keys": ["sk-e2e"]}))];
    })
    .await
}

/// The virtualenv with the pinned SDK, created (once per target directory) if missing.
fn venv() -> PathBuf {
    let requirements = Path::new(PYTHON_DIR).join("requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let version = pinned
        .lines()
        .find_map(|l| l.trim().strip_prefix("openai=="))
        .expect("openai is pinned in requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("openai-venv-{version}"));
    let python = venv.join("bin").join("python");
    let marker = venv.join("installed");
    if marker.exists() {
        return python;
    }
    let found = Command::new("python3").arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "python3 is required for the OpenAI SDK tests and was not found ({found:?}); install \
         Python 3 with its venv module (Debian: apt-get install python3 python3-venv)"
    );
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("running python3 -m venv");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("running pip");
    assert!(
        status.success(),
        "pip could not install {} into {}: is PyPI reachable?",
        requirements.display(),
        venv.display()
    );
    std::fs::write(&marker, version).expect("writing the venv marker");
    python
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_against_the_gateway() {
    let python = tokio::task::spawn_blocking(venv).await.expect("venv setup");
    let gw = gateway().await;
    let base = gw.url("/v1");
    let script = Path::new(PYTHON_DIR).join("sdk_check.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&base)
        .output()
        .await
        .expect("running the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.trim_end().ends_with("ok: 18 checks"), "{stdout}");
    gw.stop().await;
}

#[tokio::test]
async fn curl_reads_a_stream_as_server_sent_events() {
    let gw = gateway().await;
    let body = json!({"model": "mock/echo", "stream": true,
                      "messages": [{"role": "user", "content": "stream to curl"}]});
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--fail-with-body",
            "-H",
            "authorization: Bearer sk-e2e",
        ])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(body.to_string())
        .arg(gw.url("/v1/chat/completions"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl is required for this test ({e}); install curl"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {text}");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let content: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("each event is JSON"))
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "echo: stream to curl");
    assert!(events.len() >= 3, "not streamed: {text}");
    gw.stop().await;
}

#[tokio::test]
async fn tool_call_deltas_pass_through_a_plugin_that_edits_chunks() {
    let up = tool_upstream().await;
    let gw = TestGateway::start_with(|config| {
        config.providers.insert(
            "up".into(),
            serde_json::from_value(
                json!({"type": "openai", "base_url": format!("http://{up}/v1")}),
            )
            .expect("provider config"),
        );
        config.plugins = vec![wasmgate_e2e::scripted("A", json!({"chunk": "upper"}))];
    })
    .await;
    let body = json!({"model": "up/gpt-4o-mini", "stream": true,
                      "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let resp = gw.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("the stream");
    let deltas: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["choices"][0].get("delta").cloned())
        .collect();
    let arguments: String = deltas
        .iter()
        .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"city\":\"Paris\"}", "{text}");
    assert!(
        deltas
            .iter()
            .any(|d| d["tool_calls"][0]["function"]["name"] == "get_weather"),
        "{text}"
    );
    gw.stop().await;
}
