//! The Anthropic Messages API (`POST {base_url}/messages`), translated to and from the OpenAI
//! shape the gateway speaks: system messages become `system`, tool calls and tool results become
//! `tool_use` and `tool_result` blocks, tools and `tool_choice` are rewritten, stop reasons and
//! usage are mapped back, and the stream's event types (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`, `ping`, `error`) become `chat.completion.chunk`s.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::keys::KeyConfig;
use super::openai::{check_model, default_timeout_ms};
use super::retry::RetryConfig;
use super::sse::SseEvents;
use super::upstream::{Auth, Upstream, UpstreamConfig};
use crate::chat::{ChatRequest, ChatResponse, Usage};
use crate::error::GatewayError;
use crate::stream::{CHUNK_BUFFER, ChatStream, StreamChunk};

/// An Anthropic provider's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// Base URL up to and including the version.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Name of the environment variable holding the API key (shorthand for one entry of
    /// `keys`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Several keys with weights, as for OpenAI-compatible providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyConfig>,
    /// The `anthropic-version` header.
    #[serde(default = "default_version")]
    pub version: String,
    /// `max_tokens` when the request gives none (the Messages API requires one).
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// Retries of 429, 5xx (529 "overloaded" included) and connection failures.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Timeout of one upstream call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Models advertised and served; empty: any model name is forwarded.
    #[serde(default)]
    pub models: Vec<String>,
}

fn default_base_url() -> String {
    "https://api.anthropic.com/v1".into()
}

fn default_version() -> String {
    "2023-06-01".into()
}

fn default_max_tokens() -> u32 {
    4096
}

/// An Anthropic provider.
#[derive(Debug)]
pub struct Anthropic {
    upstream: Upstream,
    default_max_tokens: u32,
    models: Vec<String>,
}

impl Anthropic {
    pub(super) fn new(name: &str, config: &AnthropicConfig) -> anyhow::Result<Self> {
        let upstream = Upstream::new(
            name,
            UpstreamConfig {
                base_url: &config.base_url,
                path: "/messages",
                api_key_env: config.api_key_env.as_deref(),
                keys: &config.keys,
                timeout_ms: config.timeout_ms,
                retries: config.retries,
                auth: Auth::Anthropic {
                    version: http::HeaderValue::try_from(config.version.as_str()).map_err(
                        |_| {
                            anyhow::anyhow!(
                                "version {:?} is not a valid HTTP header value",
                                config.version
                            )
                        },
                    )?,
                },
            },
        )?;
        Ok(Self {
            upstream,
            default_max_tokens: config.default_max_tokens,
            models: config.models.clone(),
        })
    }

    pub(super) fn check_model(&self, model: &str) -> Result<(), String> {
        check_model(&self.upstream.name, &self.models, model)
    }

    pub(super) fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    pub(super) async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, GatewayError> {
        let body = to_messages(&req.to_upstream_json(), self.default_max_tokens, false)
            .map_err(GatewayError::invalid_request)?;
        let response = self.upstream.send(&body).await?;
        let value = self.upstream.json(response).await?;
        let openai = from_message(&value)
            .map_err(|why| self.upstream.bad_response(format!("answered badly: {why}")))?;
        ChatResponse::from_upstream_json(&self.upstream.name, openai)
            .map_err(|why| self.upstream.bad_response(format!("answered badly: {why}")))
    }

