//! `scripted`: a test plugin whose every hook does what its config says, for the host's
//! pipeline-semantics tests (order, symmetry, short-circuits, fallbacks, failure policies, limits).
//!
//! Every hook first appends `<tag>.<hook>` (hook = `transport` | `pre` | `post`) to the context
//! value `trace`, comma-separated (`A.pre,B.pre,B.post,A.post`), then performs its action. After its
//! post action, the plugin writes the whole trace into the outcome: a response gets it as the body
//! field `"trace"`, an error as its `code` `trace:<trace>`. So the outermost post-hook leaves the
//! complete trace visible to the client.
//!
//! Config (unknown fields rejected):
//!
//! | field               | default      | values                                                    |
//! |---------------------|--------------|-----------------------------------------------------------|
//! | `tag`               | (required)   | any string, names this plugin in the trace                |
//! | `transport`         | `"pass"`     | `pass`, `rewrite-header:<name>=<value>`, `respond:<status>`, `error`, `trap`, `loop` |
//! | `pre`               | `"continue"` | `continue`, `respond`, `fail`, `fail-no-fallbacks`, `error`, `trap`, `loop`, `grow`, `recurse`, `recurse-shadow`, `set-model:<model>`, `sleep-ms:<n>`, `keep-state:<n>`, `describe` |
//! | `post`              | `"pass"`     | `pass`, `keep`, `recover`, `to-error`, `error`, `trap`, `loop`, `describe`, `annotate`, `annotate-then-pass` |
//! | `pre_only_provider` | none         | the pre action applies only to requests for this provider |
//! | `init`              | `"ok"`       | `ok`, `fail`, `trap`                                      |
//! | `cleanup`           | `"ok"`       | `ok`, `trap`, `loop` (after counting `cleanups` in kv)    |
//! | `on_error`          | `"pass"`     | `pass`, `mask`, `error`, `trap`                           |
//! | `chunk`             | `"pass"`     | `pass`, `upper`, `drop-odd`, `fail-at:<n>`, `error`, `trap` |
//!
//! Actions: `respond` answers with text `responded by <tag>`; `fail` is a 503 `server_error`
//! `failed by <tag>` that allows fallbacks; `fail-no-fallbacks` the same with status 403 and no
//! fallbacks; `error` returns the plugin error `error from <tag>`; `trap` panics with
//! `trap in <tag>`; `loop` spins forever; `grow` allocates 1 MiB chunks until memory runs out;
//! `recurse` recurses until the wasm stack overflows; `recurse-shadow` until Rust's shadow stack in
//! linear memory does (an out-of-bounds trap); `set-model:<m>` sets the request's model;
//! `sleep-ms:<n>` busy-waits n ms; `keep-state:<n>` keeps a string of n characters as request
//! state `pad` (`Ctx::set_state`; over the context's 64 KiB it is a plugin error); `recover` turns an error into a response with text
//! `recovered by <tag>`; `keep` hands the outcome on unchanged with `none` (so this post-hook
//! does not write the trace); `to-error` turns a response into a 502 error `converted by <tag>`;
//! `rewrite-header:<name>=<value>` sets a request header; `respond:<status>` answers the HTTP
//! request with that status and the JSON body `{"by":"<tag>"}`; `mask` (error stage) replaces the
//! error's message with `masked by <tag>` and adds the header `x-masked-by: <tag>`; `upper`
//! upper-cases a stream chunk's text, `drop-odd` drops the chunks with an odd index, and
//! `fail-at:<n>` ends the stream at chunk n with a 502 `stream cut by <tag>`. `describe` reads
//! every part of the lent request (pre) or outcome (post) through its own accessor and answers
//! with them as a JSON text (pre), or adds them to the response as the body field `described`
//! or makes them an error's message (post), so a test sees what each accessor returned.
//! `annotate` sets the body field `annotated_by: <tag>` through the lent outcome
//! (`outcome.set-extra`), and `typed_refusal` to why setting `model` that way was refused, then
//! hands the outcome on with `none`; on an error outcome it answers the error with message
//! `annotate refused: <why>`. `annotate-then-pass` does the same, then goes on as `pass` does.
//! The error stage appends `<tag>.error` to the trace, and the stream-chunk hook `<tag>.chunk`
//! on chunk 0.

