//! The end-to-end harness: starts a real gateway on a loopback socket with real wasm plugins
//! (built from source by `wasmgate-artifacts`) and talks to it over HTTP.
#![expect(
    clippy::expect_used,
    reason = "test harness: a failed setup step must fail the test loudly"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmgate::Gateway;
use wasmgate::config::{Config, FailurePolicy, LimitsConfig, PluginConfig};
use wasmgate::reload::ConfigSource;
use wasmgate::runtime::RuntimeOptions;

pub use exclusive::alone;
pub use wasmgate_artifacts as artifacts;

mod exclusive;

/// A gateway serving on 127.0.0.1 on a free port, stopped gracefully by [`TestGateway::stop`].
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The gateway (for registry and kv inspection).
    pub gateway: Gateway,
    /// A client with no proxy and a generous timeout.
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    watcher: Option<wasmgate::reload::Watcher>,
    _share: exclusive::Share,
    /// Scratch directory (plugins dir, copies of components); removed on drop.
    pub dir: tempfile::TempDir,
}

/// A config for tests: mock provider, an empty plugins dir inside `dir`, a small instance pool,
/// and the compiled-component cache every test shares ([`artifacts::COMPILE_CACHE_DIR`]): a
/// Python or JavaScript component takes 10-30 s to compile, so it is compiled once (per build
/// of it), not once per test.
pub fn base_config(dir: &Path) -> Config {
    Config {
        plugins_dir: dir.join("plugins"),
        cache_dir: Some(PathBuf::from(artifacts::COMPILE_CACHE_DIR)),
        runtime: RuntimeOptions {
            max_instances: 64,
            max_memory_bytes: 128 << 20,
            // Room for the first compile of the large guests on a busy 2-core machine.
            compile_timeout_ms: 600_000,
            ..RuntimeOptions::default()
        },
        ..Config::default()
    }
}

/// A config entry for a plugin component at `path`.
pub fn plugin(name: &str, path: &str, config: Value) -> PluginConfig {
    PluginConfig {
        path: Some(PathBuf::from(path)),
        config,
        ..PluginConfig::named(name)
    }
}

/// A language the `scripted` test plugin is written in: the pipeline-semantics tests run
/// against each (see [`for_each_lang!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `tests/test-plugins/scripted`.
    Rust,
    /// `tests/test-plugins/python/scripted`.
    Python,
    /// `tests/test-plugins/js/scripted`.
    Js,
}

impl Lang {
    /// The `scripted` component in this language.
    pub fn scripted(self) -> &'static str {
        match self {
            Lang::Rust => artifacts::SCRIPTED,
            Lang::Python => artifacts::PYTHON_SCRIPTED,
            Lang::Js => artifacts::JS_SCRIPTED,
        }
    }
}

/// Defines, for each `async fn name(lang: Lang)` listed, one `#[tokio::test]` per language of
/// `scripted`: `rust::name`, `python::name` and `js::name`.
#[macro_export]
macro_rules! for_each_lang {
    ($($test:ident),+ $(,)?) => {
        mod rust {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::Lang::Rust).await
            })+
        }
        mod python {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::Lang::Python).await
            })+
        }
        mod js {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::Lang::Js).await
            })+
        }
    };
}

/// A `scripted` test plugin named `name` with tag `name` plus the given settings.
pub fn scripted(name: &str, settings: Value) -> PluginConfig {
    scripted_in(Lang::Rust, name, settings)
}

/// [`scripted`] in the given language.
pub fn scripted_in(lang: Lang, name: &str, mut settings: Value) -> PluginConfig {
    if let Some(obj) = settings.as_object_mut() {
        obj.entry("tag").or_insert_with(|| json!(name));
    }
    plugin(name, lang.scripted(), settings)
}

/// `scripted` with fail-open policy.
pub fn fail_open(mut p: PluginConfig) -> PluginConfig {
    p.policy = FailurePolicy::FailOpen;
    p
}

/// Overrides a plugin's limits.
pub fn with_limits(mut p: PluginConfig, limits: LimitsConfig) -> PluginConfig {
    p.limits = limits;
    p
}

/// A minimal chat request body for `model`.
pub fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

impl TestGateway {
    /// Starts a gateway with `plugins` on top of [`base_config`].
    pub async fn with_plugins(plugins: Vec<PluginConfig>) -> Self {
        Self::start_with(|config| config.plugins = plugins).await
    }

