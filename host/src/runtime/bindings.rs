//! The only `bindgen!` of the host, and the conversions between the generated types and the
//! gateway's domain types. Generated types never leave this module.

use crate::chat::{self, ChatRequest, ChatResponse, Choice, Message, Usage};
use crate::error::GatewayError;
use crate::hooks::{
    self, ChunkOutcome, HookSet, HttpRequest, Outcome, PreOutcome, TransportOutcome,
};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub(crate) use generated::wasmgate::plugin::{clock, context, kv, logging, types};
pub(crate) use generated::{Plugin, PluginPre};
use types::Hooks;

/// Converts a JSON object to the text form that crosses the boundary.
fn extra_text(extra: &chat::Extra) -> String {
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

/// What a hook was given, to recognise the parts it hands back unchanged (most plugins change
/// little): the `extra` text it got back byte for byte is not parsed again, the original's map
/// is reused. `sent` is the WIT value the hook was called with, `original` the domain value it
/// was made from.
struct Given<'a, W, D> {
    sent: &'a W,
    original: &'a D,
}

// By hand: a derive would ask `W` and `D` to be `Copy`, and only the references are copied.
impl<W, D> Clone for Given<'_, W, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W, D> Copy for Given<'_, W, D> {}

/// A returned `extra`: the original's when the text is the one sent, parsed otherwise.
fn returned_extra(
    text: Option<&str>,
    given: Option<(Option<&str>, &chat::Extra)>,
    what: impl Fn() -> String,
) -> Result<chat::Extra, String> {
    match given {
        Some((sent, original)) if sent == text => Ok(original.clone()),
        _ => parse_opt_extra(text, what),
    }
}

impl From<Hooks> for HookSet {
    fn from(h: Hooks) -> Self {
        HookSet {
            transport_interceptor: h.contains(Hooks::TRANSPORT_INTERCEPTOR),
            pre_hook: h.contains(Hooks::PRE_HOOK),
            post_hook: h.contains(Hooks::POST_HOOK),
            stream_chunk: h.contains(Hooks::STREAM_CHUNK),
            on_error: h.contains(Hooks::ON_ERROR),
            cleanup: h.contains(Hooks::CLEANUP),
        }
    }
}

fn message_to_wit(m: &Message) -> types::Message {
    types::Message {
        role: m.role.clone(),
        content: m.content.clone(),
        extra: opt_extra_text(&m.extra),
    }
}

fn message_from_wit(
    m: types::Message,
    given: Option<Given<'_, types::Message, Message>>,
    what: impl Fn() -> String,
) -> Result<Message, String> {
    let given = given.map(|g| (g.sent.extra.as_deref(), &g.original.extra));
    Ok(Message {
        extra: returned_extra(m.extra.as_deref(), given, what)?,
        role: m.role,
        content: m.content,
    })
}

