//! The HTTP side every remote provider shares: one pooled client per provider with its
//! timeout, the keys used by weight, the retries, and the mapping of failures and upstream error
//! bodies to gateway errors that name the provider.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use http_body_util::Full;
use serde_json::Value;

use super::client::{CallError, Client, Response};
use super::keys::{KeyConfig, KeyRing};
use super::retry::{RetryConfig, retryable_status};
use crate::error::GatewayError;

/// How a provider's key is presented.
#[derive(Debug, Clone)]
pub(super) enum Auth {
    /// `Authorization: Bearer <key>` (OpenAI and compatibles).
    Bearer,
    /// The bare key in a header of its own, e.g. Azure OpenAI's `api-key`.
    Header(HeaderName),
    /// `x-api-key: <key>` and `anthropic-version` (the Anthropic Messages API).
    Anthropic {
        /// The API version header's value.
        version: HeaderValue,
    },
}

/// A remote provider's endpoint and HTTP client.
pub(super) struct Upstream {
    /// The provider key, for messages.
    pub(super) name: String,
    /// The endpoint, parsed once (not on every request).
    uri: http::Uri,
    /// The header the key goes in, and the keys as that header's (sensitive) values.
    key_header: HeaderName,
    keys: KeyRing<HeaderValue>,
    /// A header every call carries (Anthropic's API version).
    fixed_header: Option<(HeaderName, HeaderValue)>,
    retries: RetryConfig,
    client: Client,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are never printed.
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// Everything an [`Upstream`] is built from.
pub(super) struct UpstreamConfig<'a> {
    /// Base URL as configured.
    pub(super) base_url: &'a str,
    /// Path appended to it, e.g. `/chat/completions`.
    pub(super) path: &'a str,
    /// `api_key_env`, a shorthand for one key of weight 1.
    pub(super) api_key_env: Option<&'a str>,
    /// Weighted keys.
    pub(super) keys: &'a [KeyConfig],
    /// Timeout of one call, ms.
    pub(super) timeout_ms: u64,
    /// Retries.
    pub(super) retries: RetryConfig,
    /// How keys are presented.
    pub(super) auth: Auth,
}

