//! wasmgate: an OpenAI-compatible LLM gateway whose request pipeline is extended by sandboxed
//! WebAssembly component plugins.
//!
//! Data flows one way: HTTP ([`api`]) -> transport interceptors -> pre-hooks ([`pipeline`]) ->
//! provider ([`providers`]) -> post-hooks -> HTTP. Plugins run in the wasm [`runtime`], which
//! knows nothing of HTTP; providers know nothing of plugins.

#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod chat;
pub mod config;
pub mod context;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod kv;
pub mod metrics;
pub mod pipeline;
pub mod providers;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod stream;

use std::future::Future;
use std::sync::Arc;

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
    /// Builds the gateway from a config that did not come from a file (tests, embedding): the
    /// admin API can then upload, reload and delete plugins but not persist settings.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_from(config, reload::ConfigSource::default()).await
    }

    /// Builds the gateway: creates the runtime and providers and loads every plugin. A plugin
    /// that fails to load is logged and reported by the admin API; it never stops the gateway.
    /// `source` is where `config` came from, so reloads and the admin API can read and write it.
    pub async fn build_from(config: &Config, source: reload::ConfigSource) -> anyhow::Result<Self> {
        config.validate()?;
        let runtime = Runtime::new(config.runtime, config.cache_dir.as_deref())?;
        let providers = Arc::new(
            Providers::from_config(&config.providers)?.with_fallbacks(config.fallbacks.clone()),
        );
        let registry = Arc::new(Registry::new(runtime));
        registry.reconcile(config).await;
        let pipeline = Arc::new(Pipeline::new(registry.clone(), providers));
        let metrics = Arc::new(metrics::Metrics::new(registry.clone()));
        let admin = Arc::new(admin::Admin::new(
            registry.clone(),
            source.clone(),
            config.clone(),
        ));
        Ok(Self {
            state: api::AppState {
                pipeline,
                registry,
                admin,
                source,
                body_limit: config.body_limit_bytes,
                upload_limit: config.upload_limit_bytes,
                server_limits: server::ServerLimits {
                    max_connections: config.max_connections,
                    header_read_timeout: std::time::Duration::from_millis(
                        config.header_read_timeout_ms,
                    ),
                },
                metrics,
            },
        })
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.state.registry
    }

    /// Starts hot reload: changes to the plugins directory and the config file are applied while
    /// the gateway serves. Dropping the returned watcher stops it.
    pub async fn watch(&self) -> anyhow::Result<reload::Watcher> {
        reload::watch(self.state.admin.clone(), &self.state.source).await
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
        server::serve(listener, self.router(), self.state.server_limits, shutdown).await;
        tracing::info!("requests drained; cleaning up plugins");
        self.state.registry.shutdown().await;
        Ok(())
    }
}

/// Sets up logging to stdout: level from `RUST_LOG` (default `info`), colours only on a
/// terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