use core::hint::black_box;

use serde::Deserialize;
use wasmgate_sdk::serde_json;
use wasmgate_sdk::{
    ChatResponse, ChunkOutcome, Ctx, GatewayError, HttpRequest, HttpResponse, HttpRewrite, Outcome,
    Plugin, PostOutcome, PreOutcome, Request, Result, StreamChunk, TransportOutcome, now_ms,
};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this plugin in the trace and in its messages.
    pub tag: String,
    /// What the transport interceptor does.
    #[serde(default)]
    pub transport: Transport,
    /// What the pre-hook does.
    #[serde(default)]
    pub pre: Pre,
    /// What the error stage does.
    #[serde(default)]
    pub on_error: OnError,
    /// What the stream-chunk hook does.
    #[serde(default)]
    pub chunk: Chunk,
    /// What the post-hook does.
    #[serde(default)]
    pub post: Post,
    /// When set, the pre action applies only to requests for this provider.
    #[serde(default)]
    pub pre_only_provider: Option<String>,
    /// What `init` does once the config is parsed.
    #[serde(default)]
    pub init: Init,
    /// What `cleanup` does after counting itself.
    #[serde(default)]
    pub cleanup: Cleanup,
}

/// `cleanup` actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    /// Succeed.
    #[default]
    Ok,
    /// Panic.
    Trap,
    /// Spin forever.
    Loop,
}

/// Transport interceptor actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Transport {
    /// Go on unchanged.
    #[default]
    Pass,
    /// Go on with this header set (name lower-cased).
    RewriteHeader(String, String),
    /// Answer the HTTP request with this status and `{"by":"<tag>"}`.
    Respond(u16),
    /// Return the plugin error `error from <tag>`.
    Error,
    /// Panic.
    Trap,
    /// Spin forever.
    Loop,
}

/// Pre-hook actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Pre {
    /// Go on, handing the request back unchanged (`continue` with the same request).
    #[default]
    Continue,
    /// Go on with `pass`: nothing is handed back.
    Pass,
    /// Answer with `responded by <tag>`.
    Respond,
    /// Fail with 503 `failed by <tag>`, fallbacks allowed.
    Fail,
    /// Fail with 403 `failed by <tag>`, no fallbacks.
    FailNoFallbacks,
    /// Return the plugin error `error from <tag>`.
    Error,
    /// Panic.
    Trap,
    /// Spin forever.
    Loop,
    /// Allocate until memory runs out.
    Grow,
    /// Recurse until the stack overflows.
    Recurse,
    RecurseShadow,
    /// Set the request's model and go on.
    SetModel(String),
    /// Busy-wait this many milliseconds, then go on.
    SleepMs(u64),
    /// Keep a string of this many characters as the request state `pad`, then go on.
    KeepState(usize),
    /// Answer with every part of the lent request, each read with its own accessor, as JSON.
    Describe,
}

/// Post-hook actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Post {
    /// Leave the outcome as it is (and write the trace into it).
    #[default]
    Pass,
    /// Hand the outcome on with `none`: nothing is handed back, and the trace is not written.
    Keep,
    /// Turn an error into the response `recovered by <tag>`.
    Recover,
    /// Turn a response into the 502 error `converted by <tag>`.
    ToError,
    /// Return the plugin error `error from <tag>`.
    Error,
    /// Panic.
    Trap,
    /// Spin forever.
    Loop,
    /// Add every part of the lent outcome, each read with its own accessor, as `described`.
    Describe,
    /// Set the field `annotated_by` through the lent outcome and hand it on with `none`.
    Annotate,
    /// Set `annotated_by` through the lent outcome, then go on as `pass` does.
    AnnotateThenPass,
}

/// Error stage actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Leave the error as it is.
    #[default]
    Pass,
    /// Replace the message with `masked by <tag>`, add `x-masked-by: <tag>`.
    Mask,
    /// Return the plugin error `error from <tag>`.
    Error,
    /// Panic.
    Trap,
}

