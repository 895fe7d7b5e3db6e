//! `GET /metrics` (Prometheus text, or OpenMetrics for scrapers that ask for it), and the
//! middleware that counts chat completion requests for it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::error::GatewayError;
use crate::metrics::{Format, Metrics, ServedTarget};

/// `GET /metrics`: every series, in the format the `Accept` header prefers.
pub(super) async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match state.metrics.render(format) {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(err) => ApiError(GatewayError::new(
            500,
            format!("the metrics could not be rendered: {err}"),
        ))
        .into_response(),
    }
}

/// Middleware of the chat routes: counts each request by status and served target (the
/// [`ServedTarget`] the handler attached to its response) and times it to its response head.
pub(super) async fn count(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(
        response.status().as_u16(),
        response.extensions().get::<ServedTarget>(),
        started.elapsed(),
    );
    response
}
