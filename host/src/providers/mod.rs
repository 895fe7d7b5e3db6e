//! LLM providers: where a request goes after the pre-hooks. Providers know nothing of plugins.
//!
//! One file per provider; [`Provider`] is the closed set the config can name (serde-tagged by
//! `type`), and [`Providers`] routes a request by its provider key.

mod anthropic;
mod client;
mod keys;
mod mock;
mod openai;
mod retry;
mod sse;
mod upstream;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatRequest, ChatResponse};
use crate::error::GatewayError;
use crate::stream::ChatStream;

pub use anthropic::AnthropicConfig;
pub use keys::KeyConfig;
pub use mock::MockConfig;
pub use openai::OpenAiConfig;
pub use retry::RetryConfig;

/// A provider's configuration, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// The built-in offline mock.
    Mock(MockConfig),
    /// Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, Groq, ...).
    Openai(OpenAiConfig),
    /// The Anthropic Messages API, translated to and from the OpenAI shape.
    Anthropic(AnthropicConfig),
}

/// A ready provider.
#[derive(Debug)]
pub enum Provider {
    /// The built-in offline mock.
    Mock(mock::Mock),
    /// An OpenAI-compatible upstream.
    OpenAi(openai::OpenAi),
    /// An Anthropic upstream.
    Anthropic(anthropic::Anthropic),
}

impl Provider {
    /// Builds the provider named `name` from its config. Fails when a named key variable is
    /// missing or a URL is malformed.
    pub fn from_config(name: &str, config: &ProviderConfig) -> anyhow::Result<Self> {
        Ok(match config {
            ProviderConfig::Mock(c) => Provider::Mock(mock::Mock::new(name, c.clone())),
            ProviderConfig::Openai(c) => Provider::OpenAi(openai::OpenAi::new(name, c)?),
            ProviderConfig::Anthropic(c) => {
                Provider::Anthropic(anthropic::Anthropic::new(name, c)?)
            }
        })
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        match self {
            Provider::Mock(p) => p.chat(req).await,
            Provider::OpenAi(p) => p.chat(req).await,
            Provider::Anthropic(p) => p.chat(req).await,
        }
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, GatewayError> {
        match self {
            Provider::Mock(p) => p.chat_stream(req).await,
            Provider::OpenAi(p) => p.chat_stream(req).await,
            Provider::Anthropic(p) => p.chat_stream(req).await,
        }
    }

    /// Whether this provider serves `model`; the error lists what it does serve.
    fn check_model(&self, model: &str) -> Result<(), String> {
        match self {
            Provider::Mock(p) => p.check_model(model),
            Provider::OpenAi(p) => p.check_model(model),
            Provider::Anthropic(p) => p.check_model(model),
        }
    }

    fn models(&self) -> Vec<String> {
        match self {
            Provider::Mock(p) => p.models(),
            Provider::OpenAi(p) => p.models(),
            Provider::Anthropic(p) => p.models(),
        }
    }
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// `provider/model`.
    pub id: String,
    /// The provider key.
    pub owned_by: String,
}

/// Every configured provider, by key.
#[derive(Debug, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
    /// Configured fallbacks by `provider/model` or `provider`.
    fallbacks: BTreeMap<String, Vec<String>>,
}

impl Providers {
    /// Builds every configured provider; the error names the provider that failed.
    pub fn from_config(configs: &BTreeMap<String, ProviderConfig>) -> anyhow::Result<Self> {
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            let provider = Provider::from_config(name, config)
                .map_err(|e| anyhow::anyhow!("provider `{name}`: {e:#}"))?;
            by_name.insert(name.clone(), provider);
        }
        Ok(Self {
            by_name,
            fallbacks: BTreeMap::new(),
        })
    }

    /// Sets the configured fallbacks (`Config::fallbacks`).
    pub fn with_fallbacks(mut self, fallbacks: BTreeMap<String, Vec<String>>) -> Self {
        self.fallbacks = fallbacks;
        self
    }

    /// The configured fallbacks of `provider/model`: its own entry, else its provider's, else
    /// none.
    pub fn fallbacks_for(&self, provider: &str, model: &str) -> &[String] {
        if self.fallbacks.is_empty() {
            return &[];
        }
        self.fallbacks
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.fallbacks.get(provider))
            .map_or(&[], Vec::as_slice)
    }

    /// Checks that `provider/model` names a configured provider that serves the model: a 404
    /// (no fallbacks) naming what is served otherwise.
    pub fn check_target(&self, provider: &str, model: &str) -> Result<&Provider, GatewayError> {
        let target = || format!("{provider}/{model}");
        let Some(found) = self.by_name.get(provider) else {
            let target = target();
            let known = self.by_name.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(GatewayError::not_found(
                format!(
                    "unknown provider `{provider}` in `{target}`; configured providers: {known}. \
                     GET /v1/models lists what this gateway serves"
                ),
                "model_not_found",
            )
            .with_param("model"));
        };
        found.check_model(model).map_err(|why| {
            GatewayError::not_found(
                format!("unknown model `{}`: {why}", target()),
                "model_not_found",
            )
            .with_param("model")
        })?;
        Ok(found)
    }

    /// Sends a request to its provider.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        self.check_target(&req.provider, &req.model)?
            .chat(req)
            .await
    }

    /// Sends a request to its provider and streams the answer.
    pub async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, GatewayError> {
        self.check_target(&req.provider, &req.model)?
            .chat_stream(req)
            .await
    }

    /// The models every provider advertises.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.by_name
            .iter()
            .flat_map(|(name, p)| {
                p.models().into_iter().map(move |m| ModelInfo {
                    id: format!("{name}/{m}"),
                    owned_by: name.clone(),
                })
            })
            .collect()
    }
}