/// Stream-chunk actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Chunk {
    /// Send the chunk on unchanged (`pass`: nothing handed back).
    #[default]
    Pass,
    /// Upper-case the chunk's text.
    Upper,
    /// Drop chunks with an odd index.
    DropOdd,
    /// End the stream at this chunk index with a 502.
    FailAt(u32),
    /// Return the plugin error `error from <tag>`.
    Error,
    /// Panic.
    Trap,
}

impl TryFrom<String> for Chunk {
    type Error = String;
    fn try_from(s: String) -> Result<Self> {
        Ok(match s.as_str() {
            "pass" => Chunk::Pass,
            "upper" => Chunk::Upper,
            "drop-odd" => Chunk::DropOdd,
            "error" => Chunk::Error,
            "trap" => Chunk::Trap,
            _ => match s.strip_prefix("fail-at:").map(str::parse) {
                Some(Ok(n)) => Chunk::FailAt(n),
                _ => {
                    return Err(unknown(
                        &s,
                        "pass, upper, drop-odd, fail-at:<n>, error, trap",
                    ));
                }
            },
        })
    }
}

/// `init` actions.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Init {
    /// Succeed.
    #[default]
    Ok,
    /// Fail with `init failed by <tag>`.
    Fail,
    /// Panic.
    Trap,
}

