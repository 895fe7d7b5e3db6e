//! Streamed completions (`stream: true`) in domain terms: the chunk, the stream a provider
//! hands back, the assembler that rebuilds the whole response from the chunks (what post-hooks
//! see once a stream ends) and the OpenAI `chat.completion.chunk` JSON of a chunk.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::chat::{ChatResponse, Choice, Message, Usage};
use crate::error::GatewayError;

/// How many chunks a provider may have produced ahead of the client: the bound that keeps a
/// slow client from making the gateway buffer without limit.
pub const CHUNK_BUFFER: usize = 8;

/// One chunk of a streamed completion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamChunk {
    /// Position in the stream, from 0.
    pub index: u32,
    /// The choice it belongs to.
    pub choice: u32,
    /// The role, on the first chunk of a choice.
    pub role: Option<String>,
    /// A piece of the generated text.
    pub content: Option<String>,
    /// Why generation stopped, on a choice's last chunk.
    pub finish_reason: Option<String>,
    /// Token accounting, on the final chunk when known.
    pub usage: Option<Usage>,
    /// The delta's other fields, passed through untouched: `tool_calls` (a tool call's name
    /// and its arguments in pieces), `refusal`, and whatever a provider adds. Plugins do not
    /// see them; a chunk a plugin emits keeps the ones of the chunk it was given.
    pub delta_extra: crate::chat::Extra,
}

/// A completion being streamed by a provider: the fields every chunk shares and a bounded
/// channel of chunks. The provider's producer stops when the receiver is dropped.
#[derive(Debug)]
pub struct ChatStream {
    /// Completion id, e.g. `chatcmpl-...`.
    pub id: String,
    /// The provider key.
    pub provider: String,
    /// The model, without the provider prefix.
    pub model: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The chunks in order; an `Err` ends the stream with that error.
    pub chunks: mpsc::Receiver<Result<StreamChunk, GatewayError>>,
}

/// The header fields a stream's chunks share.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamHead {
    /// Completion id.
    pub id: String,
    /// The provider key.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Unix time in seconds.
    pub created: u64,
}

impl ChatStream {
    /// The fields every chunk shares.
    pub fn head(&self) -> StreamHead {
        StreamHead {
            id: self.id.clone(),
            provider: self.provider.clone(),
            model: self.model.clone(),
            created: self.created,
        }
    }
}

impl StreamHead {
    /// The OpenAI `chat.completion.chunk` body of `chunk`. Usage, when the chunk carries it and
    /// the client asked for it (`stream_options.include_usage`), goes in a chunk of its own
    /// with no choices, as OpenAI sends it; that one is returned second.
    pub fn chunk_json(&self, chunk: &StreamChunk, include_usage: bool) -> (Value, Option<Value>) {
        let mut delta = serde_json::Map::new();
        if let Some(role) = &chunk.role {
            delta.insert("role".into(), json!(role));
        }
        if let Some(content) = &chunk.content {
            delta.insert("content".into(), json!(content));
        }
        for (key, value) in &chunk.delta_extra {
            delta.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let body = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": chunk.choice,
                "delta": delta,
                "finish_reason": chunk.finish_reason,
            }],
        });
        let usage = chunk.usage.filter(|_| include_usage).map(|u| {
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "total_tokens": u.total_tokens,
                },
            })
        });
        (body, usage)
    }

    /// Chunks that stream a whole response (one per choice, then a final one with the finish
    /// reason and usage): how a short-circuit response is sent to a client that asked for a
    /// stream.
    pub fn chunks_of(response: &ChatResponse) -> Vec<StreamChunk> {
        let mut chunks = Vec::new();
        for choice in &response.choices {
            chunks.push(StreamChunk {
                choice: choice.index,
                role: Some(choice.message.role.clone()),
                content: choice.message.content.clone(),
                ..StreamChunk::default()
            });
            chunks.push(StreamChunk {
                choice: choice.index,
                finish_reason: choice.finish_reason.clone(),
                ..StreamChunk::default()
            });
        }
        if let Some(last) = chunks.last_mut() {
            last.usage = response.usage;
        }
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk.index = u32::try_from(i).unwrap_or(u32::MAX);
        }
        chunks
    }
}

/// Rebuilds the complete response from the chunks the client was sent.
#[derive(Debug, Default)]
pub struct Assembler {
    head: StreamHead,
    choices: BTreeMap<u32, (String, String, Option<String>)>,
    /// Tool calls per choice, put together from their deltas (by their `index`).
    tool_calls: BTreeMap<u32, Vec<Value>>,
    usage: Option<Usage>,
}

impl Assembler {
    /// An assembler for a stream with these shared fields.
    pub fn new(head: StreamHead) -> Self {
        Self {
            head,
            ..Self::default()
        }
    }

