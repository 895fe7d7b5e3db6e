//! Loading plugins: every `*.wasm` of the plugins directory is loaded, config entries supply
//! settings by name, and a broken file or a failing `init` is reported without stopping the
//! gateway or the other plugins.

use serde_json::json;
use wasmgate::config::PluginConfig;
use wasmgate_e2e::{TestGateway, artifacts, chat_body, scripted};

#[tokio::test]
async fn broken_files_are_reported_and_everything_else_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    let hello = std::fs::read(artifacts::HELLO_WORLD).expect("hello-world built");
    std::fs::write(plugins.join("good.wasm"), &hello).expect("write");
    std::fs::write(plugins.join("text.wasm"), "this is not wasm").expect("write");
    std::fs::write(plugins.join("empty.wasm"), "").expect("write");
    std::fs::write(plugins.join("core.wasm"), b"\0asm\x01\0\0\0").expect("write");
    std::fs::write(plugins.join("truncated.wasm"), &hello[..hello.len() / 2]).expect("write");
    std::fs::write(plugins.join("notes.txt"), "ignored: not .wasm").expect("write");
    std::fs::copy(artifacts::WRONG_WORLD, plugins.join("other.wasm")).expect("copy");
    let mut huge = b"\0asm\x0d\0\x01\0".to_vec();
    huge.resize(40 << 20, 0);
    std::fs::write(plugins.join("huge.wasm"), &huge).expect("write");

    let mut config = wasmgate_e2e::base_config(dir.path());
    config.plugins = vec![PluginConfig {
        config: json!({"greeting": "configured by name"}),
        ..PluginConfig::named("good")
    }];
    let gw = TestGateway::start(config, dir).await;

    let (status, list) = gw.get("/api/plugins").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "good",
            "core",
            "empty",
            "huge",
            "other",
            "text",
            "truncated"
        ],
        "config entries first, then files by name"
    );

    let good = gw.plugin_status("good").await;
    assert_eq!(good["status"], "active", "{good}");
    assert_eq!(good["sha256"].as_str().map(str::len), Some(64));
    for (name, needle) in [
        ("text", "not a WebAssembly file"),
        ("empty", "empty"),
        ("core", "core WebAssembly module, not a component"),
        ("truncated", "invalid WebAssembly component"),
        ("huge", "over runtime.max_component_bytes"),
        (
            "other",
            "does not export the wasmgate:plugin@0.7.0 `plugin` world",
        ),
    ] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{name}: {error}");
    }
    let (status, health) = gw.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["plugins"],
        json!({"active": 1, "failed": 6, "disabled": 0, "loading": 0})
    );
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn failing_init_and_disabled_plugins_are_left_out_of_the_chain() {
    let mut disabled = scripted("off", json!({"pre": "fail"}));
    disabled.enabled = false;
    let gw = TestGateway::with_plugins(vec![
        scripted("broken", json!({"init": "fail"})),
        scripted("trapping", json!({"init": "trap"})),
        scripted("unknown-action", json!({"pre": "dance"})),
        disabled,
        scripted("ok", json!({})),
    ])
    .await;
    for name in ["broken", "trapping", "unknown-action"] {
        let status = gw.plugin_status(name).await;
        assert_eq!(status["status"], "failed", "{status}");
    }
    let unknown = gw.plugin_status("unknown-action").await;
    assert!(
        unknown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("pre"),
        "init names the bad field: {unknown}"
    );
    assert_eq!(gw.plugin_status("off").await["status"], "disabled");
    let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trace"], "ok.transport,ok.pre,ok.post");
    gw.stop().await;
}
