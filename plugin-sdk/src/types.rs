//! The world's data types, re-exported from the bindings, and helpers that keep plugins short.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::Result;
pub use crate::bindings::wasmgate::plugin::types::{
    ChatRequest, ChatResponse, Choice, ChunkOutcome, GatewayError, Headers, Hooks, HttpRequest,
    HttpResponse, HttpRewrite, Message, PostOutcome, PreOutcome, StreamChunk, TransportOutcome,
    Usage,
};

impl GatewayError {
    /// An error with an HTTP `status` (400-599) and a `message`; no kind, no code, fallbacks
    /// allowed (the gateway's default).
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        GatewayError {
            message: message.into(),
            kind: None,
            code: None,
            status,
            allow_fallbacks: None,
            headers: Vec::new(),
        }
    }

    /// Adds an HTTP header sent with the error if it reaches the client, e.g.
    /// `.header("retry-after", "30")`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the OpenAI error type, e.g. `"authentication_error"`, `"rate_limit_error"`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the machine-readable code, e.g. `"invalid_api_key"`.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sends the error to the client at once, without trying the request's fallbacks. Use it for
    /// authentication, validation and security failures.
    pub fn no_fallbacks(mut self) -> Self {
        self.allow_fallbacks = Some(false);
        self
    }

    /// Explicitly allows the gateway to try the request's fallbacks after this error.
    pub fn allow_fallbacks(mut self) -> Self {
        self.allow_fallbacks = Some(true);
        self
    }
}

impl core::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl Message {
    /// A message with a `role` and text `content` and no extra fields.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: Some(content.into()),
            extra: None,
        }
    }

    /// A `"user"` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// A `"system"` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// An `"assistant"` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

impl ChatRequest {
    /// The text of the last message whose role is `"user"`, if it has text.
    pub fn last_user_text(&self) -> Option<&str> {
        last_user_text(&self.messages)
    }

    /// A top-level field of the request body that has no typed field (from `extra`).
    pub fn extra_field(&self, key: &str) -> Option<Value> {
        extra_field(&self.extra, key)
    }

    /// Sets a top-level field of the request body that has no typed field (in `extra`).
    pub fn set_extra(&mut self, key: &str, value: impl Serialize) -> Result<()> {
        set_extra(&mut self.extra, key, value)
    }
}

/// The text of the last message in `messages` whose role is `"user"`, if it has text.
pub(crate) fn last_user_text(messages: &[Message]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_deref())
}

impl ChatResponse {
    /// A response with one assistant choice holding `text`: finish reason `"stop"`, no usage,
    /// `extra` `"{}"`, `created` now, and id `chatcmpl-<request id>` (or `chatcmpl-<now in ms>`
    /// outside a request). This is how a plugin answers a request itself.
    pub fn assistant_text(
        provider: impl Into<String>,
        model: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        let now = crate::now_ms();
        let request_id = crate::bindings::wasmgate::plugin::context::request_id();
        let id = if request_id.is_empty() {
            format!("chatcmpl-{now}")
        } else {
            format!("chatcmpl-{request_id}")
        };
        Self::with_text(id, provider, model, now / 1000, text)
    }

    /// [`ChatResponse::assistant_text`] with the id and creation time given: no host calls.
    pub fn with_text(
        id: impl Into<String>,
        provider: impl Into<String>,
        model: impl Into<String>,
        created: u64,
        text: impl Into<String>,
    ) -> Self {
        ChatResponse {
            id: id.into(),
            provider: provider.into(),
            model: model.into(),
            created,
            choices: vec![Choice {
                index: 0,
                message: Message::assistant(text),
                finish_reason: Some("stop".to_owned()),
                extra: None,
            }],
            usage: None,
            extra: "{}".to_owned(),
        }
    }