impl TryFrom<String> for Transport {
    type Error = String;
    fn try_from(s: String) -> Result<Self> {
        match s.as_str() {
            "pass" => return Ok(Transport::Pass),
            "error" => return Ok(Transport::Error),
            "trap" => return Ok(Transport::Trap),
            "loop" => return Ok(Transport::Loop),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("rewrite-header:") {
            return match rest.split_once('=') {
                Some((name, value)) if !name.is_empty() => Ok(Transport::RewriteHeader(
                    name.to_ascii_lowercase(),
                    value.to_owned(),
                )),
                _ => Err(format!("expected rewrite-header:<name>=<value>, got {s:?}")),
            };
        }
        if let Some(status) = s.strip_prefix("respond:") {
            return match status.parse::<u16>() {
                Ok(code @ 100..=599) => Ok(Transport::Respond(code)),
                _ => Err(format!("expected respond:<status 100-599>, got {s:?}")),
            };
        }
        Err(unknown(
            &s,
            "pass, rewrite-header:<name>=<value>, respond:<status>, error, trap, loop",
        ))
    }
}

/// Every part of a lent request, each read with its own accessor (`describe`).
fn describe_request(req: &Request<'_>) -> serde_json::Value {
    // The count and the last user text before `messages`: they have their own imports, used
    // only while the messages have not been copied in.
    let count = req.message_count();
    let last_user_text = req.last_user_text();
    serde_json::json!({
        "provider": req.provider(),
        "model": req.model(),
        "target": req.target(),
        "message_count": count,
        "last_user_text": last_user_text,
        "messages": req.messages().len(),
        "temperature": req.temperature(),
        "top_p": req.top_p(),
        "max_tokens": req.max_tokens(),
        "stream": req.stream(),
        "user": req.user(),
        "fallbacks": req.fallbacks(),
        "extra": req.extra(),
        "seed": req.extra_field("seed"),
        "whole_model": req.to_request().model,
    })
}

/// Every part of a lent outcome, each read with its own accessor (`describe`).
fn describe_outcome(outcome: &Outcome<'_>) -> serde_json::Value {
    serde_json::json!({
        "is_error": outcome.is_error(),
        "status": outcome.status(),
        "usage": outcome.usage().map(|u| u.total_tokens),
        "model": outcome.model(),
        "text": outcome.text(),
        "finish_reason": outcome.finish_reason(),
        "error": outcome.error().map(|e| e.message),
    })
}

impl TryFrom<String> for Pre {
    type Error = String;
    fn try_from(s: String) -> Result<Self> {
        Ok(match s.as_str() {
            "continue" => Pre::Continue,
            "pass" => Pre::Pass,
            "respond" => Pre::Respond,
            "fail" => Pre::Fail,
            "fail-no-fallbacks" => Pre::FailNoFallbacks,
            "error" => Pre::Error,
            "trap" => Pre::Trap,
            "loop" => Pre::Loop,
            "grow" => Pre::Grow,
            "recurse" => Pre::Recurse,
            "recurse-shadow" => Pre::RecurseShadow,
            "describe" => Pre::Describe,
            _ => {
                if let Some(model) = s.strip_prefix("set-model:") {
                    Pre::SetModel(model.to_owned())
                } else if let Some(ms) = s.strip_prefix("sleep-ms:") {
                    let ms = ms
                        .parse()
                        .map_err(|_| format!("expected sleep-ms:<milliseconds>, got {s:?}"))?;
                    Pre::SleepMs(ms)
                } else if let Some(n) = s.strip_prefix("keep-state:") {
                    let n = n
                        .parse()
                        .map_err(|_| format!("expected keep-state:<characters>, got {s:?}"))?;
                    Pre::KeepState(n)
                } else {
                    return Err(unknown(
                        &s,
                        "continue, pass, respond, fail, fail-no-fallbacks, error, trap, loop, grow, \
                         recurse, recurse-shadow, set-model:<model>, sleep-ms:<n>, keep-state:<n>, \
                         describe",
                    ));
                }
            }
        })
    }
}

impl TryFrom<String> for Post {
    type Error = String;
    fn try_from(s: String) -> Result<Self> {
        Ok(match s.as_str() {
            "pass" => Post::Pass,
            "keep" => Post::Keep,
            "recover" => Post::Recover,
            "to-error" => Post::ToError,
            "error" => Post::Error,
            "trap" => Post::Trap,
            "loop" => Post::Loop,
            "describe" => Post::Describe,
            "annotate" => Post::Annotate,
            "annotate-then-pass" => Post::AnnotateThenPass,
            _ => {
                return Err(unknown(
                    &s,
                    "pass, keep, recover, to-error, error, trap, loop, describe, annotate, \
                     annotate-then-pass",
                ));
            }
        })
    }
}

impl TryFrom<String> for Init {
    type Error = String;
    fn try_from(s: String) -> Result<Self> {
        Ok(match s.as_str() {
            "ok" => Init::Ok,
            "fail" => Init::Fail,
            "trap" => Init::Trap,
            _ => return Err(unknown(&s, "ok, fail, trap")),
        })
    }
}

fn unknown(got: &str, expected: &str) -> String {
    format!("unknown action {got:?}, expected one of: {expected}")
}

/// `trace` with `item` appended (comma-separated).
pub fn append_trace(trace: Option<&str>, item: &str) -> String {
    match trace {
        Some(t) if !t.is_empty() => format!("{t},{item}"),
        _ => item.to_owned(),
    }
}

/// The scripted plugin. Its pre-hook keeps the request's provider and model in the request's
/// context ([`LAST`]) for `recover` (the post-hook does not see the request), so any instance
/// may serve the post-hook.
#[derive(Debug)]
pub struct Scripted {
    config: Config,
}

/// The request state (`<plugin name>.last`): `(provider, model)` of the request.
const LAST: &str = "last";

impl Scripted {
    fn tag(&self) -> &str {
        &self.config.tag
    }

