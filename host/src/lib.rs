//! wasmgate: an OpenAI-compatible LLM gateway whose request pipeline is extended by sandboxed
//! WebAssembly component plugins.
//!
//! Data flows one way: HTTP ([`api`]) -> transport interceptors -> pre-hooks ([`pipeline`]) ->
//! provider ([`providers`]) -> post-hooks -> HTTP. Plugins run in the wasm [`runtime`], which
//! knows nothing of HTTP; providers know nothing of plugins.

pub mod api;
pub mod chat;
pub mod config;
pub mod context;
pub mod error;
pub mod hooks;
pub mod kv;
pub mod pipeline;
pub mod providers;
pub mod registry;
pub mod reload;
pub mod runtime;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::providers::Providers;
use crate::registry::Registry;
use crate::runtime::Runtime;

/// A gateway built from a config: runtime, providers, loaded plugins and the HTTP routes.
#[derive(Debug, Clone)]
pub struct Gateway {
    state: api::AppState,
}

impl Gateway {
    /// Builds the gateway: creates the runtime and providers and loads every plugin. A plugin
    /// that fails to load is logged and reported by the admin API; it never stops the gateway.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let runtime = Runtime::new(config.runtime, config.cache_dir.as_deref())?;
        let providers = Arc::new(Providers::from_config(&config.providers)?);
        let registry = Arc::new(Registry::new(runtime));
        registry.reconcile(config).await;
        let pipeline = Arc::new(Pipeline::new(registry.clone(), providers));
        Ok(Self {
            state: api::AppState {
                pipeline,
                registry,
                body_limit: config.body_limit_bytes,
            },
        })
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.state.registry
    }

    /// Starts hot reload: changes to the plugins directory and the config file of `source` are
    /// applied while the gateway serves. Dropping the returned watcher stops it.
    pub fn watch(
        &self,
        source: reload::ConfigSource,
        config: Config,
    ) -> anyhow::Result<reload::Watcher> {
        reload::watch(self.state.registry.clone(), source, config)
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then lets in-flight requests finish
    /// and runs every plugin instance's `cleanup`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("the HTTP server failed")?;
        tracing::info!("requests drained; cleaning up plugins");
        self.state.registry.shutdown().await;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
