//! Hot reload under traffic: plugins dropped, replaced, broken, fixed and removed while
//! concurrent requests flow, with nothing lost and every response produced by one version.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use wasmgate::reload::ConfigSource;
use wasmgate_e2e::{TestGateway, artifacts, chat_body};

fn sha256_of(path: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).expect("component"),
    ))
}

/// Replaces `dest` atomically: write a temporary file next to it, then rename.
fn install_atomically(src: &[u8], dest: &Path) {
    let tmp = dest.with_extension("wasm.part");
    std::fs::write(&tmp, src).expect("write temp");
    std::fs::rename(&tmp, dest).expect("rename into place");
}

fn config_file(dir: &Path, config: &Value) -> ConfigSource {
    let path = dir.join("gateway.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).expect("json")).expect("write config");
    ConfigSource {
        file: Some(path),
        ..ConfigSource::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_replace_break_fix_remove_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    let source = config_file(
        dir.path(),
        &json!({"plugins_dir": "plugins", "plugins": [{"name": "stamp", "config": {"delay_ms": 2}}]}),
    );
    let gw = Arc::new(TestGateway::start_watching(source, dir).await);
    let target = plugins.join("stamp.wasm");
    let (v1, v2) = (
        sha256_of(artifacts::STAMP_V1),
        sha256_of(artifacts::STAMP_V2),
    );

    // Load: four clients in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let body = chat_body("mock/echo", &format!("client {i}"));
                while !stop.load(Ordering::Relaxed) {
                    seen.push(gw.chat(&body).await);
                }
                seen
            })
        })
        .collect();

    // Drop (a plain copy, as users do), replace (atomic rename), break, fix, remove.
    std::fs::copy(artifacts::STAMP_V1, &target).expect("copy v1");
    gw.wait_for_plugin("stamp", |p| {
        p["status"] == "active" && p["sha256"] == v1.as_str()
    })
    .await;
    install_atomically(&std::fs::read(artifacts::STAMP_V2).expect("v2"), &target);
    gw.wait_for_plugin("stamp", |p| p["sha256"] == v2.as_str())
        .await;
    install_atomically(b"definitely not wasm", &target);
    let broken = gw
        .wait_for_plugin("stamp", |p| {
            p["error"]
                .as_str()
                .is_some_and(|e| e.contains("not a WebAssembly file"))
        })
        .await;
    assert_eq!(
        broken["status"], "active",
        "the last good version keeps serving: {broken}"
    );
    assert_eq!(broken["sha256"], v2.as_str(), "{broken}");
    install_atomically(
        &std::fs::read(artifacts::WRONG_WORLD).expect("other world"),
        &target,
    );
    let wrong = gw
        .wait_for_plugin("stamp", |p| {
            p["error"]
                .as_str()
                .is_some_and(|e| e.contains("does not export the wasmgate:plugin"))
        })
        .await;
    assert_eq!(
        wrong["sha256"],
        v2.as_str(),
        "still the last good version: {wrong}"
    );
    install_atomically(&std::fs::read(artifacts::STAMP_V1).expect("v1"), &target);
    let fixed = gw
        .wait_for_plugin("stamp", |p| {
            p["sha256"] == v1.as_str() && p["error"].is_null()
        })
        .await;
    assert_eq!(fixed["status"], "active");
    std::fs::remove_file(&target).expect("remove");
    gw.wait_for_plugin("stamp", |p| p["status"] == "failed")
        .await;

    stop.store(true, Ordering::Relaxed);
    let mut responses = Vec::new();
    for client in clients {
        responses.extend(client.await.expect("client task"));
    }
    let mut versions = std::collections::BTreeSet::new();
    for (status, body) in &responses {
        assert_eq!(*status, 200, "no request fails during reloads: {body}");
        assert_eq!(
            body["stamp_pre"], body["stamp_post"],
            "one version per response: {body}"
        );
        if let Some(v) = body["stamp_post"].as_str() {
            versions.insert(v.to_string());
        }
    }
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "both versions served: {versions:?} over {} responses",
        responses.len()
    );

    // Both versions are unloaded by now (v2 replaced, v1 removed): once their in-flight
    // requests drained, every instance ran cleanup exactly once. Shutdown waits for the drain.
    let gw = Arc::into_inner(gw).expect("clients are done");
    let kv = gw.gateway.registry().runtime().kv().clone();
    gw.stop().await;
    for v in ["v1", "v2"] {
        let (inits, cleanups) = (
            wasmgate_e2e::kv_counter(&kv, "stamp", &format!("inits:{v}")).await,
            wasmgate_e2e::kv_counter(&kv, "stamp", &format!("cleanups:{v}")).await,
        );
        assert!(inits > 0, "{v} was instantiated");
        assert_eq!(inits, cleanups, "cleanup ran exactly once per {v} instance");
    }
}

