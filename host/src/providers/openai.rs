//! An OpenAI-compatible upstream (OpenAI, Azure-style base URLs, vLLM, Ollama, Groq, ...):
//! `POST {base_url}/chat/completions`, plain or streamed (server-sent events), with keys read
//! from env variables and used by weight, and retries of rate limits, server errors and
//! connection failures.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use tokio::sync::mpsc;

use super::keys::KeyConfig;
use super::retry::RetryConfig;
use super::sse::SseEvents;
use super::upstream::{Auth, Upstream, UpstreamConfig};
use crate::chat::{ChatRequest, ChatResponse, Streaming, Usage};
use crate::error::GatewayError;
use crate::stream::{CHUNK_BUFFER, ChatStream, StreamChunk};

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

pub(super) fn default_timeout_ms() -> u64 {
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
    /// The header that carries the key as is, instead of `Authorization: Bearer <key>`: e.g.
    /// `api-key` for Azure OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_header: Option<String>,
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

/// An OpenAI-compatible provider.
#[derive(Debug)]
pub struct OpenAi {
    upstream: Upstream,
    models: Vec<String>,
}

impl OpenAi {
    pub(super) fn new(name: &str, config: &OpenAiConfig) -> anyhow::Result<Self> {
        let upstream = Upstream::new(
            name,
            UpstreamConfig {
                base_url: &config.base_url,
                path: "/chat/completions",
                api_key_env: config.api_key_env.as_deref(),
                keys: &config.keys,
                timeout_ms: config.timeout_ms,
                retries: config.retries,
                auth: match &config.key_header {
                    Some(name) => Auth::Header(
                        http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            anyhow::anyhow!("key_header {name:?} is not a valid HTTP header name")
                        })?,
                    ),
                    None => Auth::Bearer,
                },
            },
        )?;
        Ok(Self {
            upstream,
            models: config.models.clone(),
        })
    }

    /// With a `models` list, only those models are served; without one, any name is forwarded.
    pub(super) fn check_model(&self, model: &str) -> Result<(), String> {
        check_model(&self.upstream.name, &self.models, model)
    }

    pub(super) fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    pub(super) async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        let body = req.upstream_body(Streaming::Off);
        let response = self.upstream.send(&body).await?;
        let value = self.upstream.json(response).await?;
        ChatResponse::from_upstream_json(&self.upstream.name, value).map_err(|why| {
            self.upstream.bad_response(format!(
                "answered with an unexpected chat completion: {why}"
            ))
        })
    }

    /// Streams a completion: the upstream's server-sent events are parsed as they arrive and
    /// handed on as chunks through a bounded channel (usage is asked for, so post-hooks see it).
    pub(super) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, GatewayError> {
        let body = req.upstream_body(Streaming::WithUsage);
        let mut response = self.upstream.send(&body).await?;
        if response.status().as_u16() >= 400 {
            return Err(self.upstream.error_of(response).await);
        }
        // The first event gives the id, model and creation time every chunk shares.
        let mut events = SseEvents::default();
        let name = self.upstream.name.clone();
        let Some(first) = events.next(&mut response, &name).await? else {
            return Err(self
                .upstream
                .bad_response("streamed badly: the stream ended before its first event"));
        };
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let id = text(&first, "id").unwrap_or_default();
        let model = text(&first, "model").unwrap_or_else(|| req.model.clone());
        let created = first.get("created").and_then(Value::as_u64).unwrap_or(0);
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
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
            provider: self.upstream.name.clone(),
            model,
            created,
            chunks: rx,
        })
    }
}

/// With a `models` list, only those models are served; without one, any name is forwarded.
pub(super) fn check_model(provider: &str, models: &[String], model: &str) -> Result<(), String> {
    if models.is_empty() || models.iter().any(|m| m == model) {
        Ok(())
    } else {
        Err(format!(
            "provider `{provider}` serves only the models in its config: {}",
            models.join(", ")
        ))
    }
}