impl Upstream {
    /// Checks the URL, reads the keys from their variables and builds the client; errors name
    /// the variable or the URL at fault.
    pub(super) fn new(name: &str, config: UpstreamConfig<'_>) -> anyhow::Result<Self> {
        // A query (Azure's `?api-version=...`) stays at the end of the URL.
        let (base, query) = match config.base_url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (config.base_url, None),
        };
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!(
                "base_url {:?} must start with http:// or https://",
                config.base_url
            );
        }
        let mut key_configs = config.keys.to_vec();
        if let Some(env) = config.api_key_env {
            key_configs.insert(
                0,
                KeyConfig {
                    env: env.to_string(),
                    weight: 1,
                },
            );
        }
        let (key_header, bearer, fixed_header) = match config.auth {
            Auth::Bearer => (AUTHORIZATION, true, None),
            Auth::Header(name) => (name, false, None),
            Auth::Anthropic { version } => (
                HeaderName::from_static("x-api-key"),
                false,
                Some((HeaderName::from_static("anthropic-version"), version)),
            ),
        };
        // Each key becomes its header value once, here: a key no header can carry stops the
        // gateway at startup, naming its variable.
        let keys = KeyRing::from_env(&key_configs)?.try_map(|i, key| {
            let text = if bearer { format!("Bearer {key}") } else { key };
            let mut value = HeaderValue::try_from(text).map_err(|_| {
                anyhow::anyhow!(
                    "the API key in `{}` is not a valid HTTP header value; check the variable",
                    key_configs[i].env
                )
            })?;
            value.set_sensitive(true);
            Ok(value)
        })?;
        let url = match query {
            Some(query) => format!("{base}{}?{query}", config.path),
            None => format!("{base}{}", config.path),
        };
        let uri: http::Uri = url.parse().map_err(|e| {
            anyhow::anyhow!("base_url {:?} is not a valid URL: {e}", config.base_url)
        })?;
        if uri.host().is_none_or(str::is_empty) {
            anyhow::bail!("base_url {:?} names no host", config.base_url);
        }
        Ok(Self {
            name: name.to_string(),
            uri,
            key_header,
            keys,
            fixed_header,
            retries: config.retries,
            // A redirect is answered as the upstream's error, never followed: following it
            // would send the prompt (and, on the same host, the key) somewhere not configured.
            client: Client::new(Duration::from_millis(config.timeout_ms)),
        })
    }

    /// Sends `body` upstream, retrying rate limits, server errors and connection failures as
    /// the provider's `retries` say (waiting as long as a `Retry-After` asks, within its cap);
    /// returns the last answer, whatever its status. The error names the provider and says
    /// whether it timed out. Timeouts are not retried: the upstream may still be working.
    pub(super) async fn send(
        &self,
        body: &impl serde::Serialize,
    ) -> Result<Response, GatewayError> {
        // Bytes: a retry re-sends the same buffer without copying it.
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| {
            GatewayError::new(
                500,
                format!("encoding the request for `{}`: {e}", self.name),
            )
        })?);
        let mut retry = 0;
        loop {
            let (wait, outcome) = match self.client.send(self.request(body.clone())).await {
                Ok(response) if response.status().is_redirection() => {
                    return Err(self.redirected(&response));
                }
                Ok(response) if retryable_status(response.status().as_u16()) => {
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    (
                        self.retries.delay(retry, retry_after.as_deref()),
                        Ok(response),
                    )
                }
                Ok(response) => return Ok(response),
                Err(e @ CallError::Connect(_)) => {
                    (self.retries.delay(retry, None), Err(self.unreachable(&e)))
                }
                Err(e) => return Err(self.unreachable(&e)),
            };
            let Some(wait) = wait else {
                return outcome;
            };
            tracing::info!(
                provider = self.name,
                retry = retry + 1,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying the upstream call: {}",
                match &outcome {
                    Ok(response) => format!("it answered HTTP {}", response.status().as_u16()),
                    Err(err) => err.message.clone(),
                }
            );
            drop(outcome);
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// One attempt's request: the body, its type and the next key, as the provider wants it.
    fn request(&self, body: Bytes) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = self.keys.next() {
            headers.insert(self.key_header.clone(), key.clone());
        }
        if let Some((name, value)) = &self.fixed_header {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    fn unreachable(&self, e: &CallError) -> GatewayError {
        let what = match e {
            CallError::Timeout(_) => "timed out",
            CallError::Connect(_) | CallError::Broken(_) => "could not be reached",
        };
        GatewayError::new(502, format!("provider `{}` {what}: {e}", self.name))
            .with_code("provider_unreachable")
    }

    /// Maps an upstream error body (OpenAI's `{"error": {"message", "type", "code"}}`, which
    /// Anthropic's `{"type": "error", "error": {"type", "message"}}` matches too) to a gateway
    /// error that names the provider; rate limits, overload and server errors allow fallbacks,
    /// other client errors do not (Bifrost's decision matrix).
    pub(super) fn upstream_error(&self, status: u16, body: &Value) -> GatewayError {
        let detail = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        let mut err = GatewayError::new(
            if (400..=599).contains(&status) {
                status
            } else {
                502
            },
            format!("provider `{}` returned HTTP {status}: {detail}", self.name),
        );
        err.kind = body
            .pointer("/error/type")
            .and_then(Value::as_str)
            .map(str::to_string);
        err.code = body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_string);
        if status == 429 || status >= 500 {
            err
        } else {
            err.no_fallbacks()
        }
    }

    /// A 502 for an answer that cannot be used, naming the provider.
    pub(super) fn bad_response(&self, why: impl std::fmt::Display) -> GatewayError {
        GatewayError::new(502, format!("provider `{}` {why}", self.name))
            .with_code("provider_bad_response")
    }

    /// The error for a redirect, which is not followed.
    fn redirected(&self, response: &Response) -> GatewayError {
        let to = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nowhere given");
        self.bad_response(format!(
            "answered HTTP {} redirecting to {to}; redirects are not followed: set the \
             provider's base_url to the final address",
            response.status().as_u16()
        ))
    }

    /// Reads a whole answer as JSON; an upstream error status becomes its gateway error.
    pub(super) async fn json(&self, response: Response) -> Result<Value, GatewayError> {
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            GatewayError::new(
                502,
                format!("provider `{}`: reading the response failed: {e}", self.name),
            )
            .with_code("provider_unreachable")
        })?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            self.bad_response(format!(
                "answered HTTP {status} with a body that is not JSON: {e}"
            ))
        })?;
        if status >= 400 {
            return Err(self.upstream_error(status, &value));
        }
        Ok(value)
    }

    /// The gateway error of an answer with an error status, its body read (for streams, whose
    /// success is read differently).
    pub(super) async fn error_of(&self, response: Response) -> GatewayError {
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.upstream_error(status, &value)
    }
}
