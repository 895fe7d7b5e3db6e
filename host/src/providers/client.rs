//! The HTTP client providers are called with: hyper's pooled HTTP/1.1 client over rustls (the
//! webpki root certificates), with one deadline per call that covers the answer's body too.
//! Thin on purpose: it sends a prepared request to a URI parsed once, follows no redirect and
//! uses no proxy, so a call costs what HTTP costs and nothing is reparsed per request.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, timeout_at};

/// How long an unused keep-alive connection to a provider stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled client with a per-call timeout.
pub(super) struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// Why a call got no answer.
#[derive(Debug)]
pub(super) enum CallError {
    /// No connection could be made (refused, unresolvable, TLS handshake failed): nothing was
    /// sent, so a retry is safe.
    Connect(String),
    /// The deadline passed: the provider may still be working.
    Timeout(Duration),
    /// The connection failed after the request was (perhaps) sent, or the body broke off.
    Broken(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(why) => write!(f, "connecting failed: {why}"),
            CallError::Timeout(after) => write!(f, "no complete answer within {after:?}"),
            CallError::Broken(why) => write!(f, "the connection failed: {why}"),
        }
    }
}

impl Client {
    /// A client whose calls end after `timeout`, answer included.
    pub(super) fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        // No Nagle delay on small writes (what reqwest set too).
        http.set_nodelay(true);
        // The scheme is the TLS connector's to check: it wraps this one.
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(https);
        Client { pool, timeout }
    }

    /// Sends `request`; the answer's head, with its body still to read by the same deadline.
    pub(super) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<Response, CallError> {
        let deadline = Instant::now() + self.timeout;
        match timeout_at(deadline, self.pool.request(request)).await {
            Err(_) => Err(CallError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_connect() => Err(CallError::Connect(causes(&e))),
            Ok(Err(e)) => Err(CallError::Broken(causes(&e))),
            Ok(Ok(inner)) => Ok(Response {
                inner,
                deadline,
                timeout: self.timeout,
            }),
        }
    }
}

/// An error and its sources, `: `-separated (hyper's own message alone is "client error").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A provider's answer: status and headers read, the body read on demand.
pub(super) struct Response {
    inner: http::Response<Incoming>,
    deadline: Instant,
    timeout: Duration,
}

impl Response {
    /// The HTTP status.
    pub(super) fn status(&self) -> http::StatusCode {
        self.inner.status()
    }

    /// The headers.
    pub(super) fn headers(&self) -> &http::HeaderMap {
        self.inner.headers()
    }

    /// The whole body.
    pub(super) async fn bytes(self) -> Result<Bytes, CallError> {
        let timeout = self.timeout;
        match timeout_at(self.deadline, self.inner.into_body().collect()).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => Err(CallError::Broken(causes(&e))),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    /// The next piece of the body as it arrives; none at its end.
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, CallError> {
        loop {
            let frame = match timeout_at(self.deadline, self.inner.body_mut().frame()).await {
                Err(_) => return Err(CallError::Timeout(self.timeout)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(CallError::Broken(causes(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry no data: read on.
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }
}
