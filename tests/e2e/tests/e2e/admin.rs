//! The admin API's mutations: token checks, uploads (raw and multipart), settings changes that
//! are validated before they are persisted, reloads and deletes, and their limits.

use serde_json::{Value, json};
use wasmgate::reload::ConfigSource;
use wasmgate_e2e::{TestGateway, artifacts, chat_body};

const TOKEN: &str = "s3cret-admin-token";

/// A gateway from a config file in a temp dir, with `plugins` configured and the admin token set.
async fn managed(plugins: Value, extra: Value) -> TestGateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("mkdir");
    let mut config = json!({"plugins_dir": "plugins", "cache_dir": "cache", "admin_token": TOKEN, "plugins": plugins});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let path = dir.path().join("gateway.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let source = ConfigSource {
        file: Some(path),
        ..ConfigSource::default()
    };
    TestGateway::start_watching(source, dir).await
}

async fn send(gw: &TestGateway, req: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = gw;
    let resp = req.send().await.expect("sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn upload(gw: &TestGateway, name: &str, bytes: Vec<u8>) -> reqwest::RequestBuilder {
    gw.client
        .post(gw.url(&format!("/api/plugins?name={name}")))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(bytes)
}

fn config_on_disk(gw: &TestGateway) -> Value {
    let text = std::fs::read_to_string(gw.dir.path().join("gateway.json")).expect("config");
    serde_json::from_str(&text).expect("config is JSON")
}

#[tokio::test]
async fn mutations_are_off_without_a_token_and_need_the_right_one() {
    let gw = TestGateway::with_plugins(vec![]).await;
    let (status, body) = send(&gw, gw.client.delete(gw.url("/api/plugins/x"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "admin_disabled");
    gw.stop().await;

    let gw = managed(json!([]), json!({})).await;
    let hello = std::fs::read(artifacts::HELLO_WORLD).expect("built");
    let no_token = gw
        .client
        .post(gw.url("/api/plugins?name=h"))
        .body(hello.clone());
    let (status, body) = send(&gw, no_token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_admin_token");
    let wrong = gw
        .client
        .post(gw.url("/api/plugins?name=h"))
        .bearer_auth("nope")
        .body(hello.clone());
    assert_eq!(send(&gw, wrong).await.0, 401);
    assert!(
        !gw.dir.path().join("plugins/h.wasm").exists(),
        "nothing written"
    );
    gw.stop().await;
}

#[tokio::test]
async fn uploads_are_validated_before_they_are_installed() {
    let gw = managed(json!([]), json!({"upload_limit_bytes": 4_000_000})).await;
    let hello = std::fs::read(artifacts::HELLO_WORLD).expect("built");

    let (status, body) = send(&gw, upload(&gw, "hello", hello.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "active");
    assert!(gw.dir.path().join("plugins/hello.wasm").exists());

    let (status, body) = send(&gw, upload(&gw, "broken", b"\0asm\x01\0\0\0".to_vec())).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("core WebAssembly module"),
        "{body}"
    );
    assert!(
        !gw.dir.path().join("plugins/broken.wasm").exists(),
        "a refused upload is not installed"
    );

    let (status, body) = send(&gw, upload(&gw, "big", vec![0; 5_000_000])).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "upload_too_large");

    for bad in [
        "..%2Fescape",
        "%2Fetc%2Fpasswd",
        ".hidden",
        "a%20b",
        "x%00y",
    ] {
        let (status, body) = send(&gw, upload(&gw, bad, hello.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    for bad in ["..%2Fescape", ".hidden", "a%20b"] {
        let req = gw
            .client
            .delete(gw.url(&format!("/api/plugins/{bad}")))
            .bearer_auth(TOKEN);
        let (status, body) = send(&gw, req).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let escaped: Vec<_> = std::fs::read_dir(gw.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!escaped.iter().any(|n| n.contains("escape")), "{escaped:?}");

    // Multipart, as `curl -F file=@x.wasm -F name=multi` sends it.
    let form = reqwest::multipart::Form::new().text("name", "multi").part(
        "file",
        reqwest::multipart::Part::bytes(hello).file_name("multi.wasm"),
    );
    let req = gw
        .client
        .post(gw.url("/api/plugins"))
        .bearer_auth(TOKEN)
        .multipart(form);
    let (status, body) = send(&gw, req).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "multi");
    gw.stop().await;
}

#[tokio::test]
async fn settings_changes_are_validated_persisted_and_applied_without_recompiling() {
    let dir_plugins = json!([
        {"name": "a", "path": artifacts::SCRIPTED, "config": {"tag": "A"}},
        {"name": "b", "path": artifacts::SCRIPTED, "config": {"tag": "B"}},
    ]);
    let gw = managed(dir_plugins, json!({})).await;
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(
        body["trace"],
        "A.transport,B.transport,A.pre,B.pre,B.post,A.post"
    );

    let put = |name: &str, body: Value| {
        gw.client
            .put(gw.url(&format!("/api/plugins/{name}")))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    let (status, body) = send(&gw, put("a", json!({"config": {"tag": "A2"}, "order": 1}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["compiles"], 1,
        "config-only change: no recompilation: {body}"
    );
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(
        body["trace"],
        "B.transport,A2.transport,B.pre,A2.pre,A2.post,B.post"
    );
    let on_disk = config_on_disk(&gw);
    assert_eq!(
        on_disk["plugins"][1]["name"], "a",
        "order persisted: {on_disk}"
    );
    assert_eq!(
        on_disk["plugins"][1]["config"]["tag"], "A2",
        "config persisted: {on_disk}"
    );
    assert_eq!(on_disk["admin_token"], TOKEN, "other fields untouched");

    let (status, body) = send(
        &gw,
        put("a", json!({"config": {"tag": "A3", "pre": "dance"}})),
    )
    .await;
    assert_eq!(status, 422, "init rejects the config: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dance"),
        "{body}"
    );
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(
        body["trace"], "B.transport,A2.transport,B.pre,A2.pre,A2.post,B.post",
        "old config serves"
    );
    assert_eq!(
        config_on_disk(&gw)["plugins"][1]["config"]["tag"],
        "A2",
        "nothing persisted"
    );

    let (status, body) = send(&gw, put("a", json!({"limits": {"fuel": 0}}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(&gw, put("a", json!({"colour": "red"}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(&gw, put("ghost", json!({"enabled": false}))).await;
    assert_eq!(status, 404);

    let before = gw.plugin_status("b").await;
    let req = gw
        .client
        .post(gw.url("/api/plugins/b/reload"))
        .bearer_auth(TOKEN);
    let (status, body) = send(&gw, req).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["loaded_at_ms"], before["loaded_at_ms"], "reloaded");

    let (status, body) = send(&gw, put("b", json!({"enabled": false}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "disabled");
    let req = gw
        .client
        .delete(gw.url("/api/plugins/b"))
        .bearer_auth(TOKEN);
    assert_eq!(send(&gw, req).await.0, 204);
    let (_, list) = gw.get("/api/plugins").await;
    assert_eq!(list["plugins"].as_array().map(Vec::len), Some(1), "{list}");
    assert!(
        config_on_disk(&gw)["plugins"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    );
    gw.stop().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of this (whole test) process, in MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test]
async fn two_hundred_replace_cycles_leave_no_growth() {
    // Other tests' gateways would move the process's file handles and memory.
    let _alone = wasmgate_e2e::alone().await;
    let gw = managed(json!([]), json!({})).await;
    let versions = [
        std::fs::read(artifacts::STAMP_V1).expect("v1"),
        std::fs::read(artifacts::STAMP_V2).expect("v2"),
    ];
    let mut baseline = None;
    for cycle in 0..200 {
        let (status, body) = send(&gw, upload(&gw, "stamp", versions[cycle % 2].clone())).await;
        assert_eq!(status, 201, "cycle {cycle}: {body}");
        let (status, resp) = gw.chat(&chat_body("mock/echo", "x")).await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["stamp_post"], ["v1", "v2"][cycle % 2]);
        if cycle == 20 {
            baseline = Some((open_fds(), rss_mib()));
        }
    }
    let plugin = gw.plugin_status("stamp").await;
    assert_eq!(plugin["idle_instances"], 1, "{plugin}");
    assert_eq!(plugin["busy_instances"], 0, "{plugin}");
    assert_eq!(
        gw.gateway.registry().draining(),
        0,
        "no replaced version is left behind"
    );
    let (fds, rss) = (open_fds(), rss_mib());
    let (base_fds, base_rss) = baseline.unwrap_or((fds, rss));
    assert!(
        fds <= base_fds + 8,
        "file handles grew from {base_fds} to {fds}"
    );
    // Each leaked version would keep its compiled code and instance memory (MiBs); 180 leaks
    // would be far beyond this bound, which leaves room for other tests in this process.
    assert!(
        rss <= base_rss + 256,
        "memory grew from {base_rss} MiB to {rss} MiB"
    );
    let kv = gw.gateway.registry().runtime().kv().clone();
    gw.stop().await;
    let count = async |key: &str| wasmgate_e2e::kv_counter(&kv, "stamp", key).await;
    let (inits, cleanups) = (
        count("inits:v1").await + count("inits:v2").await,
        count("cleanups:v1").await + count("cleanups:v2").await,
    );
    assert_eq!(
        inits, cleanups,
        "every instance of every version was cleaned up"
    );
    assert!(
        inits <= 2 * 200 + 4,
        "instances stay bounded: {inits} inits for 200 cycles"
    );
}

#[tokio::test]
async fn a_config_change_to_a_per_request_plugin_takes_a_new_snapshot_without_recompiling() {
    let gw = managed(
        json!([{"name": "p", "path": artifacts::SCRIPTED, "config": {"tag": "P1"},
                "isolation": "per-request"}]),
        json!({}),
    )
    .await;
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(body["trace"], "P1.transport,P1.pre,P1.post", "{body}");

    let put = gw
        .client
        .put(gw.url("/api/plugins/p"))
        .bearer_auth(TOKEN)
        .json(&json!({"config": {"tag": "P2"}}));
    let (status, view) = send(&gw, put).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["compiles"], 1,
        "the instrumented copy is reused: {view}"
    );
    assert_eq!(view["preinitialized"], true, "{view}");
    // Every fresh instance starts from the snapshot of the new `init`, none from the old one.
    for _ in 0..3 {
        let (status, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["trace"], "P2.transport,P2.pre,P2.post", "{body}");
    }
    gw.stop().await;
}