    /// Starts a gateway on [`base_config`] edited by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = base_config(dir.path());
        edit(&mut config);
        Self::start(config, dir).await
    }

    /// Starts a gateway from `source` (a config file and overrides) with hot reload on.
    pub async fn start_watching(source: ConfigSource, dir: tempfile::TempDir) -> Self {
        let config = source.load().expect("valid config");
        let share = exclusive::share().await;
        let gateway = Gateway::build_from(&config, source)
            .await
            .expect("gateway builds");
        let mut gw = Self::serve(gateway, dir, share).await;
        gw.watcher = Some(gw.gateway.watch().await.expect("watcher starts"));
        gw
    }

    /// Waits (event-driven, on reconcile generations) until `check` holds for the admin view
    /// of plugin `name`; panics with the last view if a minute passes.
    pub async fn wait_for_plugin(&self, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut generations = self.gateway.registry().generations();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_, view) = self.get(&format!("/api/plugins/{name}")).await;
            if check(&view) {
                return view;
            }
            match tokio::time::timeout_at(deadline, generations.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("plugin {name} never reached the expected state; last view: {view}"),
            }
        }
    }

    /// Starts a gateway from a full config.
    pub async fn start(config: Config, dir: tempfile::TempDir) -> Self {
        let share = exclusive::share().await;
        let gateway = Gateway::build(&config).await.expect("gateway builds");
        Self::serve(gateway, dir, share).await
    }

    async fn serve(gateway: Gateway, dir: tempfile::TempDir, share: exclusive::Share) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(gateway.clone().serve(listener, async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("client");
        Self {
            addr,
            gateway,
            client,
            shutdown: Some(tx),
            server: Some(server),
            watcher: None,
            _share: share,
            dir,
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a chat completion body; returns status and JSON body.
    pub async fn chat(&self, body: &Value) -> (u16, Value) {
        self.chat_with_headers(body, &[]).await
    }

    /// POSTs `body` to `path` as `application/json` with extra headers; the raw response, for
    /// tests that look at headers, streams or bodies that are not JSON.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    /// POSTs a chat completion body with extra headers.
    pub async fn chat_with_headers(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .post("/v1/chat/completions", body.to_string(), headers)
            .await;
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"));
        (status, value)
    }

    /// GETs a JSON endpoint.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// The admin API's view of one plugin.
    pub async fn plugin_status(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/api/plugins/{name}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Shuts down gracefully (drain, then cleanup) and waits for the server to finish.
    pub async fn stop(mut self) {
        self.watcher.take();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ends cleanly");
        }
    }
}

/// The trace the `scripted` plugins left in a response (`extra.trace`) or error (`code`).
pub fn trace_of(body: &Value) -> String {
    if let Some(trace) = body.get("trace").and_then(Value::as_str) {
        return trace.to_string();
    }
    body.pointer("/error/code")
        .and_then(Value::as_str)
        .and_then(|c| c.strip_prefix("trace:"))
        .unwrap_or_default()
        .to_string()
}

/// The assistant text of a chat completion body.
pub fn content_of(body: &Value) -> &str {
    body.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The integer a plugin keeps under `key` in its key-value namespace (0 when absent); the test
/// plugins count their inits and cleanups this way.
pub async fn kv_counter(kv: &wasmgate::kv::KvStore, plugin: &str, key: &str) -> u64 {
    kv.get(plugin, key)
        .await
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Serves `completions` as `POST /v1/chat/completions` on a free loopback port, for as long as
/// the test runs: a fake upstream provider. Returns its address.
pub async fn fake_upstream<H, T>(completions: H) -> SocketAddr
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(completions));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A fake OpenAI upstream: answers a chat completion that carries the request body it received
/// under `received` (plus fields plugins must pass through: `system_fingerprint`, `logprobs`), or
/// OpenAI's error body for model `limited` (429).
pub async fn fake_openai() -> SocketAddr {
    use axum::Json;
    use axum::http::StatusCode;
    async fn completions(Json(req): Json<Value>) -> (StatusCode, Json<Value>) {
        if req["model"] == "limited" {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(
                    json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
                ),
            );
        }
        (
            StatusCode::OK,
            Json(json!({
                "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": req["model"],
                "system_fingerprint": "fp_up",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from upstream"}, "finish_reason": "stop", "logprobs": null}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                "received": req,
            })),
        )
    }
    fake_upstream(completions).await
}