/// Domain request -> WIT request.
pub(crate) fn request_to_wit(r: &ChatRequest) -> types::ChatRequest {
    types::ChatRequest {
        provider: r.provider.clone(),
        model: r.model.clone(),
        messages: r.messages.iter().map(message_to_wit).collect(),
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
fn request_from_wit(
    r: types::ChatRequest,
    given: Option<Given<'_, types::ChatRequest, ChatRequest>>,
) -> Result<ChatRequest, String> {
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
    let messages = r
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let given = given.and_then(|g| {
                Some(Given {
                    sent: g.sent.messages.get(i)?,
                    original: g.original.messages.get(i)?,
                })
            });
            message_from_wit(m, given, || format!("messages[{i}]"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let given_extra = given.map(|g| (Some(g.sent.extra.as_str()), &g.original.extra));
    Ok(ChatRequest {
        extra: returned_extra(Some(&r.extra), given_extra, || "request".to_string())?,
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

fn response_to_wit(r: &ChatResponse) -> types::ChatResponse {
    types::ChatResponse {
        id: r.id.clone(),
        provider: r.provider.clone(),
        model: r.model.clone(),
        created: r.created,
        choices: r
            .choices
            .iter()
            .map(|c| types::Choice {
                index: c.index,
                message: message_to_wit(&c.message),
                finish_reason: c.finish_reason.clone(),
                extra: opt_extra_text(&c.extra),
            })
            .collect(),
        usage: r.usage.map(|u| types::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        extra: extra_text(&r.extra),
    }
}

fn response_from_wit(
    r: types::ChatResponse,
    given: Option<Given<'_, types::ChatResponse, ChatResponse>>,
) -> Result<ChatResponse, String> {
    let choices = r
        .choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let given =
                given.and_then(|g| Some((g.sent.choices.get(i)?, g.original.choices.get(i)?)));
            let message = given.map(|(sent, original)| Given {
                sent: &sent.message,
                original: &original.message,
            });
            let extra = given.map(|(sent, original)| (sent.extra.as_deref(), &original.extra));
            Ok(Choice {
                index: c.index,
                message: message_from_wit(c.message, message, || format!("choices[{i}].message"))?,
                finish_reason: c.finish_reason,
                extra: returned_extra(c.extra.as_deref(), extra, || format!("choices[{i}]"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let given_extra = given.map(|g| (Some(g.sent.extra.as_str()), &g.original.extra));
    Ok(ChatResponse {
        extra: returned_extra(Some(&r.extra), given_extra, || "response".to_string())?,
        id: r.id,
        provider: r.provider,
        model: r.model,
        created: r.created,
        choices,
        usage: r.usage.map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
    })
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

/// Domain error -> WIT error.
pub(crate) fn error_to_wit(e: &GatewayError) -> types::GatewayError {
    types::GatewayError {
        message: e.message.clone(),
        kind: e.kind.clone(),
        code: e.code.clone(),
        status: e.status,
        allow_fallbacks: e.allow_fallbacks,
        headers: e.headers.to_vec(),
    }
}

/// WIT error -> domain error; the status must be an HTTP error status and header names and
/// values must be valid HTTP.
pub(crate) fn error_from_wit(e: types::GatewayError) -> Result<GatewayError, String> {
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

/// WIT pre-outcome -> domain pre-outcome; `sent` is the request the hook was called with and
/// `original` the domain request it was made from.
pub(crate) fn pre_outcome_from_wit(
    o: types::PreOutcome,
    sent: &types::ChatRequest,
    original: &ChatRequest,
) -> Result<PreOutcome, String> {
    let given = Some(Given { sent, original });
    Ok(match o {
        types::PreOutcome::Continue(r) => PreOutcome::Continue(request_from_wit(r, given)?),
        types::PreOutcome::Respond(r) => PreOutcome::Respond(response_from_wit(r, None)?),
        types::PreOutcome::Fail(e) => PreOutcome::Fail(error_from_wit(e)?),
    })
}

/// Domain outcome -> WIT post-outcome.
pub(crate) fn outcome_to_wit(o: &Outcome) -> types::PostOutcome {
    match o {
        Ok(r) => types::PostOutcome::Response(response_to_wit(r)),
        Err(e) => types::PostOutcome::Error(error_to_wit(e)),
    }
}

/// WIT post-outcome -> domain outcome; `sent` is the outcome the hook was called with and
/// `original` the domain outcome it was made from.
pub(crate) fn outcome_from_wit(
    o: types::PostOutcome,
    sent: &types::PostOutcome,
    original: &Outcome,
) -> Result<Outcome, String> {
    let given = match (sent, original) {
        (types::PostOutcome::Response(sent), Ok(original)) => Some(Given { sent, original }),
        _ => None,
    };
    Ok(match o {
        types::PostOutcome::Response(r) => Ok(response_from_wit(r, given)?),
        types::PostOutcome::Error(e) => Err(error_from_wit(e)?),
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

impl OutputSize for types::GatewayError {
    fn output_bytes(&self) -> usize {
        self.message.len()
            + opt_len(self.kind.as_ref())
            + opt_len(self.code.as_ref())
            + headers_bytes(&self.headers)
    }
}

impl OutputSize for types::StreamChunk {
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
            types::ChunkOutcome::Drop => 0,
            types::ChunkOutcome::Fail(e) => e.output_bytes(),
        }
    }
}

/// Domain chunk -> WIT chunk.
pub(crate) fn chunk_to_wit(c: &hooks::StreamChunk) -> types::StreamChunk {
    types::StreamChunk {
        index: c.index,
        choice: c.choice,
        role: c.role.clone(),
        content: c.content.clone(),
        finish_reason: c.finish_reason.clone(),
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

/// Domain HTTP request -> WIT HTTP request.
pub(crate) fn http_request_to_wit(r: &HttpRequest) -> types::HttpRequest {
    types::HttpRequest {
        method: r.method.clone(),
        path: r.path.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
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
    fn extras_handed_back_unchanged_are_reused_and_changed_ones_parsed() {
        let original = request();
        let sent = request_to_wit(&original);
        let back =
            pre_outcome_from_wit(types::PreOutcome::Continue(sent.clone()), &sent, &original);
        let Ok(PreOutcome::Continue(same)) = back else {
            panic!("{back:?}")
        };
        assert_eq!(same, original);

        let mut changed = sent.clone();
        changed.extra = r#"{"seed": 8, "x": true}"#.to_string();
        changed.messages[0].extra = Some(r#"{"name": "eve"}"#.to_string());
        let back = pre_outcome_from_wit(types::PreOutcome::Continue(changed), &sent, &original);
        let Ok(PreOutcome::Continue(edited)) = back else {
            panic!("{back:?}")
        };
        assert_eq!(edited.extra["seed"], 8);
        assert_eq!(edited.extra["x"], true);
        assert_eq!(edited.messages[0].extra["name"], "eve");

        let mut broken = sent.clone();
        broken.messages[0].extra = Some("[1]".to_string());
        let back = pre_outcome_from_wit(types::PreOutcome::Continue(broken), &sent, &original);
        assert_eq!(
            back.unwrap_err(),
            "messages[0].extra must be a JSON object, got an array"
        );
    }
}
