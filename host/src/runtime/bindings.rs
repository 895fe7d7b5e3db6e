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
    serde_json::Value::Object(extra.clone()).to_string()
}

fn opt_extra_text(extra: &chat::Extra) -> Option<String> {
    (!extra.is_empty()).then(|| extra_text(extra))
}

fn parse_extra(text: &str, what: &str) -> Result<chat::Extra, String> {
    chat::parse_extra(text).map_err(|e| format!("{what}.extra {e}"))
}

fn parse_opt_extra(text: Option<&str>, what: &str) -> Result<chat::Extra, String> {
    text.map_or_else(|| Ok(chat::Extra::new()), |t| parse_extra(t, what))
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

fn message_from_wit(m: types::Message, what: &str) -> Result<Message, String> {
    Ok(Message {
        extra: parse_opt_extra(m.extra.as_deref(), what)?,
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
pub(crate) fn request_from_wit(r: types::ChatRequest) -> Result<ChatRequest, String> {
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
        .map(|(i, m)| message_from_wit(m, &format!("messages[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChatRequest {
        extra: parse_extra(&r.extra, "request")?,
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

fn response_from_wit(r: types::ChatResponse) -> Result<ChatResponse, String> {
    let choices = r
        .choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let what = format!("choices[{i}]");
            Ok(Choice {
                index: c.index,
                message: message_from_wit(c.message, &format!("{what}.message"))?,
                finish_reason: c.finish_reason,
                extra: parse_opt_extra(c.extra.as_deref(), &what)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ChatResponse {
        extra: parse_extra(&r.extra, "response")?,
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

/// WIT pre-outcome -> domain pre-outcome.
pub(crate) fn pre_outcome_from_wit(o: types::PreOutcome) -> Result<PreOutcome, String> {
    Ok(match o {
        types::PreOutcome::Continue(r) => PreOutcome::Continue(request_from_wit(r)?),
        types::PreOutcome::Respond(r) => PreOutcome::Respond(response_from_wit(r)?),
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

/// WIT post-outcome -> domain outcome.
pub(crate) fn outcome_from_wit(o: types::PostOutcome) -> Result<Outcome, String> {
    Ok(match o {
        types::PostOutcome::Response(r) => Ok(response_from_wit(r)?),
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
