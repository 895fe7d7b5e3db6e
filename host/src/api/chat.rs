//! `POST /v1/chat/completions`: raw HTTP -> transport interceptors -> parse -> pipeline -> JSON.

use axum::Json;
use axum::body::Bytes;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::{ApiError, AppState};
use crate::chat::{ChatRequest, ChatResponse};
use crate::error::GatewayError;
use crate::hooks::{Headers, HttpRequest, HttpResponse};
use crate::metrics::ServedTarget;
use crate::pipeline::{Session, Started, StreamEvent, Transported};
use crate::stream::{CHUNK_BUFFER, ChatStream, StreamChunk, StreamHead};

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

/// `POST /v1/chat/completions`: the pipeline is chosen by header or virtual key, else the
/// default one.
pub(super) async fn completions(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(state, None, method, uri, headers, body).await
}

/// `POST /pipelines/{pipeline}/v1/chat/completions`: the named pipeline of the route (an
/// OpenAI SDK pointed at `/pipelines/<name>/v1` uses it for every call).
pub(super) async fn completions_in(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(state, Some(pipeline), method, uri, headers, body).await
}

/// Reads the body, picks the pipeline, serves the request and renders the answer.
async fn handle(
    state: AppState,
    route: Option<String>,
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
    let chain = pipeline.select(route.as_deref(), &headers)?;
    let mut session = pipeline.session(chain, headers.clone());
    let request_id = session.context().id().to_string();
    let mut requested = None;
    let result = serve(
        &state,
        &mut session,
        method,
        uri,
        headers,
        body.to_vec(),
        &mut requested,
    )
    .await;
    let served = ServedTarget::of(session.context(), requested.as_deref());
    let mut response = match result {
        Ok(Served::Response(response)) => response,
        Ok(Served::Stream {
            stream,
            ran,
            include_usage,
        }) => {
            // The session (and the plugin instances it holds) moves into the task that carries
            // the stream; the response body reads the task's events through a bounded channel.
            let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
            let head = stream.head();
            let pipeline = state.pipeline.clone();
            tokio::spawn(async move {
                pipeline.drive_stream(&mut session, &ran, stream, &tx).await;
                drop(session);
            });
            sse_response(sse_body(head, include_usage, rx))
        }
        Err(err) => {
            let err = pipeline.finish_error(&mut session, err).await;
            ApiError(err).into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if let Some(served) = served {
        response.extensions_mut().insert(served);
    }
    Ok(response)
}

/// What [`serve`] produced.
enum Served {
    /// A response to send as it is.
    Response(Response),
    /// A provider stream to carry to the client as server-sent events.
    Stream {
        stream: ChatStream,
        ran: Vec<usize>,
        include_usage: bool,
    },
}

/// One server-sent event with a JSON payload.
fn event(value: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Appends the events of one chunk (and of its usage, when asked for) to `out`.
fn push_chunk(out: &mut String, head: &StreamHead, chunk: &StreamChunk, include_usage: bool) {
    use std::fmt::Write as _;
    let (body, usage) = head.chunk_json(chunk, include_usage);
    // Writing to a String cannot fail.
    let _ = write!(out, "data: {body}\n\n");
    if let Some(usage) = usage {
        let _ = write!(out, "data: {usage}\n\n");
    }
}

/// The SSE body of a stream: a `chat.completion.chunk` event per chunk, then `data: [DONE]`,
/// or an OpenAI error event if the stream ends in an error.
fn sse_body(head: StreamHead, include_usage: bool, events: mpsc::Receiver<StreamEvent>) -> Body {
    let stream = futures_util::stream::unfold(
        (events, head, false),
        move |(mut events, head, finished)| async move {
            if finished {
                return None;
            }
            let (bytes, finished) = match events.recv().await? {
                StreamEvent::Chunk(chunk) => {
                    let mut text = String::new();
                    push_chunk(&mut text, &head, &chunk, include_usage);
                    (Bytes::from(text), false)
                }
                StreamEvent::Done => (Bytes::from_static(b"data: [DONE]\n\n"), true),
                StreamEvent::Error(err) => {
                    tracing::warn!(
                        status = err.status,
                        "stream ended with an error: {}",
                        err.message
                    );
                    (event(&err.to_json()), true)
                }
            };
            Some((
                Ok::<_, std::convert::Infallible>(bytes),
                (events, head, finished),
            ))
        },
    );
    Body::from_stream(stream)
}

/// A `200 text/event-stream` response around an SSE body.
fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A complete response sent as a stream (a plugin answered a `stream: true` request).
fn sse_of(response: &ChatResponse, include_usage: bool) -> Response {
    let head = StreamHead {
        id: response.id.clone(),
        provider: response.provider.clone(),
        model: response.model.clone(),
        created: response.created,
    };
    let mut text = String::new();
    for chunk in StreamHead::chunks_of(response) {
        push_chunk(&mut text, &head, &chunk, include_usage);
    }
    text.push_str("data: [DONE]\n\n");
    sse_response(Body::from(text))
}

/// Everything between reading the body and rendering: transport interceptors, parsing,
/// validation and the pipeline. Its error goes through the error stage before it is sent.
/// `requested` receives the `provider/model` the request asked for once it is known to be
/// served here (for the metrics).
async fn serve(
    state: &AppState,
    session: &mut Session,
    method: Method,
    uri: Uri,
    headers: Headers,
    body: Vec<u8>,
    requested: &mut Option<String>,
) -> Result<Served, GatewayError> {
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
        Transported::Respond(response) => return Ok(Served::Response(raw_response(response))),
        Transported::Continue { body, .. } => body,
    };
    let req = ChatRequest::from_json_bytes(&body)?;
    pipeline
        .providers()
        .check_target(&req.provider, &req.model)?;
    *requested = Some(req.target());
    for (i, target) in req.fallbacks.iter().enumerate() {
        let (provider, model) = crate::chat::split_target(target).unwrap_or_default();
        pipeline
            .providers()
            .check_target(provider, model)
            .map_err(|e| e.with_param(format!("fallbacks[{i}]")))?;
    }
    if req.stream {
        let include_usage = req
            .extra
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        return Ok(match pipeline.start_stream(session, req).await? {
            Started::Complete(response) => Served::Response(sse_of(&response, include_usage)),
            Started::Streaming { stream, ran } => Served::Stream {
                stream,
                ran,
                include_usage,
            },
        });
    }
    let response = pipeline.run(session, req).await?;
    Ok(Served::Response(Json(response.body()).into_response()))
}
