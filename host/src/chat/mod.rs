//! Chat completion requests and responses: the typed OpenAI shapes the pipeline carries, and
//! their lossless conversion from and to OpenAI JSON.
//!
//! Fields plugins need are typed; every other field stays in an `extra` JSON object, so a round
//! trip (client -> plugins -> provider -> plugins -> client) loses nothing. Parsing is here; the
//! bodies the gateway sends are written by `body.rs` ([`UpstreamBody`], [`ResponseBody`]).

mod body;

use serde_json::{Map, Value};

pub use body::{ResponseBody, Streaming, UpstreamBody};

use crate::error::GatewayError;

/// A JSON object holding the fields that have no typed home.
pub type Extra = Map<String, Value>;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// "system", "user", "assistant", "tool", ...
    pub role: String,
    /// The text; for a list of content parts, their text parts joined with "\n".
    pub content: Option<String>,
    /// Every other field; holds the original content parts under "content" when there were any.
    pub extra: Extra,
}

/// A chat completion request addressed to `provider/model`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// Provider key, e.g. "mock".
    pub provider: String,
    /// Model name without the provider prefix.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// `max_tokens`, or `max_completion_tokens` when the client used that key (it then stays in
    /// `extra` so it is sent back under the same key).
    pub max_tokens: Option<u32>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// End-user id.
    pub user: Option<String>,
    /// Fallback targets as "provider/model".
    pub fallbacks: Vec<String>,
    /// Every other top-level field.
    pub extra: Extra,
}

/// Token accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// One completion choice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Choice {
    /// Position in the response.
    pub index: u32,
    /// The generated message.
    pub message: Message,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Every other field of the choice.
    pub extra: Extra,
}

/// A chat completion response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// Provider that produced it (not part of the OpenAI body).
    pub provider: String,
    /// Model that produced it.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token accounting.
    pub usage: Option<Usage>,
    /// Every other top-level field.
    pub extra: Extra,
}

/// Splits a `provider/model` address. The model part may itself contain slashes
/// (`openai/org/model`), the provider part may not.
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    let (provider, model) = target.split_once('/')?;
    (!provider.is_empty() && !model.is_empty()).then_some((provider, model))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> GatewayError {
    GatewayError::invalid_request(format!(
        "`{param}` must be {expected}, got {}",
        type_name(got)
    ))
    .with_param(param.to_string())
}

fn opt_f64(obj: &mut Extra, key: &str) -> Result<Option<f64>, GatewayError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(wrong_type(key, "a number", &other)),
    }
}

fn opt_u32(value: Option<&Value>, key: &str) -> Result<Option<u32>, GatewayError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                GatewayError::invalid_request(format!(
                    "`{key}` must be a non-negative integer below 2^32, got {n}"
                ))
                .with_param(key.to_string())
            }),
        Some(other) => Err(wrong_type(key, "an integer", other)),
    }
}

fn opt_string(obj: &mut Extra, key: &str, param: &str) -> Result<Option<String>, GatewayError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(param, "a string", &other)),
    }
}

/// The text parts of an OpenAI content-part list, joined with "\n".
fn join_text_parts(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Message {
    /// Parses one message; `index` names it in errors.
    fn from_json(value: Value, index: usize) -> Result<Self, GatewayError> {
        // Named only when something is wrong: formatting it for every message cost more than
        // the rest of the check.
        let param = |field: &str| format!("messages[{index}]{field}");
        let Value::Object(mut obj) = value else {
            return Err(wrong_type(&param(""), "a message object", &value));
        };
        let role = match obj.remove("role") {
            Some(Value::String(role)) => role,
            Some(other) => return Err(wrong_type(&param(".role"), "a string", &other)),
            None => {
                let role = param(".role");
                return Err(
                    GatewayError::invalid_request(format!("`{role}` is required")).with_param(role),
                );
            }
        };
        let content = match obj.remove("content") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(Value::Array(parts)) => {
                let text = join_text_parts(&parts);
                obj.insert("content".into(), Value::Array(parts));
                Some(text)
            }
            Some(other) => {
                return Err(wrong_type(
                    &param(".content"),
                    "a string, an array of content parts or null",
                    &other,
                ));
            }
        };
        Ok(Self {
            role,
            content,
            extra: obj,
        })
    }

    /// The OpenAI JSON of this message. Original content parts are kept unless `content` was
    /// changed, in which case the new text replaces them.
    pub fn to_json(&self) -> Value {
        to_value(&self.body())
    }
}

