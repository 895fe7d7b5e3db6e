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
        // Hooks are called with borrowed views of the gateway's values (`*Param<'a>`, lowered
        // straight from them) and return owned ones (`*Result`): no copy of a request or a
        // response is made just to hand it to a plugin.
        ownership: Borrowing { duplicate_if_necessary: true },
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

/// The `extra` texts of a list of messages, written out only when some message has one (the
/// usual message has none, and then nothing is allocated).
fn message_extras<'a>(
    messages: impl ExactSizeIterator<Item = &'a Message> + Clone,
) -> Vec<Option<String>> {
    if messages.clone().all(|m| m.extra.is_empty()) {
        return Vec::new();
    }
    messages.map(|m| opt_extra_text(&m.extra)).collect()
}

/// A message lent to a hook; `extras[i]` is its `extra` text (see [`message_extras`]).
fn message_param<'a>(
    m: &'a Message,
    extras: &'a [Option<String>],
    i: usize,
) -> types::MessageParam<'a> {
    types::MessageParam {
        role: &m.role,
        content: m.content.as_deref(),
        extra: extras.get(i).and_then(Option::as_deref),
    }
}

fn message_from_wit(
    m: types::MessageResult,
    given: Option<Given<'_, types::MessageParam<'_>, Message>>,
    what: impl Fn() -> String,
) -> Result<Message, String> {
    let given = given.map(|g| (g.sent.extra, &g.original.extra));
    Ok(Message {
        extra: returned_extra(m.extra.as_deref(), given, what)?,
        role: m.role,
        content: m.content,
    })
}

/// Lends `r` to `f` as the WIT request a hook is called with. Its strings are borrowed, not
/// copied; only the `extra` objects are written out, as JSON text.
pub(crate) async fn with_request_wit<R>(
    r: &ChatRequest,
    f: impl AsyncFnOnce(&types::ChatRequestParam<'_>) -> R,
) -> R {
    let extra = extra_text(&r.extra);
    let extras = message_extras(r.messages.iter());
    let messages: Vec<_> = (r.messages.iter().enumerate())
        .map(|(i, m)| message_param(m, &extras, i))
        .collect();
    let fallbacks: Vec<&str> = r.fallbacks.iter().map(String::as_str).collect();
    let wit = types::ChatRequestParam {
        provider: &r.provider,
        model: &r.model,
        messages: &messages,
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_tokens,
        stream: r.stream,
        user: r.user.as_deref(),
        fallbacks: &fallbacks,
        extra: &extra,
    };
    f(&wit).await
}

/// WIT request -> domain request; the error says which field a plugin broke.
fn request_from_wit(
    r: types::ChatRequestResult,
    given: Option<Given<'_, types::ChatRequestParam<'_>, ChatRequest>>,
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
    let given_extra = given.map(|g| (Some(g.sent.extra), &g.original.extra));
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

/// The JSON texts a response lent to a hook points into besides its own strings: its
/// `extra` objects.
struct ResponseTexts {
    extra: String,
    messages: Vec<Option<String>>,
    choices: Vec<Option<String>>,
}

impl ResponseTexts {
    fn new(r: &ChatResponse) -> Self {
        let choices = if r.choices.iter().all(|c| c.extra.is_empty()) {
            Vec::new()
        } else {
            r.choices.iter().map(|c| opt_extra_text(&c.extra)).collect()
        };
        Self {
            extra: extra_text(&r.extra),
            messages: message_extras(r.choices.iter().map(|c| &c.message)),
            choices,
        }
    }

    fn choices<'a>(&'a self, r: &'a ChatResponse) -> Vec<types::ChoiceParam<'a>> {
        (r.choices.iter().enumerate())
            .map(|(i, c)| types::ChoiceParam {
                index: c.index,
                message: message_param(&c.message, &self.messages, i),
                finish_reason: c.finish_reason.as_deref(),
                extra: self.choices.get(i).and_then(Option::as_deref),
            })
            .collect()
    }
}

/// A response lent to a hook, pointing into `r`, `texts` and `choices`.
fn response_param<'a>(
    r: &'a ChatResponse,
    texts: &'a ResponseTexts,
    choices: &'a [types::ChoiceParam<'a>],
) -> types::ChatResponseParam<'a> {
    types::ChatResponseParam {
        id: &r.id,
        provider: &r.provider,
        model: &r.model,
        created: r.created,
        choices,
        usage: r.usage.map(|u| types::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        extra: &texts.extra,
    }
}

