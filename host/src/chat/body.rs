//! The OpenAI JSON bodies the gateway sends, written straight from the typed values: the request
//! a provider gets and the response a client gets. Nothing is built as a `serde_json::Value`
//! first, and no string is copied; the output is the object [`ChatRequest::to_upstream_json`] and
//! [`ChatResponse::to_json`] describe (which are these bodies, read back).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::{ChatRequest, ChatResponse, Choice, Extra, Message, Usage};

/// Whether an upstream request body asks for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    /// As the client asked: `"stream": true` when it did, its `stream_options` kept.
    AsRequested,
    /// A whole answer: no `stream` and no `stream_options`, whatever the client asked.
    Off,
    /// A stream whose last event reports usage: `"stream": true` and
    /// `"stream_options": {"include_usage": true}`.
    WithUsage,
}

/// The body a provider is sent for a request: the model without its provider prefix, without
/// the gateway-only `fallbacks`. The typed fields are authoritative: a copy of one in `extra`
/// (which a plugin could have put there) is left out.
pub struct UpstreamBody<'a> {
    req: &'a ChatRequest,
    streaming: Streaming,
}

impl ChatRequest {
    /// The body to send upstream, streaming as `streaming` says.
    pub fn upstream_body(&self, streaming: Streaming) -> UpstreamBody<'_> {
        UpstreamBody {
            req: self,
            streaming,
        }
    }

    /// The key the token limit is sent under: the client's own when it used
    /// `max_completion_tokens`.
    fn max_tokens_key(&self) -> &'static str {
        if self.extra.contains_key("max_completion_tokens") {
            "max_completion_tokens"
        } else {
            "max_tokens"
        }
    }
}

/// Top-level request fields the typed values write (or leave out) themselves.
const TYPED_REQUEST_FIELDS: [&str; 9] = [
    "model",
    "messages",
    "fallbacks",
    "stream",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "user",
];

impl Serialize for UpstreamBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.req;
        let mut map = serializer.serialize_map(None)?;
        write_extra(&mut map, &r.extra, |key| {
            TYPED_REQUEST_FIELDS.contains(&key)
                || (key == "stream_options" && self.streaming != Streaming::AsRequested)
        })?;
        map.serialize_entry("model", &r.model)?;
        map.serialize_entry("messages", &Messages(&r.messages))?;
        if let Some(t) = r.temperature {
            map.serialize_entry("temperature", &t)?;
        }
        if let Some(p) = r.top_p {
            map.serialize_entry("top_p", &p)?;
        }
        if let Some(n) = r.max_tokens {
            map.serialize_entry(r.max_tokens_key(), &n)?;
        }
        match self.streaming {
            Streaming::AsRequested if r.stream => map.serialize_entry("stream", &true)?,
            Streaming::AsRequested | Streaming::Off => {}
            Streaming::WithUsage => {
                map.serialize_entry("stream", &true)?;
                map.serialize_entry("stream_options", &IncludeUsage)?;
            }
        }
        if let Some(user) = &r.user {
            map.serialize_entry("user", user)?;
        }
        map.end()
    }
}

/// `{"include_usage": true}`.
struct IncludeUsage;

impl Serialize for IncludeUsage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

/// The messages of a body, each as [`Message::to_json`] describes it.
struct Messages<'a>(&'a [Message]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(MessageBody))
    }
}

/// One message: its extra fields, its text as `content` (unless the original content parts in
/// `extra` still say the same) and its role.
pub(super) struct MessageBody<'a>(&'a Message);

impl Message {
    /// The message as a body writes it.
    pub(super) fn body(&self) -> MessageBody<'_> {
        MessageBody(self)
    }

    /// Whether `extra` holds the original content parts and `content` is still their text, so
    /// the parts are sent as they came.
    pub(super) fn parts_unchanged(&self) -> bool {
        match self.extra.get("content") {
            Some(Value::Array(parts)) => {
                self.content.as_deref() == Some(super::join_text_parts(parts).as_str())
            }
            _ => false,
        }
    }
}

impl Serialize for MessageBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let parts_unchanged = m.parts_unchanged();
        let mut map = serializer.serialize_map(None)?;
        write_extra(&mut map, &m.extra, |key| {
            key == "role" || (key == "content" && !parts_unchanged)
        })?;
        if !parts_unchanged {
            map.serialize_entry("content", &m.content)?;
        }
        map.serialize_entry("role", &m.role)?;
        map.end()
    }
}

/// The body a client is sent for a response (the provider is not part of it).
pub struct ResponseBody<'a>(&'a ChatResponse);

impl ChatResponse {
    /// The OpenAI JSON body to send the client.
    pub fn body(&self) -> ResponseBody<'_> {
        ResponseBody(self)
    }
}

impl Serialize for ResponseBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = serializer.serialize_map(None)?;
        // `usage` in `extra` stands when the response has none of its own.
        write_extra(&mut map, &r.extra, |key| match key {
            "id" | "created" | "model" | "choices" => true,
            "usage" => r.usage.is_some(),
            _ => false,
        })?;
        map.serialize_entry("id", &r.id)?;
        if !r.extra.contains_key("object") {
            map.serialize_entry("object", "chat.completion")?;
        }
        map.serialize_entry("created", &r.created)?;
        map.serialize_entry("model", &r.model)?;
        map.serialize_entry("choices", &Choices(&r.choices))?;
        if let Some(usage) = &r.usage {
            map.serialize_entry("usage", &UsageBody(usage))?;
        }
        map.end()
    }
}