/// What a body serialises to as a value. It cannot fail: every map key is a string.
fn to_value(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

impl ChatRequest {
    /// Parses an OpenAI chat completion request body. Every problem is a 400 that names the
    /// offending field.
    pub fn from_json_bytes(body: &[u8]) -> Result<Self, GatewayError> {
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            GatewayError::invalid_request(format!(
                "request body is not valid JSON: {err}; send an OpenAI chat completion request \
                 such as {{\"model\": \"mock/echo\", \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"
            ))
            .with_code("invalid_json")
        })?;
        Self::from_json(value)
    }

    /// Parses an OpenAI chat completion request from a JSON value.
    pub fn from_json(value: Value) -> Result<Self, GatewayError> {
        let mut obj = match value {
            Value::Object(obj) => obj,
            other => return Err(wrong_type("body", "a JSON object", &other)),
        };
        let target = match obj.remove("model") {
            Some(Value::String(model)) => model,
            Some(other) => return Err(wrong_type("model", "a string", &other)),
            None => {
                return Err(GatewayError::invalid_request(
                    "`model` is required; address it as provider/model, e.g. \"mock/echo\"",
                )
                .with_param("model"));
            }
        };
        let (provider, model) = parse_target(&target, "model")?;
        let messages = match obj.remove("messages") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .enumerate()
                .map(|(i, m)| Message::from_json(m, i))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => {
                return Err(GatewayError::invalid_request(
                    "`messages` must contain at least one message",
                )
                .with_param("messages"));
            }
            Some(other) => return Err(wrong_type("messages", "an array of messages", &other)),
            None => {
                return Err(
                    GatewayError::invalid_request("`messages` is required").with_param("messages")
                );
            }
        };
        let temperature = opt_f64(&mut obj, "temperature")?;
        let top_p = opt_f64(&mut obj, "top_p")?;
        // `max_tokens` and its newer name `max_completion_tokens` are one limit: null counts as
        // absent, and two different values are refused rather than one silently dropped.
        let completion = opt_u32(obj.get("max_completion_tokens"), "max_completion_tokens")?;
        let max_tokens = match obj.remove("max_tokens") {
            None | Some(Value::Null) => completion,
            Some(value) => {
                let n = opt_u32(Some(&value), "max_tokens")?;
                if completion.is_some() && completion != n {
                    return Err(GatewayError::invalid_request(
                        "`max_tokens` and `max_completion_tokens` disagree; send one of them",
                    )
                    .with_param("max_tokens"));
                }
                n
            }
        };
        let stream = match obj.remove("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(other) => return Err(wrong_type("stream", "a boolean", &other)),
        };
        let user = opt_string(&mut obj, "user", "user")?;
        let fallbacks = match obj.remove("fallbacks") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let param = format!("fallbacks[{i}]");
                    match item {
                        Value::String(target) => {
                            parse_target(&target, &param)?;
                            Ok(target)
                        }
                        other => Err(wrong_type(&param, "a \"provider/model\" string", &other)),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(wrong_type(
                    "fallbacks",
                    "an array of \"provider/model\" strings",
                    &other,
                ));
            }
        };
        Ok(Self {
            provider: provider.to_string(),
            model: model.to_string(),
            messages,
            temperature,
            top_p,
            max_tokens,
            stream,
            user,
            fallbacks,
            extra: obj,
        })
    }

    /// The `provider/model` address of this request.
    pub fn target(&self) -> String {
        // Not `format!`: this runs on every request, and the formatting machinery costs more
        // than the copy.
        let mut target = String::with_capacity(self.provider.len() + 1 + self.model.len());
        target.push_str(&self.provider);
        target.push('/');
        target.push_str(&self.model);
        target
    }

    /// Points the request at another `provider/model` (for a fallback attempt).
    pub fn retarget(&mut self, target: &str) -> Result<(), GatewayError> {
        let (provider, model) = parse_target(target, "fallbacks")?;
        self.provider = provider.to_string();
        self.model = model.to_string();
        Ok(())
    }

    /// The text of the last user message, if any.
    pub fn last_user_text(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| m.content.as_deref())
    }

    /// The OpenAI body to send upstream, as a value: [`Self::upstream_body`] with the stream
    /// the client asked for.
    pub fn to_upstream_json(&self) -> Value {
        to_value(&self.upstream_body(Streaming::AsRequested))
    }
}

