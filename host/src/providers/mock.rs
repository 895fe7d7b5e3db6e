//! The built-in mock provider: offline, deterministic, configurable to be slow or to fail, so
//! the gateway runs with no keys and no network and fallbacks can be tested.
//!
//! Models: `echo` (any unknown model behaves the same) answers `echo: <last user message>`;
//! `slow-<ms>` answers after `<ms>` milliseconds; `fail-<status>` fails with that HTTP status
//! the way a real provider would (429 and 5xx allow fallbacks, other 4xx do not). Streamed
//! requests get the same text in `stream_chunks` pieces, `stream_delay_ms` apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use tokio::sync::mpsc;

use crate::chat::{ChatRequest, ChatResponse, Choice, Message, Usage};
use crate::error::GatewayError;
use crate::stream::{CHUNK_BUFFER, ChatStream, StreamChunk};

/// `text` cut into at most `n` pieces of nearly equal length, on character boundaries.
fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n).max(1);
    let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    if pieces.is_empty() {
        vec![String::new()]
    } else {
        pieces
    }
}

/// Settings of a mock provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Delay before every answer, in milliseconds (for benchmarks).
    pub latency_ms: u64,
    /// Pieces a streamed answer's text is cut into (at least 1).
    pub stream_chunks: u32,
    /// Delay between two streamed chunks, in milliseconds.
    pub stream_delay_ms: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            stream_chunks: 4,
            stream_delay_ms: 0,
        }
    }
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

/// FNV-1a over `parts`, each followed by a 0 byte (so ("ab", "c") and ("a", "bc") differ).
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    parts
        .into_iter()
        .flat_map(|part| part.iter().chain(&[0]))
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// A stable id for the answer to `req`: the same conversation to the same target gets the
/// same id. Hashes the texts as they are (formatting the messages first cost more than the
/// rest of the mock's answer).
fn response_id(req: &ChatRequest) -> String {
    let extras: Vec<String> = req
        .messages
        .iter()
        .filter(|m| !m.extra.is_empty())
        .map(|m| serde_json::to_string(&m.extra).unwrap_or_default())
        .collect();
    let texts = req.messages.iter().flat_map(|m| {
        [
            m.role.as_bytes(),
            m.content.as_deref().unwrap_or_default().as_bytes(),
        ]
    });
    let hash = fnv1a(
        [req.provider.as_bytes(), req.model.as_bytes()]
            .into_iter()
            .chain(texts)
            .chain(extras.iter().map(String::as_bytes)),
    );
    format!("chatcmpl-mock-{hash:016x}")
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
        Ok(ChatResponse {
            id: response_id(req),
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

    /// The answer [`Mock::chat`] gives, streamed: the text cut into `stream_chunks` pieces on
    /// character boundaries, the first with the role, then a final chunk with the finish
    /// reason and usage, `stream_delay_ms` apart. The producer stops when the stream is
    /// dropped, and waits while the consumer is [`CHUNK_BUFFER`] chunks behind.
    pub(super) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, GatewayError> {
        let response = self.chat(req).await?;
        let text = response
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        let pieces = split_even(&text, self.config.stream_chunks.max(1) as usize);
        let count = pieces.len();
        let mut chunks: Vec<StreamChunk> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| StreamChunk {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                choice: 0,
                role: (i == 0).then(|| "assistant".to_string()),
                content: Some(piece),
                ..StreamChunk::default()
            })
            .collect();
        chunks.push(StreamChunk {
            index: u32::try_from(count).unwrap_or(u32::MAX),
            finish_reason: Some("stop".into()),
            usage: response.usage,
            ..StreamChunk::default()
        });
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        let delay = Duration::from_millis(self.config.stream_delay_ms);
        tokio::spawn(async move {
            for chunk in chunks {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(ChatStream {
            id: response.id,
            provider: response.provider,
            model: response.model,
            created: response.created,
            chunks: rx,
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
