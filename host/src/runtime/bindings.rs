//! The only `bindgen!` of the host, and the conversions between the generated types and the
//! gateway's domain types. Generated types never leave this module.

use super::exchange::Annotations;
use crate::chat::{self, ChatRequest, ChatResponse, Choice, Message, Usage};
use crate::error::GatewayError;
use crate::hooks::{
    self, ChunkOutcome, HookSet, HttpRequest, Outcome, PostDecision, PreOutcome, TransportOutcome,
};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        // Only the key-value store may wait (a shared backend is remote); logging, the clock
        // and the request context answer from memory, so they are plain calls: an async
        // import costs ~1,000 instructions more per call (measured with `just instructions`).
        imports: {
            "wasmgate:plugin/kv.get": async | trappable,
            "wasmgate:plugin/kv.set": async | trappable,
            "wasmgate:plugin/kv.incr": async | trappable,
            "wasmgate:plugin/kv.delete": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        // The request and outcome a hook is lent are the gateway's own values, read through
        // these handles on demand (see `exchange.rs`).
        with: {
            "wasmgate:plugin/exchange.request": super::super::exchange::LentRequest,
            "wasmgate:plugin/exchange.outcome": super::super::exchange::LentOutcome,
        },
        // Hooks that are handed a value (the transport interceptor, stream-chunk, on-error) get
        // borrowed views of the gateway's values (`*Param<'a>`, lowered straight from them) and
        // return owned ones (`*Result`); the pre- and post-hook are lent a handle instead.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

pub(crate) use generated::wasmgate::plugin::{
    clock, context, digest, exchange, kv, logging, types,
};
mod exports;

pub(crate) use exports::{ExportIndices, Exports};
pub(crate) use generated::Plugin;
use types::Hooks;

/// Converts a JSON object to the text form that crosses the boundary.
pub(crate) fn extra_text(extra: &chat::Extra) -> String {
    if extra.is_empty() {
        return "{}".to_string();
    }
    // A map of JSON values always serializes.
    serde_json::to_string(extra).unwrap_or_default()
}

fn opt_extra_text(extra: &chat::Extra) -> Option<String> {
    (!extra.is_empty()).then(|| extra_text(extra))
}

/// Parses a returned `extra`; `what` names its owner in the error (built only on error).
fn parse_extra(text: &str, what: impl Fn() -> String) -> Result<chat::Extra, String> {
    chat::parse_extra(text).map_err(|e| format!("{}.extra {e}", what()))
}

fn parse_opt_extra(text: Option<&str>, what: impl Fn() -> String) -> Result<chat::Extra, String> {
    text.map_or_else(|| Ok(chat::Extra::new()), |t| parse_extra(t, what))
}

/// What a plugin's `hooks` export declares.
#[derive(Debug, Clone, Copy)]
pub(super) struct Declared {
    /// The hooks it implements.
    pub hooks: HookSet,
    /// Whether it keeps nothing about a request in its memory between hooks, so its instances
    /// may be shared per hook call (the `shared-instances` flag).
    pub shared_instances: bool,
}

impl From<Hooks> for Declared {
    fn from(h: Hooks) -> Self {
        Declared {
            hooks: HookSet {
                transport_interceptor: h.contains(Hooks::TRANSPORT_INTERCEPTOR),
                pre_hook: h.contains(Hooks::PRE_HOOK),
                post_hook: h.contains(Hooks::POST_HOOK),
                stream_chunk: h.contains(Hooks::STREAM_CHUNK),
                on_error: h.contains(Hooks::ON_ERROR),
                cleanup: h.contains(Hooks::CLEANUP),
            },
            shared_instances: h.contains(Hooks::SHARED_INSTANCES),
        }
    }
}

/// A domain message -> the WIT message a plugin reads.
fn message_to_wit(m: &Message) -> types::Message {
    types::Message {
        role: m.role.clone(),
        content: m.content.clone(),
        extra: opt_extra_text(&m.extra),
    }
}

fn message_from_wit(m: types::Message, what: impl Fn() -> String) -> Result<Message, String> {
    Ok(Message {
        extra: parse_opt_extra(m.extra.as_deref(), what)?,
        role: m.role,
        content: m.content,
    })
}

/// Domain messages -> the WIT messages a plugin reads (`request.messages`).
pub(crate) fn messages_to_wit(messages: &[Message]) -> Vec<types::Message> {
    messages.iter().map(message_to_wit).collect()
}

/// A domain request -> the whole WIT request a plugin reads (`request.get`); its `extra`
/// objects are written out as JSON text.
pub(crate) fn request_to_wit(r: &ChatRequest) -> types::ChatRequest {
    types::ChatRequest {
        provider: r.provider.clone(),
        model: r.model.clone(),
        messages: messages_to_wit(&r.messages),
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_tokens,
        stream: r.stream,
        user: r.user.clone(),
        fallbacks: r.fallbacks.clone(),
        extra: extra_text(&r.extra),
    }
}

/// WIT request -> domain request; the error says which field a plugin broke.
fn request_from_wit(r: types::ChatRequest) -> Result<ChatRequest, String> {
    if r.provider.is_empty() || r.model.is_empty() {
        return Err(format!(
            "returned a request with an empty provider or model ({:?}/{:?})",
            r.provider, r.model
        ));
    }
    for (i, target) in r.fallbacks.iter().enumerate() {
        if chat::split_target(target).is_none() {
            return Err(format!(
                "returned fallbacks[{i}] = {target:?}, which is not a provider/model address"
            ));
        }
    }
    let messages = (r.messages.into_iter().enumerate())
        .map(|(i, m)| message_from_wit(m, || format!("messages[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChatRequest {
        extra: parse_extra(&r.extra, || "request".to_string())?,
        provider: r.provider,
        model: r.model,
        messages,
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_tokens,
        stream: r.stream,
        user: r.user,
        fallbacks: r.fallbacks,
    })
}

/// Domain token accounting -> WIT.
pub(crate) fn usage_to_wit(u: Usage) -> types::Usage {
    types::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

fn usage_from_wit(u: types::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

/// A domain response -> the whole WIT response a plugin reads; its `extra` objects are
/// written out as JSON text.
fn response_to_wit(r: &ChatResponse) -> types::ChatResponse {
    types::ChatResponse {
        id: r.id.clone(),
        provider: r.provider.clone(),
        model: r.model.clone(),
        created: r.created,
        choices: (r.choices.iter())
            .map(|c| types::Choice {
                index: c.index,
                message: message_to_wit(&c.message),
                finish_reason: c.finish_reason.clone(),
                extra: opt_extra_text(&c.extra),
            })
            .collect(),
        usage: r.usage.map(usage_to_wit),
        extra: extra_text(&r.extra),
    }
}

fn response_from_wit(r: types::ChatResponse) -> Result<ChatResponse, String> {
    let choices = (r.choices.into_iter().enumerate())
        .map(|(i, c)| {
            Ok(Choice {
                index: c.index,
                message: message_from_wit(c.message, || format!("choices[{i}].message"))?,
                finish_reason: c.finish_reason,
                extra: parse_opt_extra(c.extra.as_deref(), || format!("choices[{i}]"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ChatResponse {
        extra: parse_extra(&r.extra, || "response".to_string())?,
        id: r.id,
        provider: r.provider,
        model: r.model,
        created: r.created,
        choices,
        usage: r.usage.map(usage_from_wit),
    })
}

/// A domain outcome -> the whole WIT outcome a plugin reads (`outcome.get`).
pub(crate) fn outcome_to_wit(o: &Outcome) -> types::PostOutcome {
    match o {
        Ok(r) => types::PostOutcome::Response(response_to_wit(r)),
        Err(e) => types::PostOutcome::Error(error_to_wit(e)),
    }
}

/// Whether `name: value` is a valid HTTP header (RFC 9110 token name; value without control
/// characters other than tab).
fn valid_header(name: &str, value: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(token)
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Headers lent to a hook.
fn headers_param(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// An error lent to a hook; `headers` is [`headers_param`] of its headers.
fn error_param<'a>(
    e: &'a GatewayError,
    headers: &'a [(&'a str, &'a str)],
) -> types::GatewayErrorParam<'a> {
    types::GatewayErrorParam {
        message: &e.message,
        kind: e.kind.as_deref(),
        code: e.code.as_deref(),
        status: e.status,
        allow_fallbacks: e.allow_fallbacks,
        headers,
    }
}

/// A domain error -> the WIT error a plugin reads (`outcome.error`, `outcome.get`).
pub(crate) fn error_to_wit(e: &GatewayError) -> types::GatewayErrorResult {
    types::GatewayErrorResult {
        message: e.message.clone(),
        kind: e.kind.clone(),
        code: e.code.clone(),
        status: e.status,
        allow_fallbacks: e.allow_fallbacks,
        headers: e.headers.to_vec(),
    }
}

/// Lends `e` to `f` as the WIT error a hook is called with.
pub(crate) async fn with_error_wit<R>(
    e: &GatewayError,
    f: impl AsyncFnOnce(&types::GatewayErrorParam<'_>) -> R,
) -> R {
    let headers = headers_param(&e.headers);
    f(&error_param(e, &headers)).await
}

/// WIT error -> domain error; the status must be an HTTP error status and header names and
/// values must be valid HTTP.
pub(crate) fn error_from_wit(e: types::GatewayErrorResult) -> Result<GatewayError, String> {
    if !(400..=599).contains(&e.status) {
        return Err(format!(
            "returned a gateway-error with status {}, outside 400..=599",
            e.status
        ));
    }
    let mut headers = Vec::with_capacity(e.headers.len());
    for (name, value) in e.headers {
        if !valid_header(&name, &value) {
            return Err(format!(
                "returned a gateway-error with an invalid HTTP header {name:?}: {value:?}"
            ));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(GatewayError {
        status: e.status,
        message: e.message,
        kind: e.kind,
        code: e.code,
        param: None,
        allow_fallbacks: e.allow_fallbacks,
        headers: headers.into_boxed_slice(),
    })
}

/// WIT pre-outcome -> domain pre-outcome.
pub(crate) fn pre_outcome_from_wit(o: types::PreOutcome) -> Result<PreOutcome, String> {
    Ok(match o {
        types::PreOutcome::Pass => PreOutcome::Pass,
        types::PreOutcome::Continue(r) => PreOutcome::Continue(request_from_wit(r)?),
        types::PreOutcome::Respond(r) => PreOutcome::Respond(response_from_wit(r)?),
        types::PreOutcome::Fail(e) => PreOutcome::Fail(error_from_wit(e)?),
    })
}

/// What a post-hook returned -> the domain outcome to go on with, `None` when the hook handed
/// the outcome on unchanged.
pub(crate) fn outcome_from_wit(o: Option<types::PostOutcome>) -> Result<Option<Outcome>, String> {
    Ok(match o {
        None => None,
        Some(types::PostOutcome::Response(r)) => Some(Ok(response_from_wit(r)?)),
        Some(types::PostOutcome::Error(e)) => Some(Err(error_from_wit(e)?)),
    })
}

/// What a post-hook handed on, from its answer and the response fields it set through the lent
/// outcome (`outcome.set-extra`); the error says what in its answer is invalid. The fields apply
/// to the response it handed on, and are dropped with an error it returned.
pub(crate) fn post_decision(
    answer: Option<types::PostOutcome>,
    annotations: Annotations,
) -> Result<PostDecision, String> {
    let fields = annotations.into_fields();
    Ok(match outcome_from_wit(answer)? {
        None if fields.is_empty() => PostDecision::Unchanged,
        None => PostDecision::Annotated(fields),
        Some(mut outcome) => {
            if let Ok(response) = &mut outcome {
                response.set_extra_fields(fields);
            }
            PostDecision::Replaced(outcome)
        }
    })
}

/// The bytes of text and data a hook returned (strings, lists, header names and values): what
/// its output limit is measured in, checked before any of it is parsed or converted.
pub(crate) trait OutputSize {
    /// Bytes of text and data in the value.
    fn output_bytes(&self) -> usize;
}

fn opt_len(s: Option<&String>) -> usize {
    s.map_or(0, String::len)
}

impl OutputSize for types::Message {
    fn output_bytes(&self) -> usize {
        self.role.len() + opt_len(self.content.as_ref()) + opt_len(self.extra.as_ref())
    }
}

impl OutputSize for types::ChatRequest {
    fn output_bytes(&self) -> usize {
        self.provider.len()
            + self.model.len()
            + self
                .messages
                .iter()
                .map(OutputSize::output_bytes)
                .sum::<usize>()
            + opt_len(self.user.as_ref())
            + self.fallbacks.iter().map(String::len).sum::<usize>()
            + self.extra.len()
    }
}

impl OutputSize for types::ChatResponse {
    fn output_bytes(&self) -> usize {
        self.id.len()
            + self.provider.len()
            + self.model.len()
            + self
                .choices
                .iter()
                .map(|c| {
                    c.message.output_bytes()
                        + opt_len(c.finish_reason.as_ref())
                        + opt_len(c.extra.as_ref())
                })
                .sum::<usize>()
            + self.extra.len()
    }
}

impl OutputSize for types::GatewayErrorResult {
    fn output_bytes(&self) -> usize {
        self.message.len()
            + opt_len(self.kind.as_ref())
            + opt_len(self.code.as_ref())
            + headers_bytes(&self.headers)
    }
}

impl OutputSize for types::StreamChunkResult {
    fn output_bytes(&self) -> usize {
        opt_len(self.role.as_ref())
            + opt_len(self.content.as_ref())
            + opt_len(self.finish_reason.as_ref())
    }
}

impl OutputSize for types::ChunkOutcome {
    fn output_bytes(&self) -> usize {
        match self {
            types::ChunkOutcome::Emit(c) => c.output_bytes(),
            types::ChunkOutcome::Pass | types::ChunkOutcome::Drop => 0,
            types::ChunkOutcome::Fail(e) => e.output_bytes(),
        }
    }
}

/// A stream chunk lent to a hook.
pub(crate) fn chunk_param(c: &hooks::StreamChunk) -> types::StreamChunkParam<'_> {
    types::StreamChunkParam {
        index: c.index,
        choice: c.choice,
        role: c.role.as_deref(),
        content: c.content.as_deref(),
        finish_reason: c.finish_reason.as_deref(),
        usage: c.usage.map(|u| types::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
    }
}

/// WIT chunk outcome -> domain chunk outcome.
pub(crate) fn chunk_outcome_from_wit(o: types::ChunkOutcome) -> Result<ChunkOutcome, String> {
    Ok(match o {
        types::ChunkOutcome::Pass => ChunkOutcome::Pass,
        types::ChunkOutcome::Emit(c) => ChunkOutcome::Emit(hooks::StreamChunk {
            index: c.index,
            choice: c.choice,
            role: c.role,
            content: c.content,
            finish_reason: c.finish_reason,
            usage: c.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
            delta_extra: Default::default(),
        }),
        types::ChunkOutcome::Drop => ChunkOutcome::Drop,
        types::ChunkOutcome::Fail(e) => ChunkOutcome::Fail(error_from_wit(e)?),
    })
}

impl OutputSize for types::PreOutcome {
    fn output_bytes(&self) -> usize {
        match self {
            types::PreOutcome::Pass => 0,
            types::PreOutcome::Continue(r) => r.output_bytes(),
            types::PreOutcome::Respond(r) => r.output_bytes(),
            types::PreOutcome::Fail(e) => e.output_bytes(),
        }
    }
}

impl OutputSize for types::PostOutcome {
    fn output_bytes(&self) -> usize {
        match self {
            types::PostOutcome::Response(r) => r.output_bytes(),
            types::PostOutcome::Error(e) => e.output_bytes(),
        }
    }
}

fn headers_bytes(headers: &[(String, String)]) -> usize {
    headers.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl<T: OutputSize> OutputSize for Option<T> {
    fn output_bytes(&self) -> usize {
        self.as_ref().map_or(0, OutputSize::output_bytes)
    }
}

impl OutputSize for types::TransportOutcome {
    fn output_bytes(&self) -> usize {
        match self {
            types::TransportOutcome::Pass => 0,
            types::TransportOutcome::Rewrite(r) => headers_bytes(&r.headers) + r.body.len(),
            types::TransportOutcome::Respond(r) => headers_bytes(&r.headers) + r.body.len(),
        }
    }
}

impl OutputSize for String {
    fn output_bytes(&self) -> usize {
        self.len()
    }
}

impl OutputSize for () {
    fn output_bytes(&self) -> usize {
        0
    }
}

impl OutputSize for Hooks {
    fn output_bytes(&self) -> usize {
        0
    }
}

/// Lends `r` to `f` as the WIT HTTP request a transport interceptor is called with.
pub(crate) async fn with_http_request_wit<R>(
    r: &HttpRequest,
    f: impl AsyncFnOnce(&types::HttpRequest<'_>) -> R,
) -> R {
    let headers = headers_param(&r.headers);
    f(&types::HttpRequest {
        method: &r.method,
        path: &r.path,
        headers: &headers,
        body: &r.body,
    })
    .await
}

/// WIT transport outcome -> domain transport outcome (header names lower-cased).
pub(crate) fn transport_outcome_from_wit(
    o: types::TransportOutcome,
) -> Result<TransportOutcome, String> {
    let lower = |headers: Vec<(String, String)>| {
        headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect::<Vec<_>>()
    };
    Ok(match o {
        types::TransportOutcome::Pass => TransportOutcome::Pass,
        types::TransportOutcome::Rewrite(r) => TransportOutcome::Rewrite {
            headers: lower(r.headers),
            body: r.body,
        },
        types::TransportOutcome::Respond(r) => {
            if !(100..=599).contains(&r.status) {
                return Err(format!(
                    "answered with HTTP status {}, outside 100..=599",
                    r.status
                ));
            }
            TransportOutcome::Respond(hooks::HttpResponse {
                status: r.status,
                headers: lower(r.headers),
                body: r.body,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request() -> ChatRequest {
        ChatRequest::from_json(json!({
            "model": "mock/echo",
            "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "seed": 7,
        }))
        .unwrap()
    }

    #[test]
    fn requests_are_read_with_their_extras_as_json_text() {
        let wit = request_to_wit(&request());
        assert_eq!(
            (wit.provider.as_str(), wit.model.as_str()),
            ("mock", "echo")
        );
        assert_eq!(wit.extra, r#"{"seed":7}"#);
        assert_eq!(wit.messages[0].content.as_deref(), Some("hi"));
        assert_eq!(wit.messages[0].extra.as_deref(), Some(r#"{"name":"bob"}"#));
        let plain = ChatRequest::from_json(json!({
            "model": "mock/echo", "messages": [{"role": "user", "content": "hi"}],
        }))
        .unwrap();
        let wit = request_to_wit(&plain);
        assert_eq!(wit.extra, "{}");
        assert_eq!(wit.messages[0].extra, None);
    }

    #[test]
    fn a_request_read_and_handed_back_is_the_same_and_edits_are_parsed() {
        let original = request();
        let back = pre_outcome_from_wit(types::PreOutcome::Continue(request_to_wit(&original)));
        let Ok(PreOutcome::Continue(same)) = back else {
            panic!("{back:?}")
        };
        assert_eq!(same, original);

        let mut changed = request_to_wit(&original);
        changed.extra = r#"{"seed": 8, "x": true}"#.to_string();
        changed.messages[0].extra = Some(r#"{"name": "eve"}"#.to_string());
        let back = pre_outcome_from_wit(types::PreOutcome::Continue(changed));
        let Ok(PreOutcome::Continue(edited)) = back else {
            panic!("{back:?}")
        };
        assert_eq!(edited.extra["seed"], 8);
        assert_eq!(edited.extra["x"], true);
        assert_eq!(edited.messages[0].extra["name"], "eve");

        let mut broken = request_to_wit(&original);
        broken.messages[0].extra = Some("[1]".to_string());
        let back = pre_outcome_from_wit(types::PreOutcome::Continue(broken));
        assert_eq!(
            back.unwrap_err(),
            "messages[0].extra must be a JSON object, got an array"
        );
    }

    #[test]
    fn an_outcome_read_and_handed_back_is_the_same() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            provider: "mock".into(),
            model: "echo".into(),
            created: 7,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: "assistant".into(),
                    content: Some("hello".into()),
                    extra: chat::parse_extra(r#"{"refusal": null}"#).unwrap(),
                },
                finish_reason: Some("stop".into()),
                extra: chat::Extra::new(),
            }],
            usage: Some(Usage::new(3, 1)),
            extra: chat::parse_extra(r#"{"system_fingerprint": "fp"}"#).unwrap(),
        };
        let outcome: Outcome = Ok(response);
        let back = outcome_from_wit(Some(outcome_to_wit(&outcome))).unwrap();
        assert_eq!(back, Some(outcome));
        let error: Outcome =
            Err(GatewayError::new(429, "slow down").with_header("retry-after", "3"));
        let back = outcome_from_wit(Some(outcome_to_wit(&error))).unwrap();
        assert_eq!(back, Some(error));
        assert_eq!(outcome_from_wit(None).unwrap(), None);
    }
}