    /// Adds a chunk that was sent.
    pub fn push(&mut self, chunk: &StreamChunk) {
        let (role, text, finish) = self
            .choices
            .entry(chunk.choice)
            .or_insert_with(|| ("assistant".into(), String::new(), None));
        if let Some(r) = &chunk.role {
            role.clone_from(r);
        }
        if let Some(c) = &chunk.content {
            text.push_str(c);
        }
        if chunk.finish_reason.is_some() {
            finish.clone_from(&chunk.finish_reason);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if let Some(deltas) = chunk
            .delta_extra
            .get("tool_calls")
            .and_then(Value::as_array)
        {
            let calls = self.tool_calls.entry(chunk.choice).or_default();
            for delta in deltas {
                merge_tool_call(calls, delta);
            }
        }
    }

    /// The response as if it had not been streamed.
    pub fn finish(mut self) -> ChatResponse {
        ChatResponse {
            id: self.head.id,
            provider: self.head.provider,
            model: self.head.model,
            created: self.head.created,
            choices: self
                .choices
                .into_iter()
                .map(|(index, (role, text, finish_reason))| Choice {
                    index,
                    message: {
                        let mut extra = crate::chat::Extra::new();
                        let calls = self.tool_calls.remove(&index).unwrap_or_default();
                        if !calls.is_empty() {
                            extra.insert("tool_calls".into(), Value::Array(calls));
                        }
                        Message {
                            role,
                            // A choice that only called tools has no text.
                            content: (!text.is_empty() || extra.is_empty()).then_some(text),
                            extra,
                        }
                    },
                    finish_reason,
                    extra: Default::default(),
                })
                .collect(),
            usage: self.usage,
            extra: Default::default(),
        }
    }
}

/// Adds one streamed tool-call delta to the calls put together so far: the first delta of a
/// call (a new `index`) brings its id, type and name; later ones bring pieces of its arguments.
fn merge_tool_call(calls: &mut Vec<Value>, delta: &Value) {
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0);
    let position = calls
        .iter()
        .position(|c| c.get("index").and_then(Value::as_u64) == Some(index));
    let Some(position) = position else {
        let mut call = delta.clone();
        if call.pointer("/function/arguments").is_none()
            && let Some(function) = call.get_mut("function").and_then(Value::as_object_mut)
        {
            function.insert("arguments".into(), json!(""));
        }
        calls.push(call);
        return;
    };
    let call = &mut calls[position];
    for key in ["id", "type"] {
        if let Some(value) = delta.get(key).filter(|v| !v.is_null()) {
            call[key] = value.clone();
        }
    }
    if let Some(name) = delta.pointer("/function/name").and_then(Value::as_str) {
        call["function"]["name"] = json!(name);
    }
    if let Some(piece) = delta.pointer("/function/arguments").and_then(Value::as_str) {
        let so_far = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        call["function"]["arguments"] = json!(so_far + piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> StreamHead {
        StreamHead {
            id: "chatcmpl-1".into(),
            provider: "mock".into(),
            model: "echo".into(),
            created: 7,
        }
    }

    #[test]
    fn chunks_reassemble_into_the_response_they_came_from() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            provider: "mock".into(),
            model: "echo".into(),
            created: 7,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: "assistant".into(),
                    content: Some("hello there".into()),
                    extra: Default::default(),
                },
                finish_reason: Some("stop".into()),
                extra: Default::default(),
            }],
            usage: Some(Usage::new(3, 2)),
            extra: Default::default(),
        };
        let mut assembler = Assembler::new(head());
        for chunk in StreamHead::chunks_of(&response) {
            assembler.push(&chunk);
        }
        assert_eq!(assembler.finish(), response);
    }

    #[test]
    fn streamed_tool_calls_pass_through_and_reassemble() {
        let delta = |v: Value| -> crate::chat::Extra { v.as_object().cloned().unwrap_or_default() };
        let chunks = [
            StreamChunk {
                role: Some("assistant".into()),
                delta_extra: delta(json!({"tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}},
                    {"index": 1, "id": "call_2", "type": "function",
                     "function": {"name": "get_time"}}]})),
                ..StreamChunk::default()
            },
            StreamChunk {
                delta_extra: delta(json!({"tool_calls": [
                    {"index": 0, "function": {"arguments": "{\"city\":"}}]})),
                ..StreamChunk::default()
            },
            StreamChunk {
                delta_extra: delta(json!({"tool_calls": [
                    {"index": 0, "function": {"arguments": "\"Paris\"}"}},
                    {"index": 1, "function": {"arguments": "{}"}}]})),
                ..StreamChunk::default()
            },
            StreamChunk {
                finish_reason: Some("tool_calls".into()),
                ..StreamChunk::default()
            },
        ];
        // Sent to the client as OpenAI deltas, untouched.
        let (body, _) = head().chunk_json(&chunks[1], false);
        assert_eq!(
            body["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":"
        );
        // Put back together for the post-hooks.
        let mut assembler = Assembler::new(head());
        for chunk in &chunks {
            assembler.push(chunk);
        }
        let response = assembler.finish();
        let message = &response.choices[0].message;
        assert_eq!(
            message.content, None,
            "a choice that only called tools has no text"
        );
        let calls = &message.extra["tool_calls"];
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        assert_eq!(
            response.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
    }

    #[test]
    fn chunk_json_has_openai_shape_and_usage_apart() {
        let chunk = StreamChunk {
            index: 3,
            choice: 0,
            content: Some("hi".into()),
            finish_reason: Some("stop".into()),
            usage: Some(Usage::new(1, 1)),
            ..StreamChunk::default()
        };
        let (body, usage) = head().chunk_json(&chunk, true);
        assert_eq!(body["object"], "chat.completion.chunk");
        assert_eq!(body["choices"][0]["delta"], json!({"content": "hi"}));
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        let usage = usage.expect("asked for");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 2);
        assert!(head().chunk_json(&chunk, false).1.is_none());
    }
}