/// The choices of a response body.
struct Choices<'a>(&'a [Choice]);

impl Serialize for Choices<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ChoiceBody))
    }
}

/// One choice: its extra fields, `index`, `message` and `finish_reason` (null when unknown).
struct ChoiceBody<'a>(&'a Choice);

impl Serialize for ChoiceBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = serializer.serialize_map(None)?;
        write_extra(&mut map, &c.extra, |key| {
            matches!(key, "index" | "message" | "finish_reason")
        })?;
        map.serialize_entry("index", &c.index)?;
        map.serialize_entry("message", &MessageBody(&c.message))?;
        map.serialize_entry("finish_reason", &c.finish_reason)?;
        map.end()
    }
}

/// The extra fields of an object but those `typed` claims: the object writes (or leaves out)
/// those itself, so no key is written twice.
fn write_extra<M: SerializeMap>(
    map: &mut M,
    extra: &Extra,
    typed: impl Fn(&str) -> bool,
) -> Result<(), M::Error> {
    for (key, value) in extra {
        if !typed(key) {
            map.serialize_entry(key, value)?;
        }
    }
    Ok(())
}

/// `{"prompt_tokens", "completion_tokens", "total_tokens"}`.
struct UsageBody<'a>(&'a Usage);

impl Serialize for UsageBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let u = self.0;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("prompt_tokens", &u.prompt_tokens)?;
        map.serialize_entry("completion_tokens", &u.completion_tokens)?;
        map.serialize_entry("total_tokens", &u.total_tokens)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// How often `"key":` occurs in the JSON text `body`.
    fn occurrences(body: &[u8], key: &str) -> usize {
        String::from_utf8_lossy(body)
            .matches(&format!("\"{key}\":"))
            .count()
    }

    #[test]
    fn upstream_bodies_write_each_key_once_and_stream_as_told() {
        // A client (or a plugin) put copies of typed fields in `extra`: the typed values win and
        // no key is written twice.
        let mut req = ChatRequest::from_json(json!({
            "model": "mock/m",
            "messages": [{"role": "user", "content": "hi", "name": "ann"}],
            "max_completion_tokens": 9,
            "stream": true,
            "stream_options": {"include_usage": false},
            "seed": 7,
        }))
        .unwrap_or_default();
        req.extra.insert("model".into(), json!("sneaky"));
        req.extra.insert("fallbacks".into(), json!(["x/y"]));
        req.messages[0].extra.insert("role".into(), json!("system"));
        for (streaming, stream, include_usage) in [
            (Streaming::AsRequested, json!(true), json!(false)),
            (Streaming::Off, Value::Null, Value::Null),
            (Streaming::WithUsage, json!(true), json!(true)),
        ] {
            let bytes = serde_json::to_vec(&req.upstream_body(streaming)).unwrap_or_default();
            for key in ["model", "messages", "max_completion_tokens", "seed", "role"] {
                assert_eq!(occurrences(&bytes, key), 1, "{key} in {streaming:?}");
            }
            for key in ["fallbacks", "max_tokens"] {
                assert_eq!(occurrences(&bytes, key), 0, "{key} in {streaming:?}");
            }
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            assert_eq!(body["model"], "m");
            assert_eq!(body["max_completion_tokens"], 9);
            assert_eq!(
                body["messages"][0],
                json!({"role": "user", "content": "hi", "name": "ann"})
            );
            assert_eq!(body["stream"], stream, "{streaming:?}");
            assert_eq!(
                body["stream_options"]["include_usage"], include_usage,
                "{streaming:?}"
            );
        }
    }

    #[test]
    fn response_bodies_keep_extra_fields_and_let_typed_ones_win() {
        let mut resp = ChatResponse {
            id: "r1".into(),
            provider: "mock".into(),
            model: "m".into(),
            created: 5,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: "assistant".into(),
                    content: Some("hello".into()),
                    extra: Extra::new(),
                },
                finish_reason: None,
                extra: [("logprobs".to_string(), Value::Null)]
                    .into_iter()
                    .collect(),
            }],
            usage: None,
            extra: Extra::new(),
        };
        resp.set_extra_fields([
            ("system_fingerprint".to_string(), json!("fp")),
            ("id".to_string(), json!("not the id")),
            ("usage".to_string(), json!({"total_tokens": 1})),
        ]);
        let bytes = serde_json::to_vec(&resp.body()).unwrap_or_default();
        assert_eq!(occurrences(&bytes, "id"), 1);
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(
            body,
            json!({
                "id": "r1",
                "object": "chat.completion",
                "created": 5,
                "model": "m",
                "system_fingerprint": "fp",
                // No usage of its own: the one in `extra` stands.
                "usage": {"total_tokens": 1},
                "choices": [{
                    "index": 0,
                    "logprobs": null,
                    "finish_reason": null,
                    "message": {"role": "assistant", "content": "hello"},
                }],
            })
        );
        resp.usage = Some(Usage::new(2, 3));
        let bytes = serde_json::to_vec(&resp.body()).unwrap_or_default();
        assert_eq!(occurrences(&bytes, "usage"), 1);
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(body["usage"]["total_tokens"], 5);
    }
}