fn parse_target<'a>(target: &'a str, param: &str) -> Result<(&'a str, &'a str), GatewayError> {
    split_target(target).ok_or_else(|| {
        GatewayError::invalid_request(format!(
            "`{param}` must be addressed as provider/model (e.g. \"mock/echo\" or \
             \"openai/gpt-4o-mini\"), got {target:?}"
        ))
        .with_param(param.to_string())
    })
}

impl Usage {
    /// Usage with the total computed.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

impl ChatResponse {
    /// The top-level body fields the response types itself; `extra` never overrides them.
    pub const TYPED_FIELDS: [&'static str; 5] = ["id", "created", "model", "choices", "usage"];

    /// Sets top-level body fields kept in `extra`, in order (a later one of the same name
    /// wins). Names in [`Self::TYPED_FIELDS`] are the caller's to refuse: set here, they would
    /// be overridden when the body is written.
    pub fn set_extra_fields(&mut self, fields: impl IntoIterator<Item = (String, Value)>) {
        self.extra.extend(fields);
    }

    /// The OpenAI JSON body sent to the client, as a value ([`Self::body`]).
    pub fn to_json(&self) -> Value {
        to_value(&self.body())
    }

    /// Parses an upstream OpenAI chat completion body. The error says what is missing.
    pub fn from_upstream_json(provider: &str, value: Value) -> Result<Self, String> {
        let Value::Object(mut obj) = value else {
            return Err(format!("expected a JSON object, got {}", type_name(&value)));
        };
        let id = match obj.remove("id") {
            Some(Value::String(id)) => id,
            _ => String::new(),
        };
        let model = match obj.remove("model") {
            Some(Value::String(model)) => model,
            _ => String::new(),
        };
        let created = obj.remove("created").and_then(|c| c.as_u64()).unwrap_or(0);
        let usage = match obj.remove("usage") {
            Some(Value::Object(u)) => Some(Usage {
                prompt_tokens: count(&u, "prompt_tokens"),
                completion_tokens: count(&u, "completion_tokens"),
                total_tokens: count(&u, "total_tokens"),
            }),
            _ => None,
        };
        let choices = match obj.remove("choices") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let Value::Object(mut c) = item else {
                        return Err(format!("choices[{i}] is not an object"));
                    };
                    let index = c
                        .remove("index")
                        .and_then(|v| v.as_u64())
                        .and_then(|v| u32::try_from(v).ok())
                        .unwrap_or(u32::try_from(i).unwrap_or(u32::MAX));
                    let message = match c.remove("message") {
                        Some(m) => Message::from_json(m, i).map_err(|e| e.message)?,
                        None => return Err(format!("choices[{i}].message is missing")),
                    };
                    let finish_reason = match c.remove("finish_reason") {
                        Some(Value::String(s)) => Some(s),
                        _ => None,
                    };
                    Ok(Choice {
                        index,
                        message,
                        finish_reason,
                        extra: c,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("`choices` is missing or not an array".into()),
        };
        Ok(Self {
            id,
            provider: provider.to_string(),
            model,
            created,
            choices,
            usage,
            extra: obj,
        })
    }
}

fn count(obj: &Extra, key: &str) -> u32 {
    obj.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Parses text that must hold a JSON object (an `extra` field coming back from a plugin); the
/// empty string counts as `{}`.
pub fn parse_extra(text: &str) -> Result<Extra, String> {
    if text.trim().is_empty() {
        return Ok(Extra::new());
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(format!("must be a JSON object, got {}", type_name(&other))),
        Err(err) => Err(format!("is not valid JSON: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        ChatRequest::from_json(v)
    }

    #[test]
    fn parses_typed_fields_and_keeps_the_rest() {
        let req = parse(json!({
            "model": "openai/gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "temperature": 0.5, "max_tokens": 12, "stream": false, "user": "u1",
            "fallbacks": ["mock/echo"], "seed": 7, "tools": [{"type": "function"}]
        }))
        .expect("valid request");
        assert_eq!(req.provider, "openai");
        assert_eq!(req.model, "gpt-4o-mini");
        assert_eq!(req.messages[0].content.as_deref(), Some("hi"));
        assert_eq!(req.messages[0].extra["name"], "bob");
        assert_eq!(req.max_tokens, Some(12));
        assert_eq!(req.fallbacks, vec!["mock/echo"]);
        let up = req.to_upstream_json();
        assert_eq!(up["model"], "gpt-4o-mini");
        assert_eq!(up["seed"], 7);
        assert_eq!(up["tools"][0]["type"], "function");
        assert_eq!(up["messages"][0]["name"], "bob");
        assert!(up.get("fallbacks").is_none());
    }

    #[test]
    fn content_parts_survive_unless_text_changes() {
        let parts = json!([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}]);
        let mut req =
            parse(json!({"model": "mock/echo", "messages": [{"role": "user", "content": parts}]}))
                .expect("valid");
        assert_eq!(req.messages[0].content.as_deref(), Some("a\nb"));
        assert_eq!(req.to_upstream_json()["messages"][0]["content"], parts);
        req.messages[0].content = Some("redacted".into());
        assert_eq!(req.to_upstream_json()["messages"][0]["content"], "redacted");
    }

    #[test]
    fn max_tokens_null_or_equal_to_max_completion_tokens_is_one_limit() {
        let base = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]});
        let with = |extra: Value| {
            let mut v = base.clone();
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            ChatRequest::from_json(v)
        };
        let req = with(json!({"max_tokens": null, "max_completion_tokens": 5})).unwrap();
        assert_eq!(req.max_tokens, Some(5));
        assert_eq!(req.to_upstream_json()["max_completion_tokens"], 5);
        let req = with(json!({"max_tokens": 5, "max_completion_tokens": 5})).unwrap();
        assert_eq!(req.max_tokens, Some(5));
        let err = with(json!({"max_tokens": 4, "max_completion_tokens": 5})).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("disagree"), "{}", err.message);
    }