    /// The text of the first choice's message, if any.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
    }

    /// A top-level field of the response body that has no typed field (from `extra`).
    pub fn extra_field(&self, key: &str) -> Option<Value> {
        extra_field(&self.extra, key)
    }

    /// Sets a top-level field of the response body that has no typed field (in `extra`), e.g. a
    /// marker clients can observe: `resp.set_extra("x_cache", "hit")`.
    pub fn set_extra(&mut self, key: &str, value: impl Serialize) -> Result<()> {
        set_extra(&mut self.extra, key, value)
    }
}

impl HttpRequest {
    /// The first value of header `name` (matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl HttpResponse {
    /// A response with a JSON body and a `content-type: application/json` header.
    pub fn json(status: u16, body: &impl Serialize) -> Result<Self> {
        Ok(HttpResponse {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: crate::kv::to_json(body)?,
        })
    }
}

/// The first value of header `name` in `headers` (matched case-insensitively).
fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Field `key` of the JSON object text `extra`; none when absent or `extra` is not an object.
pub(crate) fn extra_field(extra: &str, key: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(extra) {
        Ok(Value::Object(mut map)) => map.remove(key),
        _ => None,
    }
}

/// Sets field `key` of the JSON object text `extra` (empty text counts as `{}`).
fn set_extra(extra: &mut String, key: &str, value: impl Serialize) -> Result<()> {
    let mut map: Map<String, Value> = if extra.trim().is_empty() {
        Map::new()
    } else {
        serde_json::from_str(extra).map_err(|e| format!("extra is not a JSON object: {e}"))?
    };
    let value = serde_json::to_value(value).map_err(|e| format!("cannot serialise {key}: {e}"))?;
    map.insert(key.to_owned(), value);
    *extra = serde_json::to_string(&map).map_err(|e| format!("cannot serialise extra: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            provider: "mock".into(),
            model: "m".into(),
            messages: vec![
                Message::system("be brief"),
                Message::user("first"),
                Message::assistant("ok"),
                Message::user("second"),
            ],
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            fallbacks: vec![],
            extra: "{}".into(),
        }
    }

    #[test]
    fn gateway_error_builder() {
        let e = GatewayError::new(401, "no")
            .kind("authentication_error")
            .code("invalid_api_key")
            .no_fallbacks();
        assert_eq!(e.status, 401);
        assert_eq!(e.kind.as_deref(), Some("authentication_error"));
        assert_eq!(e.code.as_deref(), Some("invalid_api_key"));
        assert_eq!(e.allow_fallbacks, Some(false));
        assert_eq!(e.allow_fallbacks().allow_fallbacks, Some(true));
    }

    #[test]
    fn last_user_text_is_the_latest_user_message() {
        assert_eq!(request().last_user_text(), Some("second"));
        let mut r = request();
        r.messages.retain(|m| m.role != "user");
        assert_eq!(r.last_user_text(), None);
    }

    #[test]
    fn extra_fields_round_trip() {
        let mut r = ChatResponse::with_text("id", "mock", "m", 1, "hi");
        assert_eq!(r.text(), Some("hi"));
        assert_eq!(r.extra, "{}");
        r.set_extra("x_cache", "hit").unwrap();
        assert_eq!(r.extra_field("x_cache"), Some(Value::from("hit")));
        r.extra = String::new();
        r.set_extra("a", 1).unwrap();
        assert_eq!(r.extra, r#"{"a":1}"#);
        r.extra = "[1]".into();
        assert!(r.set_extra("a", 1).is_err());
        assert_eq!(r.extra_field("a"), None);
    }

    #[test]
    fn http_headers_match_case_insensitively() {
        let req = HttpRequest {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![("x-key".into(), "v".into())],
            body: vec![],
        };
        assert_eq!(req.header("X-Key"), Some("v"));
        assert_eq!(req.header("other"), None);
    }

    #[test]
    fn types_serialise_with_serde() {
        let r = request();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ChatRequest>(&json).unwrap(), r);
    }
}