    /// Appends `<tag>.<hook>` to the context's `trace` and returns the new trace.
    fn trace(&self, ctx: &Ctx, hook: &str) -> String {
        let trace = append_trace(
            ctx.get("trace").as_deref(),
            &format!("{}.{hook}", self.tag()),
        );
        ctx.set("trace", &trace);
        trace
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for Scripted {
    fn name() -> String {
        "scripted".into()
    }

    fn init(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        match config.init {
            Init::Ok => {
                // Counted so tests can check that init and cleanup run once per instance.
                wasmgate_sdk::kv::incr("inits", 1, None);
                Ok(Scripted { config })
            }
            Init::Fail => Err(format!("init failed by {}", config.tag)),
            Init::Trap => panic!("trap in {}", config.tag),
        }
    }

    fn transport_interceptor(&mut self, ctx: &Ctx, req: HttpRequest) -> Result<TransportOutcome> {
        self.trace(ctx, "transport");
        match &self.config.transport {
            Transport::Pass => Ok(TransportOutcome::Pass),
            Transport::RewriteHeader(name, value) => {
                let mut headers = req.headers;
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                headers.push((name.clone(), value.clone()));
                Ok(TransportOutcome::Rewrite(HttpRewrite {
                    headers,
                    body: req.body,
                }))
            }
            Transport::Respond(status) => {
                let body = wasmgate_sdk::serde_json::json!({ "by": self.tag() });
                Ok(TransportOutcome::Respond(HttpResponse::json(
                    *status, &body,
                )?))
            }
            Transport::Error => Err(format!("error from {}", self.tag())),
            Transport::Trap => panic!("trap in {}", self.tag()),
            Transport::Loop => spin(),
        }
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        self.trace(ctx, "pre");
        ctx.set_state(LAST, &(req.provider(), req.model()))?;
        let tag = self.tag();
        let applies = match &self.config.pre_only_provider {
            Some(provider) => provider == req.provider(),
            None => true,
        };
        if !applies {
            return Ok(PreOutcome::Continue(req.to_request()));
        }
        match &self.config.pre {
            Pre::Continue => Ok(PreOutcome::Continue(req.to_request())),
            Pre::Pass => Ok(PreOutcome::Pass),
            Pre::Respond => Ok(PreOutcome::Respond(ChatResponse::assistant_text(
                req.provider(),
                req.model(),
                format!("responded by {tag}"),
            ))),
            Pre::Fail => Ok(PreOutcome::Fail(
                GatewayError::new(503, format!("failed by {tag}")).kind("server_error"),
            )),
            Pre::FailNoFallbacks => Ok(PreOutcome::Fail(
                GatewayError::new(403, format!("failed by {tag}"))
                    .kind("server_error")
                    .no_fallbacks(),
            )),
            Pre::Error => Err(format!("error from {tag}")),
            Pre::Trap => panic!("trap in {tag}"),
            Pre::Loop => spin(),
            Pre::Grow => grow(),
            Pre::Recurse => {
                let depth = recurse(0);
                Err(format!("recursion in {tag} ended at depth {depth}"))
            }
            Pre::RecurseShadow => {
                let depth = recurse_shadow(0);
                Err(format!("recursion in {tag} ended at depth {depth}"))
            }
            Pre::SetModel(model) => {
                let mut req = req.to_request();
                req.model = model.clone();
                Ok(PreOutcome::Continue(req))
            }
            Pre::SleepMs(ms) => {
                let end = now_ms().saturating_add(*ms);
                while now_ms() < end {
                    black_box(());
                }
                Ok(PreOutcome::Continue(req.to_request()))
            }
            Pre::KeepState(n) => {
                ctx.set_state("pad", &"x".repeat(*n))?;
                Ok(PreOutcome::Pass)
            }
            Pre::Describe => Ok(PreOutcome::Respond(ChatResponse::assistant_text(
                req.provider(),
                req.model(),
                describe_request(req).to_string(),
            ))),
        }
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        let trace = self.trace(ctx, "post");
        let tag = self.tag();
        if matches!(self.config.post, Post::Annotate | Post::AnnotateThenPass) {
            let refused = outcome.set_extra("model", "not a typed field").err();
            if let Err(why) = outcome.set_extra("annotated_by", tag) {
                // An error outcome: say why in the error's message.
                let err = outcome
                    .error()
                    .unwrap_or_else(|| GatewayError::new(500, ""));
                return Ok(Some(PostOutcome::Error(GatewayError {
                    message: format!("annotate refused: {why}"),
                    ..err
                })));
            }
            outcome.set_extra("typed_refusal", refused)?;
        }
        let outcome = match (&self.config.post, outcome.to_outcome()) {
            (Post::Keep | Post::Annotate, _) => return Ok(None),
            (Post::AnnotateThenPass, outcome) => outcome,
            (Post::Pass, outcome) => outcome,
            (Post::Recover, PostOutcome::Error(_)) => {
                let (provider, model) = ctx.state::<(String, String)>(LAST)?.unwrap_or_default();
                let text = format!("recovered by {tag}");
                PostOutcome::Response(ChatResponse::assistant_text(provider, model, text))
            }
            (Post::ToError, PostOutcome::Response(_)) => {
                PostOutcome::Error(GatewayError::new(502, format!("converted by {tag}")))
            }
            (Post::Recover | Post::ToError, outcome) => outcome,
            (Post::Describe, PostOutcome::Response(mut resp)) => {
                resp.set_extra("described", describe_outcome(outcome))?;
                PostOutcome::Response(resp)
            }
            (Post::Describe, PostOutcome::Error(mut err)) => {
                err.message = describe_outcome(outcome).to_string();
                PostOutcome::Error(err)
            }
            (Post::Error, _) => return Err(format!("error from {tag}")),
            (Post::Trap, _) => panic!("trap in {tag}"),
            (Post::Loop, _) => spin(),
        };
        // The whole trace so far, this hook included.
        Ok(Some(match outcome {
            PostOutcome::Response(mut resp) => {
                resp.set_extra("trace", &trace)?;
                PostOutcome::Response(resp)
            }
            PostOutcome::Error(err) => PostOutcome::Error(err.code(format!("trace:{trace}"))),
        }))
    }

    fn stream_chunk(&mut self, ctx: &Ctx, mut chunk: StreamChunk) -> Result<ChunkOutcome> {
        if chunk.index == 0 {
            self.trace(ctx, "chunk");
        }
        let tag = self.tag();
        Ok(match &self.config.chunk {
            Chunk::Pass => ChunkOutcome::Pass,
            Chunk::Upper => {
                chunk.content = chunk.content.map(|c| c.to_uppercase());
                ChunkOutcome::Emit(chunk)
            }
            Chunk::DropOdd if chunk.index % 2 == 1 => ChunkOutcome::Drop,
            Chunk::DropOdd => ChunkOutcome::Pass,
            Chunk::FailAt(n) if chunk.index == *n => {
                ChunkOutcome::Fail(GatewayError::new(502, format!("stream cut by {tag}")))
            }
            Chunk::FailAt(_) => ChunkOutcome::Pass,
            Chunk::Error => return Err(format!("error from {tag}")),
            Chunk::Trap => panic!("trap in {tag}"),
        })
    }

    fn on_error(&mut self, ctx: &Ctx, error: GatewayError) -> Result<Option<GatewayError>> {
        self.trace(ctx, "error");
        let tag = self.tag();
        match self.config.on_error {
            OnError::Pass => Ok(None),
            OnError::Mask => Ok(Some(
                GatewayError {
                    message: format!("masked by {tag}"),
                    ..error
                }
                .header("x-masked-by", tag),
            )),
            OnError::Error => Err(format!("error from {tag}")),
            OnError::Trap => panic!("trap in {tag}"),
        }
    }

    fn cleanup(&mut self) -> Result<()> {
        wasmgate_sdk::debug!("cleanup of {}", self.tag());
        wasmgate_sdk::kv::incr("cleanups", 1, None);
        match self.config.cleanup {
            Cleanup::Ok => Ok(()),
            Cleanup::Trap => panic!("trap in {}", self.tag()),
            Cleanup::Loop => spin(),
        }
    }
}

/// Spins forever in a loop the optimiser cannot remove.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks, keeping them all, until the allocator aborts.
fn grow() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        chunks.push(black_box(chunk));
        black_box(&mut chunks);
    }
}

/// Recurses without bound (not a tail call: the result is used after the call) with every value
/// in wasm locals, so the wasm call stack itself overflows; returns only if `black_box` lies.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let below = recurse(black_box(depth + 1));
    black_box(below.wrapping_add(depth))
}

