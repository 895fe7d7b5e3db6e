//! An OpenAI-compatible upstream (OpenAI, Azure-style base URLs, vLLM, Ollama, Groq, ...):
//! `POST {base_url}/chat/completions`, plain or streamed (server-sent events), with keys read
//! from env variables and used by weight, and retries of rate limits, server errors and
//! connection failures.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use tokio::sync::mpsc;

use super::keys::{KeyConfig, KeyRing};
use super::retry::{RetryConfig, retryable_status};
use crate::chat::{ChatRequest, ChatResponse, Usage};
use crate::error::GatewayError;
use crate::stream::{CHUNK_BUFFER, ChatStream, StreamChunk};

/// Largest server-sent event accepted from an upstream, in bytes.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Reads `data:` events of a server-sent event stream from an upstream response.
#[derive(Debug, Default)]
struct SseEvents {
    buffer: Vec<u8>,
    done: bool,
}

impl SseEvents {
    /// The next event's JSON; none once `[DONE]` or the end of the body is reached.
    async fn next(
        &mut self,
        response: &mut reqwest::Response,
        provider: &str,
    ) -> Result<Option<Value>, GatewayError> {
        let failed = |why: String| {
            GatewayError::new(502, format!("provider `{provider}` streamed badly: {why}"))
                .with_code("provider_bad_response")
        };
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue; // blank lines, comments, `event:` and `id:` fields
                };
                let data = data.trim();
                if data == "[DONE]" {
                    self.done = true;
                    return Ok(None);
                }
                let value: Value = serde_json::from_str(data)
                    .map_err(|e| failed(format!("an event is not JSON ({e})")))?;
                if let Some(message) = value.pointer("/error/message").and_then(Value::as_str) {
                    return Err(failed(format!("it sent an error event: {message}")));
                }
                return Ok(Some(value));
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(failed(format!("an event is over {MAX_EVENT_BYTES} bytes")));
            }
            match response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => return Err(failed(format!("reading the stream failed: {e}"))),
            }
        }
    }
}

