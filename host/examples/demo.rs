//! The quick-start demo: the gateway on 127.0.0.1:8080 (or `$WASMGATE_LISTEN`) with the mock
//! provider and the example plugins (hello-world, auth, cache), built from source by the
//! `wasmgate-artifacts` crate. Run it with `cargo run -p wasmgate --example demo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;
use wasmgate::Gateway;
use wasmgate::config::{Config, PluginConfig};

fn plugin(name: &str, path: &str, config: serde_json::Value) -> PluginConfig {
    PluginConfig {
        path: Some(PathBuf::from(path)),
        config,
        ..PluginConfig::named(name)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wasmgate::init_logging();
    let mut config = Config::default();
    if let Ok(listen) = std::env::var("WASMGATE_LISTEN") {
        config.listen = listen.parse::<SocketAddr>().with_context(|| {
            format!("WASMGATE_LISTEN={listen:?} is not an address like 127.0.0.1:8080")
        })?;
    }
    config.plugins = vec![
        plugin(
            "hello-world",
            wasmgate_artifacts::HELLO_WORLD,
            json!({"greeting": "hello from the wasmgate demo"}),
        ),
        // Authentication must never be skipped: if it fails to load, refuse every request.
        PluginConfig {
            required: true,
            ..plugin(
                "auth",
                wasmgate_artifacts::AUTH,
                json!({"keys": ["sk-demo"]}),
            )
        },
        plugin(
            "cache",
            wasmgate_artifacts::CACHE,
            json!({"ttl_seconds": 60}),
        ),
    ];
    let gateway = Gateway::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        "demo ready. Try:\n  curl -s http://{}/v1/chat/completions -H 'authorization: Bearer sk-demo' \
         -H 'content-type: application/json' -d '{{\"model\": \"mock/echo\", \"messages\": [{{\"role\": \"user\", \"content\": \"hello\"}}]}}'",
        config.listen
    );
    gateway.serve(listener, wasmgate::shutdown_signal()).await
}