fn response_from_wit(
    r: types::ChatResponseResult,
    given: Option<Given<'_, types::ChatResponseParam<'_>, ChatResponse>>,
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
            let extra = given.map(|(sent, original)| (sent.extra, &original.extra));
            Ok(Choice {
                index: c.index,
                message: message_from_wit(c.message, message, || format!("choices[{i}].message"))?,
                finish_reason: c.finish_reason,
                extra: returned_extra(c.extra.as_deref(), extra, || format!("choices[{i}]"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let given_extra = given.map(|g| (Some(g.sent.extra), &g.original.extra));
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

/// WIT pre-outcome -> domain pre-outcome; `sent` is the request the hook was called with and
/// `original` the domain request it was made from.
pub(crate) fn pre_outcome_from_wit(
    o: types::PreOutcome,
    sent: &types::ChatRequestParam<'_>,
    original: &ChatRequest,
) -> Result<PreOutcome, String> {
    let given = Some(Given { sent, original });
    Ok(match o {
        types::PreOutcome::Pass => PreOutcome::Pass,
        types::PreOutcome::Continue(r) => PreOutcome::Continue(request_from_wit(r, given)?),
        types::PreOutcome::Respond(r) => PreOutcome::Respond(response_from_wit(r, None)?),
        types::PreOutcome::Fail(e) => PreOutcome::Fail(error_from_wit(e)?),
    })
}

/// Lends `o` to `f` as the WIT post-outcome a hook is called with (strings borrowed, only the
/// `extra` objects written out).
pub(crate) async fn with_outcome_wit<R>(
    o: &Outcome,
    f: impl AsyncFnOnce(&types::PostOutcomeParam<'_>) -> R,
) -> R {
    match o {
        Ok(r) => {
            let texts = ResponseTexts::new(r);
            let choices = texts.choices(r);
            f(&types::PostOutcomeParam::Response(response_param(
                r, &texts, &choices,
            )))
            .await
        }
        Err(e) => {
            let headers = headers_param(&e.headers);
            f(&types::PostOutcomeParam::Error(error_param(e, &headers))).await
        }
    }
}

/// What a post-hook returned -> the domain outcome to go on with, `None` when the hook handed
/// the outcome on unchanged; `sent` is the outcome the hook was called with and `original` the
/// domain outcome it was made from.
pub(crate) fn outcome_from_wit(
    o: Option<types::PostOutcomeResult>,
    sent: &types::PostOutcomeParam<'_>,
    original: &Outcome,
) -> Result<Option<Outcome>, String> {
    let given = match (sent, original) {
        (types::PostOutcomeParam::Response(sent), Ok(original)) => Some(Given { sent, original }),
        _ => None,
    };
    Ok(match o {
        None => None,
        Some(types::PostOutcomeResult::Response(r)) => Some(Ok(response_from_wit(r, given)?)),
        Some(types::PostOutcomeResult::Error(e)) => Some(Err(error_from_wit(e)?)),
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

impl OutputSize for types::MessageResult {
    fn output_bytes(&self) -> usize {
        self.role.len() + opt_len(self.content.as_ref()) + opt_len(self.extra.as_ref())
    }
}

impl OutputSize for types::ChatRequestResult {
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

impl OutputSize for types::ChatResponseResult {
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

impl OutputSize for types::PostOutcomeResult {
    fn output_bytes(&self) -> usize {
        match self {
            types::PostOutcomeResult::Response(r) => r.output_bytes(),
            types::PostOutcomeResult::Error(e) => e.output_bytes(),
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

    /// What a hook that hands `sent` back unchanged returns.
    fn returned(sent: &types::ChatRequestParam<'_>) -> types::ChatRequestResult {
        types::ChatRequestResult {
            provider: sent.provider.to_string(),
            model: sent.model.to_string(),
            messages: (sent.messages.iter())
                .map(|m| types::MessageResult {
                    role: m.role.to_string(),
                    content: m.content.map(str::to_string),
                    extra: m.extra.map(str::to_string),
                })
                .collect(),
            temperature: sent.temperature,
            top_p: sent.top_p,
            max_tokens: sent.max_tokens,
            stream: sent.stream,
            user: sent.user.map(str::to_string),
            fallbacks: sent.fallbacks.iter().map(|f| f.to_string()).collect(),
            extra: sent.extra.to_string(),
        }
    }

    #[tokio::test]
    async fn requests_are_lent_with_their_extras_as_json_text() {
        let original = request();
        with_request_wit(&original, async |sent| {
            assert_eq!((sent.provider, sent.model), ("mock", "echo"));
            assert_eq!(sent.extra, r#"{"seed":7}"#);
            assert_eq!(sent.messages[0].content, Some("hi"));
            assert_eq!(sent.messages[0].extra, Some(r#"{"name":"bob"}"#));
        })
        .await;
        let plain = ChatRequest::from_json(json!({
            "model": "mock/echo", "messages": [{"role": "user", "content": "hi"}],
        }))
        .unwrap();
        with_request_wit(&plain, async |sent| {
            assert_eq!(sent.extra, "{}");
            assert_eq!(sent.messages[0].extra, None);
        })
        .await;
    }

    #[tokio::test]
    async fn extras_handed_back_unchanged_are_reused_and_changed_ones_parsed() {
        let original = request();
        with_request_wit(&original, async |sent| {
            let back =
                pre_outcome_from_wit(types::PreOutcome::Continue(returned(sent)), sent, &original);
            let Ok(PreOutcome::Continue(same)) = back else {
                panic!("{back:?}")
            };
            assert_eq!(same, original);

            let mut changed = returned(sent);
            changed.extra = r#"{"seed": 8, "x": true}"#.to_string();
            changed.messages[0].extra = Some(r#"{"name": "eve"}"#.to_string());
            let back = pre_outcome_from_wit(types::PreOutcome::Continue(changed), sent, &original);
            let Ok(PreOutcome::Continue(edited)) = back else {
                panic!("{back:?}")
            };
            assert_eq!(edited.extra["seed"], 8);
            assert_eq!(edited.extra["x"], true);
            assert_eq!(edited.messages[0].extra["name"], "eve");

            let mut broken = returned(sent);
            broken.messages[0].extra = Some("[1]".to_string());
            let back = pre_outcome_from_wit(types::PreOutcome::Continue(broken), sent, &original);
            assert_eq!(
                back.unwrap_err(),
                "messages[0].extra must be a JSON object, got an array"
            );
        })
        .await;
    }
}