/// Recurses without bound with a 256-byte array in every frame, which Rust keeps on its shadow
/// stack in linear memory: that stack runs out first, as in real Rust guests, and the guest
/// traps with an out-of-bounds memory access.
fn recurse_shadow(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let below = recurse_shadow(black_box(depth + 1));
    black_box(below.wrapping_add(frame[usize::try_from(depth % 32).unwrap_or(0)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config> {
        wasmgate_sdk::parse_config(json)
    }

    #[test]
    fn trace_is_comma_separated() {
        assert_eq!(append_trace(None, "A.pre"), "A.pre");
        assert_eq!(append_trace(Some(""), "A.pre"), "A.pre");
        assert_eq!(
            append_trace(Some("A.pre,B.pre"), "B.post"),
            "A.pre,B.pre,B.post"
        );
    }

    #[test]
    fn defaults() {
        let c = config(r#"{"tag": "A"}"#).unwrap();
        assert_eq!(c.tag, "A");
        assert_eq!(c.transport, Transport::Pass);
        assert_eq!(c.pre, Pre::Continue);
        assert_eq!(c.post, Post::Pass);
        assert_eq!(c.pre_only_provider, None);
        assert_eq!(c.init, Init::Ok);
    }

    #[test]
    fn every_action_parses() {
        let c = config(
            r#"{"tag": "B", "transport": "rewrite-header:X-Tag=b=1", "pre": "set-model:m-2",
                "post": "to-error", "pre_only_provider": "mock", "init": "fail"}"#,
        )
        .unwrap();
        assert_eq!(
            c.transport,
            Transport::RewriteHeader("x-tag".into(), "b=1".into())
        );
        assert_eq!(c.pre, Pre::SetModel("m-2".into()));
        assert_eq!(c.post, Post::ToError);
        assert_eq!(c.pre_only_provider.as_deref(), Some("mock"));
        assert_eq!(c.init, Init::Fail);
        let pres = [
            ("continue", Pre::Continue),
            ("respond", Pre::Respond),
            ("fail", Pre::Fail),
            ("fail-no-fallbacks", Pre::FailNoFallbacks),
            ("error", Pre::Error),
            ("trap", Pre::Trap),
            ("loop", Pre::Loop),
            ("grow", Pre::Grow),
            ("recurse", Pre::Recurse),
            ("sleep-ms:250", Pre::SleepMs(250)),
            ("keep-state:70000", Pre::KeepState(70_000)),
        ];
        for (text, pre) in pres {
            assert_eq!(Pre::try_from(text.to_owned()), Ok(pre));
        }
        for (text, post) in [
            ("pass", Post::Pass),
            ("keep", Post::Keep),
            ("recover", Post::Recover),
            ("error", Post::Error),
        ] {
            assert_eq!(Post::try_from(text.to_owned()), Ok(post));
        }
        assert_eq!(Post::try_from("trap".to_owned()), Ok(Post::Trap));
        assert_eq!(Post::try_from("loop".to_owned()), Ok(Post::Loop));
        assert_eq!(Init::try_from("trap".to_owned()), Ok(Init::Trap));
        assert_eq!(
            Transport::try_from("respond:429".to_owned()),
            Ok(Transport::Respond(429))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |json: &str| config(json).unwrap_err();
        assert_eq!(err("{}"), "invalid config: missing field `tag`");
        let e = err(r#"{"tag": "A", "pre": "explode"}"#);
        assert!(
            e.starts_with("invalid config: pre: unknown action \"explode\""),
            "{e}"
        );
        let e = err(r#"{"tag": "A", "post": "continue"}"#);
        assert!(e.starts_with("invalid config: post: unknown action"), "{e}");
        let e = err(r#"{"tag": "A", "transport": "respond:42"}"#);
        assert!(
            e.starts_with("invalid config: transport: expected respond:<status"),
            "{e}"
        );
        let e = err(r#"{"tag": "A", "transport": "rewrite-header:novalue"}"#);
        assert!(
            e.starts_with("invalid config: transport: expected rewrite-header"),
            "{e}"
        );
        let e = err(r#"{"tag": "A", "pre": "sleep-ms:soon"}"#);
        assert!(
            e.starts_with("invalid config: pre: expected sleep-ms"),
            "{e}"
        );
        let e = err(r#"{"tag": "A", "init": "maybe"}"#);
        assert!(e.starts_with("invalid config: init: unknown action"), "{e}");
        assert!(err(r#"{"tag": "A", "pree": "fail"}"#).contains("unknown field `pree`"));
    }
}