/// The chunks of one upstream `chat.completion.chunk` event: one per choice, plus one carrying
/// the usage when the event has it.
fn chunks_of_event(event: &Value) -> Vec<StreamChunk> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let mut chunks: Vec<StreamChunk> = event
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .map(|c| {
                    let delta = c.get("delta").cloned().unwrap_or(Value::Null);
                    StreamChunk {
                        index: 0,
                        choice: c
                            .get("index")
                            .and_then(Value::as_u64)
                            .and_then(|i| u32::try_from(i).ok())
                            .unwrap_or(0),
                        role: text(&delta, "role"),
                        content: text(&delta, "content"),
                        finish_reason: text(c, "finish_reason"),
                        usage: None,
                        delta_extra: delta
                            .as_object()
                            .map(|d| {
                                d.iter()
                                    .filter(|(k, v)| {
                                        !matches!(k.as_str(), "role" | "content") && !v.is_null()
                                    })
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(u) = event.get("usage").filter(|u| u.is_object()) {
        let count = |key: &str| {
            u.get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        let usage = Usage {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
        };
        match chunks.last_mut() {
            Some(last) => last.usage = Some(usage),
            None => chunks.push(StreamChunk {
                usage: Some(usage),
                ..StreamChunk::default()
            }),
        }
    }
    chunks
}

fn default_timeout_ms() -> u64 {
    60_000
}

/// Settings of an OpenAI-compatible provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key (none: no `Authorization` header,
    /// as for a local vLLM or Ollama). Shorthand for one entry of `keys`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Several keys, each from an env variable with a weight: calls use them in turn in
    /// proportion to their weights (a retry takes the next key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyConfig>,
    /// Retries of 429, 500, 502, 503, 504 and connection failures before the error goes on to
    /// the fallbacks.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Timeout of one upstream call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Models advertised by `GET /v1/models` and the only ones served; empty: any model name
    /// is forwarded.
    #[serde(default)]
    pub models: Vec<String>,
}

/// An OpenAI-compatible provider with a pooled HTTP client.
pub struct OpenAi {
    name: String,
    url: String,
    keys: KeyRing,
    retries: RetryConfig,
    models: Vec<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never printed.
        f.debug_struct("OpenAi")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    pub(super) fn new(name: &str, config: &OpenAiConfig) -> anyhow::Result<Self> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!(
                "base_url {:?} must start with http:// or https://",
                config.base_url
            );
        }
        let mut key_configs = config.keys.clone();
        if let Some(env) = &config.api_key_env {
            key_configs.insert(
                0,
                KeyConfig {
                    env: env.clone(),
                    weight: 1,
                },
            );
        }
        let keys = KeyRing::from_env(&key_configs)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client failed: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            url: format!("{base}/chat/completions"),
            keys,
            retries: config.retries,
            models: config.models.clone(),
            client,
        })
    }

    /// With a `models` list, only those models are served; without one, any name is forwarded.
    pub(super) fn check_model(&self, model: &str) -> Result<(), String> {
        if self.models.is_empty() || self.models.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(format!(
                "provider `{}` serves only the models in its config: {}",
                self.name,
                self.models.join(", ")
            ))
        }
    }

    pub(super) fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    /// Sends `body` upstream, retrying rate limits, server errors and connection failures as
    /// the provider's `retries` say (waiting as long as a `Retry-After` asks, within its cap);
    /// returns the last answer, whatever its status. The error names the provider and says
    /// whether it timed out. Timeouts are not retried: the upstream may still be working.
    async fn send(&self, body: &Value) -> Result<reqwest::Response, GatewayError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            GatewayError::new(
                500,
                format!("encoding the request for `{}`: {e}", self.name),
            )
        })?;
        let mut retry = 0;
        loop {
            let mut call = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = self.keys.next() {
                call = call.bearer_auth(key);
            }
            let (wait, outcome) = match call.send().await {
                Ok(response) if retryable_status(response.status().as_u16()) => {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    (
                        self.retries.delay(retry, retry_after.as_deref()),
                        Ok(response),
                    )
                }
                Ok(response) => return Ok(response),
                Err(e) if e.is_connect() => {
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

    fn unreachable(&self, e: &reqwest::Error) -> GatewayError {
        let what = if e.is_timeout() {
            "timed out"
        } else {
            "could not be reached"
        };
        GatewayError::new(502, format!("provider `{}` {what}: {e}", self.name))
            .with_code("provider_unreachable")
    }

    pub(super) async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        let mut body = req.to_upstream_json();
        if let Some(obj) = body.as_object_mut() {
            obj.remove("stream");
            obj.remove("stream_options");
        }
        let response = self.send(&body).await?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            GatewayError::new(
                502,
                format!("provider `{}`: reading the response failed: {e}", self.name),
            )
            .with_code("provider_unreachable")
        })?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            GatewayError::new(
                502,
                format!(
                    "provider `{}` answered HTTP {status} with a body that is not JSON: {e}",
                    self.name
                ),
            )
            .with_code("provider_bad_response")
        })?;
        if status >= 400 {
            return Err(self.upstream_error(status, &value));
        }
        ChatResponse::from_upstream_json(&self.name, value).map_err(|why| {
            GatewayError::new(
                502,
                format!(
                    "provider `{}` answered with an unexpected chat completion: {why}",
                    self.name
                ),
            )
            .with_code("provider_bad_response")
        })
    }

    /// Streams a completion: the upstream's server-sent events are parsed as they arrive and
    /// handed on as chunks through a bounded channel (usage is asked for, so post-hooks see it).
    pub(super) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, GatewayError> {
        let mut body = req.to_upstream_json();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("stream".into(), Value::Bool(true));
            obj.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
        let mut response = self.send(&body).await?;
        let status = response.status().as_u16();
        if status >= 400 {
            let body = response.bytes().await.unwrap_or_default();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(self.upstream_error(status, &value));
        }
        // The first event gives the id, model and creation time every chunk shares.
        let mut events = SseEvents::default();
        let Some(first) = events.next(&mut response, &self.name).await? else {
            return Err(self.bad_stream("the stream ended before its first event"));
        };
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let id = text(&first, "id").unwrap_or_default();
        let model = text(&first, "model").unwrap_or_else(|| req.model.clone());
        let created = first.get("created").and_then(Value::as_u64).unwrap_or(0);
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut index = 0u32;
            let mut event = Some(first);
            while let Some(value) = event.take() {
                for mut chunk in chunks_of_event(&value) {
                    chunk.index = index;
                    index = index.saturating_add(1);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                match events.next(&mut response, &name).await {
                    Ok(next) => event = next,
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                }
            }
        });
        Ok(ChatStream {
            id,
            provider: self.name.clone(),
            model,
            created,
            chunks: rx,
        })
    }

    fn bad_stream(&self, why: &str) -> GatewayError {
        GatewayError::new(
            502,
            format!("provider `{}` streamed badly: {why}", self.name),
        )
        .with_code("provider_bad_response")
    }

    /// Maps an upstream error body to a gateway error that names the provider; rate limits and
    /// server errors allow fallbacks, other client errors do not (Bifrost's decision matrix).
    fn upstream_error(&self, status: u16, body: &Value) -> GatewayError {
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
}