    #[test]
    fn typed_fields_win_over_copies_in_extra() {
        let mut req =
            parse(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]}))
                .unwrap();
        req.extra.insert("stream".into(), json!(true));
        req.extra.insert("fallbacks".into(), json!(["x/y"]));
        req.extra.insert("temperature".into(), json!(2));
        let up = req.to_upstream_json();
        assert!(up.get("stream").is_none() && up.get("fallbacks").is_none());
        assert!(up.get("temperature").is_none());
    }

    #[test]
    fn max_completion_tokens_keeps_its_key() {
        let mut req = parse(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5}))
            .expect("valid");
        assert_eq!(req.max_tokens, Some(5));
        req.max_tokens = Some(9);
        let up = req.to_upstream_json();
        assert_eq!(up["max_completion_tokens"], 9);
        assert!(up.get("max_tokens").is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([]), "body"),
            (json!({"messages": []}), "model"),
            (json!({"model": "echo", "messages": []}), "model"),
            (json!({"model": "mock/echo"}), "messages"),
            (json!({"model": "mock/echo", "messages": []}), "messages"),
            (
                json!({"model": "mock/echo", "messages": [{"content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "mock/echo", "messages": [{"role": "user", "content": 3}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "mock/echo", "messages": [{"role": "user"}], "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"model": "mock/echo", "messages": [{"role": "user"}], "max_tokens": -1}),
                "max_tokens",
            ),
            (
                json!({"model": "mock/echo", "messages": [{"role": "user"}], "fallbacks": ["nope"]}),
                "fallbacks[0]",
            ),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).expect_err("invalid request");
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
        }
        let err = ChatRequest::from_json_bytes(b"{\"model\":").expect_err("truncated");
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
    }

    #[test]
    fn response_round_trips_through_openai_json() {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 10, "model": "gpt",
            "system_fingerprint": "fp",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hey", "refusal": null},
                          "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        });
        let resp = ChatResponse::from_upstream_json("openai", body.clone()).expect("valid");
        assert_eq!(resp.usage, Some(Usage::new(3, 1)));
        assert_eq!(resp.to_json(), body);
    }
}