#[tokio::test]
async fn config_changes_reinitialise_without_recompiling_and_touch_does_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::copy(artifacts::SCRIPTED, plugins.join("s.wasm")).expect("copy");
    let mut config =
        json!({"plugins_dir": "plugins", "plugins": [{"name": "s", "config": {"tag": "A"}}]});
    let source = config_file(dir.path(), &config);
    let path = source.file.clone().expect("file");
    let gw = TestGateway::start_watching(source, dir).await;
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(body["trace"], "A.transport,A.pre,A.post");
    let first = gw.plugin_status("s").await;
    assert_eq!(first["compiles"], 1);

    // Touching the component (same bytes) does not reload it.
    let file = std::fs::File::options()
        .append(true)
        .open(plugins.join("s.wasm"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now())
        .expect("touch");
    drop(file);
    config["plugins"][0]["config"]["tag"] = json!("B");
    std::fs::write(&path, config.to_string()).expect("rewrite config");
    let changed = gw
        .wait_for_plugin("s", |p| p["loaded_at_ms"] != first["loaded_at_ms"])
        .await;
    assert_eq!(
        changed["compiles"], 1,
        "a config-only change does not recompile: {changed}"
    );
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(body["trace"], "B.transport,B.pre,B.post");

    // Raising `version` forces a reload with the same bytes and config.
    config["plugins"][0]["version"] = json!(2);
    std::fs::write(&path, config.to_string()).expect("rewrite config");
    let bumped = gw.wait_for_plugin("s", |p| p["version"] == 2).await;
    assert_ne!(bumped["loaded_at_ms"], changed["loaded_at_ms"]);
    assert_eq!(bumped["compiles"], 1);

    // An invalid config file keeps the last good config in force.
    std::fs::write(&path, r#"{"plugins": [{"name": "s", "bogus": 1}]}"#).expect("write");
    std::fs::copy(artifacts::HELLO_WORLD, plugins.join("h.wasm")).expect("copy");
    gw.wait_for_plugin("h", |p| p["status"] == "active").await;
    let (_, body) = gw.chat(&chat_body("mock/echo", "hi")).await;
    assert_eq!(
        body["trace"], "B.transport,B.pre,B.post",
        "old config still in force: {body}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_reloaded_version_runs_under_the_isolation_it_declares() {
    // `plugin.wasm` is first `remember` (no `shared-instances`), then hello-world (declares
    // it), then `remember` again; the config leaves `isolation` unset, so each version's own
    // declaration decides.
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    let source = config_file(
        dir.path(),
        &json!({"plugins_dir": "plugins", "plugins": [{"name": "plugin"}]}),
    );
    let gw = TestGateway::start_watching(source, dir).await;
    let target = plugins.join("plugin.wasm");
    for (component, isolation) in [
        (artifacts::REMEMBER, "pooled"),
        (artifacts::HELLO_WORLD, "shared"),
        (artifacts::REMEMBER, "pooled"),
    ] {
        let sha = sha256_of(component);
        install_atomically(&std::fs::read(component).expect("component"), &target);
        let view = gw
            .wait_for_plugin("plugin", |p| {
                p["status"] == "active" && p["sha256"] == sha.as_str()
            })
            .await;
        assert_eq!(view["isolation"], isolation, "{view}");
        let (status, body) = gw.chat(&chat_body("mock/echo", "hello")).await;
        assert_eq!(status, 200, "{body}");
    }
    gw.stop().await;
}
