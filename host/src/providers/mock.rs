//! The built-in mock provider: offline, deterministic, configurable to be slow or to fail, so
//! the gateway runs with no keys and no network and fallbacks can be tested.
//!
//! Models: `echo` (any unknown model behaves the same) answers `echo: <last user message>`;
//! `slow-<ms>` answers after `<ms>` milliseconds; `fail-<status>` fails with that HTTP status
//! the way a real provider would (429 and 5xx allow fallbacks, other 4xx do not).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::chat::{ChatRequest, ChatResponse, Choice, Message, Usage};
use crate::error::GatewayError;

/// Settings of a mock provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Delay before every answer, in milliseconds (for benchmarks).
    pub latency_ms: u64,
}

/// The mock provider.
#[derive(Debug)]
pub struct Mock {
    name: String,
    config: MockConfig,
}

/// Rough token count: one token per four bytes, at least one per non-empty text.
fn tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Mock {
    pub(super) fn new(name: &str, config: MockConfig) -> Self {
        Self {
            name: name.to_string(),
            config,
        }
    }

    pub(super) fn check_model(&self, model: &str) -> Result<(), String> {
        let ok = model == "echo"
            || model
                .strip_prefix("slow-")
                .is_some_and(|ms| ms.parse::<u64>().is_ok())
            || model
                .strip_prefix("fail-")
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|s| (400..=599).contains(&s));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "provider `{}` is the mock; it serves `echo`, `slow-<ms>` and `fail-<status>` \
                 (status 400-599)",
                self.name
            ))
        }
    }

    pub(super) fn models(&self) -> Vec<String> {
        vec!["echo".into(), "slow-100".into(), "fail-503".into()]
    }

    pub(super) async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        let mut delay = Duration::from_millis(self.config.latency_ms);
        if let Some(ms) = req.model.strip_prefix("slow-") {
            let ms: u64 = ms.parse().map_err(|_| {
                GatewayError::invalid_request(format!(
                    "mock model `{}`: `slow-<ms>` needs a number of milliseconds",
                    req.model
                ))
            })?;
            delay += Duration::from_millis(ms);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = req.model.strip_prefix("fail-") {
            return Err(self.failure(status, req));
        }
        let prompt = req
            .messages
            .iter()
            .map(|m| tokens(m.content.as_deref().unwrap_or("")) + 4)
            .sum::<u32>();
        let text = format!("echo: {}", req.last_user_text().unwrap_or(""));
        let completion = tokens(&text);
        let seed = format!("{}|{:?}", req.target(), req.messages);
        Ok(ChatResponse {
            id: format!("chatcmpl-mock-{:016x}", fnv1a(seed.as_bytes())),
            provider: self.name.clone(),
            model: req.model.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: "assistant".into(),
                    content: Some(text),
                    extra: Default::default(),
                },
                finish_reason: Some("stop".into()),
                extra: Default::default(),
            }],
            usage: Some(Usage::new(prompt, completion)),
            extra: Default::default(),
        })
    }

    fn failure(&self, status: &str, req: &ChatRequest) -> GatewayError {
        let Ok(status) = status.parse::<u16>() else {
            return GatewayError::invalid_request(format!(
                "mock model `{}`: `fail-<status>` needs an HTTP status such as 503",
                req.model
            ));
        };
        if !(400..=599).contains(&status) {
            return GatewayError::invalid_request(format!(
                "mock model `{}`: the status must be within 400..=599",
                req.model
            ));
        }
        let err = GatewayError::new(
            status,
            format!(
                "provider `{}` failed with HTTP {status} (simulated by model `{}`)",
                self.name, req.model
            ),
        )
        .with_code("provider_error");
        // Bifrost's decision matrix: rate limits and server errors may succeed elsewhere;
        // other client errors will not.
        if status == 429 || status >= 500 {
            err
        } else {
            err.no_fallbacks()
        }
    }
}
