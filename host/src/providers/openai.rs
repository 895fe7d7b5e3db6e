//! An OpenAI-compatible upstream (OpenAI, Azure-style base URLs, vLLM, Ollama, Groq, ...):
//! `POST {base_url}/chat/completions`, non-streaming, with the key read from an env variable.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{ChatRequest, ChatResponse};
use crate::error::GatewayError;

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
    /// as for a local vLLM or Ollama).
    #[serde(default)]
    pub api_key_env: Option<String>,
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
    api_key: Option<String>,
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
        let api_key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("the API key variable `{var}` named by api_key_env is not set")
            })?),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client failed: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            url: format!("{base}/chat/completions"),
            api_key,
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

    pub(super) async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        if req.stream {
            return Err(GatewayError::invalid_request(
                "`stream: true` is not supported by this gateway yet; send the request without it",
            )
            .with_param("stream"));
        }
        let mut call = self.client.post(&self.url).json(&req.to_upstream_json());
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let response = call.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "could not be reached"
            };
            GatewayError::new(502, format!("provider `{}` {what}: {e}", self.name))
                .with_code("provider_unreachable")
        })?;
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