    pub(super) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, GatewayError> {
        let body = to_messages(&req.to_upstream_json(), self.default_max_tokens, true)
            .map_err(GatewayError::invalid_request)?;
        let mut response = self.upstream.send(&body).await?;
        if response.status().as_u16() >= 400 {
            return Err(self.upstream.error_of(response).await);
        }
        let name = self.upstream.name.clone();
        let mut events = SseEvents::default();
        let mut translator = StreamTranslator::default();
        // `message_start` gives the id and model every chunk shares.
        let Some(first) = events.next(&mut response, &name).await? else {
            return Err(self
                .upstream
                .bad_response("streamed badly: the stream ended before message_start"));
        };
        let start = translator.event(&first);
        let id = first
            .pointer("/message/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let model = first
            .pointer("/message/model")
            .and_then(Value::as_str)
            .map_or_else(|| req.model.clone(), str::to_string);
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        tokio::spawn(async move {
            let mut index = 0u32;
            let mut pending = start;
            loop {
                for mut chunk in pending.drain(..) {
                    chunk.index = index;
                    index = index.saturating_add(1);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                match events.next(&mut response, &name).await {
                    Ok(Some(event)) => pending = translator.event(&event),
                    Ok(None) => return,
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                }
            }
        });
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(ChatStream {
            id,
            provider: self.upstream.name.clone(),
            model,
            created,
            chunks: rx,
        })
    }
}

/// The text of an OpenAI message content: a string, or the text parts of a list.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// OpenAI content (a string or content parts) as Anthropic content blocks.
fn blocks_of(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => vec![],
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Some(json!({"type": "text", "text": part["text"]})),
                Some("image_url") => {
                    let url = part.pointer("/image_url/url").and_then(Value::as_str)?;
                    Some(
                        match url
                            .strip_prefix("data:")
                            .and_then(|d| d.split_once(";base64,"))
                        {
                            Some((media_type, data)) => json!({"type": "image", "source": {
                            "type": "base64", "media_type": media_type, "data": data}}),
                            None => json!({"type": "image", "source": {"type": "url", "url": url}}),
                        },
                    )
                }
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// An OpenAI chat request body as a Messages API body. The error says what cannot be
/// expressed.
pub fn to_messages(openai: &Value, default_max_tokens: u32, stream: bool) -> Result<Value, String> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        // The Messages API wants user and assistant turns to alternate: merge neighbours.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    };
    for (i, m) in openai["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => system.push(text_of(&content)),
            "user" => push("user", blocks_of(&content)),
            "assistant" => {
                let mut blocks = blocks_of(&content);
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let arguments = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value = serde_json::from_str(arguments).map_err(|e| {
                        format!("messages[{i}].tool_calls: the arguments are not JSON ({e})")
                    })?;
                    blocks.push(json!({"type": "tool_use", "id": call["id"],
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": input}));
                }
                push("assistant", blocks);
            }
            "tool" => push(
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": m["tool_call_id"],
                            "content": text_of(&content)}),
                ],
            ),
            other => {
                return Err(format!(
                    "messages[{i}]: the role {other:?} has no Anthropic equivalent"
                ));
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), openai["model"].clone());
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let max_tokens = openai
        .get("max_tokens")
        .or_else(|| openai.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(default_max_tokens));
    body.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p", "top_k"] {
        if let Some(v) = openai.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), v.clone());
        }
    }
    match openai.get("stop") {
        Some(Value::String(s)) => {
            body.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            body.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(tools) = openai.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut tool = json!({"name": f["name"],
                    "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object"}))});
                if let Some(d) = f.get("description") {
                    tool["description"] = d.clone();
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = openai.get("tool_choice") {
        let mapped = match choice {
            Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
            Value::String(s) if s == "required" => Some(json!({"type": "any"})),
            Value::String(s) if s == "none" => Some(json!({"type": "none"})),
            Value::Object(_) => choice
                .pointer("/function/name")
                .map(|name| json!({"type": "tool", "name": name})),
            _ => None,
        };
        if let Some(mapped) = mapped {
            body.insert("tool_choice".into(), mapped);
        }
    }
    if let Some(user) = openai.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(body))
}

/// An Anthropic stop reason as an OpenAI finish reason.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// A Messages API answer as an OpenAI `chat.completion` body.
pub fn from_message(message: &Value) -> Result<Value, String> {
    let blocks = message["content"]
        .as_array()
        .ok_or("the answer has no `content` list")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()}})),
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    let input = message
        .pointer("/usage/input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = message
        .pointer("/usage/output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(json!({
        "id": message["id"],
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "model": message["model"],
        "choices": [{"index": 0, "message": reply,
                     "finish_reason": finish_reason(message["stop_reason"].as_str().unwrap_or_default())}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    }))
}

/// Turns the Messages API's stream events into chunks, remembering what later events need:
/// the prompt tokens (given at the start, reported at the end) and which content blocks are
/// tool calls (and their position among the tool calls).
#[derive(Debug, Default)]
pub struct StreamTranslator {
    prompt_tokens: u32,
    role_sent: bool,
    /// Content block index -> tool call position.
    tools: Vec<(u64, u64)>,
}

