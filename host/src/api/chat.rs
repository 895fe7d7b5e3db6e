//! `POST /v1/chat/completions`: raw HTTP -> transport interceptors -> parse -> pipeline -> JSON.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::chat::ChatRequest;
use crate::error::GatewayError;
use crate::hooks::{Headers, HttpRequest, HttpResponse};
use crate::pipeline::{Session, Transported};

/// Header names lower-cased, values that are not UTF-8 dropped.
fn headers_of(map: &HeaderMap) -> Headers {
    map.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Renders a transport interceptor's direct answer; invalid header names or values are dropped.
fn raw_response(r: HttpResponse) -> Response {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    for (name, value) in r.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// The chat completions endpoint.
pub(super) async fn completions(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = to_bytes(body, state.body_limit).await.map_err(|e| {
        GatewayError::new(
            413,
            format!(
                "request body exceeds the {} byte limit or could not be read ({e}); send a smaller request",
                state.body_limit
            ),
        )
        .with_kind("invalid_request_error")
        .with_code("request_too_large")
    })?;
    let pipeline = &state.pipeline;
    let headers = headers_of(&headers);
    let mut session = pipeline.session(headers.clone());
    let request_id = session.context().id().to_string();
    let result = serve(&state, &mut session, method, uri, headers, body.to_vec()).await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            let err = pipeline.finish_error(&mut session, err).await;
            ApiError(err).into_response()
        }
    };
    drop(session);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// Everything between reading the body and rendering: transport interceptors, parsing,
/// validation and the pipeline. Its error goes through the error stage before it is sent.
async fn serve(
    state: &AppState,
    session: &mut Session,
    method: Method,
    uri: Uri,
    headers: Headers,
    body: Vec<u8>,
) -> Result<Response, GatewayError> {
    let pipeline = &state.pipeline;
    let raw = HttpRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string()),
        headers,
        body,
    };
    let body = match pipeline.transport(session, raw).await? {
        Transported::Respond(response) => return Ok(raw_response(response)),
        Transported::Continue { body, .. } => body,
    };
    let req = ChatRequest::from_json_bytes(&body)?;
    if req.stream {
        return Err(GatewayError::invalid_request(
            "`stream: true` is not supported yet; send the request without `stream` to get one JSON response",
        )
        .with_param("stream"));
    }
    pipeline
        .providers()
        .check_target(&req.provider, &req.model)?;
    for (i, target) in req.fallbacks.iter().enumerate() {
        let (provider, model) = crate::chat::split_target(target).unwrap_or_default();
        pipeline
            .providers()
            .check_target(provider, model)
            .map_err(|e| e.with_param(format!("fallbacks[{i}]")))?;
    }
    let response = pipeline.run(session, req).await?;
    Ok(Json(response.to_json()).into_response())
}
