//! The HTTP API: OpenAI-compatible endpoints, the admin API, metrics and health. Handlers
//! translate HTTP to the pipeline and back; every error leaves as an OpenAI error body and a log
//! line.

mod chat;
mod metrics;
mod models;
mod plugins;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::error::GatewayError;
use crate::pipeline::Pipeline;
use crate::registry::Registry;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pipeline requests run through.
    pub pipeline: Arc<Pipeline>,
    /// The plugin registry (admin API).
    pub registry: Arc<Registry>,
    /// Plugin management (admin API mutations).
    pub admin: Arc<crate::admin::Admin>,
    /// Where the config came from.
    pub source: crate::reload::ConfigSource,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Largest accepted plugin upload, in bytes.
    pub upload_limit: usize,
    /// Connection limits of the server.
    pub server_limits: crate::server::ServerLimits,
    /// The Prometheus metrics of `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    let counted = axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::count);
    Router::new()
        .route(
            "/v1/chat/completions",
            post(chat::completions).route_layer(counted.clone()),
        )
        .route(
            "/pipelines/{pipeline}/v1/chat/completions",
            post(chat::completions_in).route_layer(counted),
        )
        .route("/v1/models", get(models::list))
        .route("/api/plugins", get(plugins::list).post(plugins::upload))
        .route(
            "/api/plugins/{name}",
            get(plugins::show)
                .put(plugins::update)
                .delete(plugins::delete),
        )
        .route("/api/plugins/{name}/reload", post(plugins::reload))
        .route("/health", get(health))
        .route("/metrics", get(metrics::scrape))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A [`GatewayError`] on its way to the client: logged, then rendered as OpenAI error JSON.
#[derive(Debug)]
pub struct ApiError(pub GatewayError);

impl From<GatewayError> for ApiError {
    fn from(err: GatewayError) -> Self {
        Self(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        let status =
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                code = err.code.as_deref().unwrap_or(""),
                "request failed: {}",
                err.message
            );
        } else {
            tracing::info!(
                status = status.as_u16(),
                code = err.code.as_deref().unwrap_or(""),
                "request rejected: {}",
                err.message
            );
        }
        let mut response = (status, Json(err.to_json())).into_response();
        for (name, value) in &err.headers {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(name.as_bytes()),
                axum::http::HeaderValue::from_str(value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    let entries = state.registry.entries();
    let count = |s| entries.iter().filter(|e| e.status == s).count();
    use crate::registry::Status;
    Json(json!({
        "status": "ok",
        "plugins": {
            "active": count(Status::Active),
            "failed": count(Status::Failed),
            "disabled": count(Status::Disabled),
            "loading": count(Status::Loading),
        }
    }))
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError(GatewayError::not_found(
        format!(
            "no route for {method} {}; the gateway serves POST /v1/chat/completions (and /pipelines/<name>/v1/chat/completions), GET /v1/models, GET /api/plugins, GET /metrics and GET /health",
            uri.path()
        ),
        "unknown_route",
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        GatewayError::new(
            405,
            format!("method {method} is not allowed on {}", uri.path()),
        )
        .with_kind("invalid_request_error")
        .with_code("method_not_allowed"),
    )
}