impl StreamTranslator {
    /// The chunks of one event (none for `ping`, `content_block_stop`, `message_stop`).
    pub fn event(&mut self, event: &Value) -> Vec<StreamChunk> {
        let count = |v: Option<&Value>| {
            v.and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        let role = |this: &mut Self| {
            (!std::mem::replace(&mut this.role_sent, true)).then(|| "assistant".to_string())
        };
        match event["type"].as_str() {
            Some("message_start") => {
                self.prompt_tokens = count(event.pointer("/message/usage/input_tokens"));
                vec![]
            }
            Some("content_block_start")
                if event.pointer("/content_block/type") == Some(&json!("tool_use")) =>
            {
                let block = event["index"].as_u64().unwrap_or(0);
                let position = self.tools.len() as u64;
                self.tools.push((block, position));
                let call = json!({"index": position, "id": event["content_block"]["id"],
                    "type": "function",
                    "function": {"name": event["content_block"]["name"], "arguments": ""}});
                vec![StreamChunk {
                    role: role(self),
                    delta_extra: Map::from_iter([("tool_calls".to_string(), json!([call]))]),
                    ..StreamChunk::default()
                }]
            }
            Some("content_block_delta") => {
                match event.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => vec![StreamChunk {
                        role: role(self),
                        content: event
                            .pointer("/delta/text")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        ..StreamChunk::default()
                    }],
                    Some("input_json_delta") => {
                        let block = event["index"].as_u64().unwrap_or(0);
                        let position = self
                            .tools
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map_or(0, |(_, p)| *p);
                        let piece = event
                            .pointer("/delta/partial_json")
                            .cloned()
                            .unwrap_or(json!(""));
                        vec![StreamChunk {
                            delta_extra: Map::from_iter([(
                                "tool_calls".to_string(),
                                json!([{"index": position, "function": {"arguments": piece}}]),
                            )]),
                            ..StreamChunk::default()
                        }]
                    }
                    _ => vec![],
                }
            }
            Some("message_delta") => {
                let output = count(event.pointer("/usage/output_tokens"));
                vec![StreamChunk {
                    finish_reason: event
                        .pointer("/delta/stop_reason")
                        .and_then(Value::as_str)
                        .map(|s| finish_reason(s).to_string()),
                    usage: Some(Usage::new(self.prompt_tokens, output)),
                    ..StreamChunk::default()
                }]
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_system_tools_and_a_tool_round_trip_is_translated() {
        let openai = json!({
            "model": "claude-x", "max_tokens": 100, "temperature": 0.5, "stop": "END",
            "user": "u-1", "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "21C"},
                {"role": "user", "content": "Thanks"},
            ]
        });
        let body = to_messages(&openai, 4096, true).unwrap();
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
        assert_eq!(
            body["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(body["stream"], true);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(
            messages.len(),
            3,
            "the tool result and the next user turn merge: {body}"
        );
        assert_eq!(
            messages[0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(messages[2]["content"][1]["text"], "Thanks");
        // No max_tokens: the default.
        let plain = to_messages(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            77,
            false,
        )
        .unwrap();
        assert_eq!(plain["max_tokens"], 77);
        assert!(plain.get("stream").is_none());
    }

    #[test]
    fn an_answer_with_text_and_a_tool_call_is_translated_back() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}});
        let openai = from_message(&message).unwrap();
        let choice = &openai["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            openai["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
        );
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert!(from_message(&json!({"type": "message"})).is_err());
    }

    #[test]
    fn stream_events_become_chunks() {
        let mut t = StreamTranslator::default();
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
            json!({"type": "message_stop"}),
        ];
        let chunks: Vec<StreamChunk> = events.iter().flat_map(|e| t.event(e)).collect();
        let text: String = chunks.iter().filter_map(|c| c.content.clone()).collect();
        assert_eq!(text, "Hello");
        assert_eq!(chunks[0].role.as_deref(), Some("assistant"));
        assert_eq!(chunks.iter().filter(|c| c.role.is_some()).count(), 1);
        let args: String = chunks
            .iter()
            .filter_map(|c| c.delta_extra.get("tool_calls"))
            .filter_map(|t| t[0]["function"]["arguments"].as_str().map(str::to_string))
            .collect();
        assert_eq!(args, "{\"a\":1}");
        let last = chunks.last().unwrap();
        assert_eq!(last.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(last.usage, Some(Usage::new(9, 12)));
    }
}
