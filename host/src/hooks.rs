//! The plugin hook contract in domain types: what each hook receives and may decide.
//!
//! These mirror the WIT world (`wit/plugin.wit`); the runtime converts between them and the
//! generated bindings, so nothing outside `runtime` sees generated code.

use crate::chat::{ChatRequest, ChatResponse};
use crate::error::GatewayError;

/// HTTP headers in order, names lower-case.
pub type Headers = Vec<(String, String)>;

/// The raw HTTP request a transport interceptor sees.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Headers,
    /// Raw body.
    pub body: Vec<u8>,
}

/// A raw HTTP response a transport interceptor answers with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
}

/// What a transport interceptor decided.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportOutcome {
    /// Go on unchanged.
    Pass,
    /// Go on with these headers and body.
    Rewrite {
        /// The new headers.
        headers: Headers,
        /// The new body.
        body: Vec<u8>,
    },
    /// Answer the client with this response; nothing else runs.
    Respond(HttpResponse),
}

/// What a pre-hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum PreOutcome {
    /// Go on with the request as it was given to the hook.
    Pass,
    /// Go on with this (rewritten) request.
    Continue(ChatRequest),
    /// Skip the provider and answer with this response.
    Respond(ChatResponse),
    /// Skip the provider and fail with this error.
    Fail(GatewayError),
}

/// The state of a request after the provider or a short-circuit; what post-hooks transform.
pub type Outcome = Result<ChatResponse, GatewayError>;

/// What a post-hook handed on.
#[derive(Debug, Clone, PartialEq)]
pub enum PostDecision {
    /// The outcome it was lent, unchanged.
    Unchanged,
    /// The response it was lent, with these top-level body fields set (in order; a later one of
    /// the same name wins), through `outcome.set-extra`.
    Annotated(Vec<(String, serde_json::Value)>),
    /// Another outcome (with any fields it set already applied).
    Replaced(Outcome),
}

pub use crate::stream::StreamChunk;

/// What a stream-chunk hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkOutcome {
    /// Send the chunk on as it was given.
    Pass,
    /// Send this chunk on.
    Emit(StreamChunk),
    /// Send nothing for this chunk.
    Drop,
    /// End the stream with this error.
    Fail(GatewayError),
}

/// The hooks a plugin declares it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct HookSet {
    /// Implements `transport-interceptor`.
    pub transport_interceptor: bool,
    /// Implements `pre-hook`.
    pub pre_hook: bool,
    /// Implements `post-hook`.
    pub post_hook: bool,
    /// Implements `stream-chunk`.
    pub stream_chunk: bool,
    /// Implements `on-error`.
    pub on_error: bool,
    /// Implements `cleanup`.
    pub cleanup: bool,
}

impl HookSet {
    /// Whether the plugin implements `hook` (`init` always counts as implemented).
    pub fn has(&self, hook: Hook) -> bool {
        match hook {
            Hook::Init => true,
            Hook::TransportInterceptor => self.transport_interceptor,
            Hook::PreHook => self.pre_hook,
            Hook::PostHook => self.post_hook,
            Hook::StreamChunk => self.stream_chunk,
            Hook::OnError => self.on_error,
            Hook::Cleanup => self.cleanup,
        }
    }

    /// Whether the plugin takes part in requests at all.
    pub fn any_request_hook(&self) -> bool {
        self.transport_interceptor
            || self.pre_hook
            || self.post_hook
            || self.stream_chunk
            || self.on_error
    }
}

/// Which hook a call or failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `init`, when an instance is created.
    Init,
    /// `transport-interceptor`.
    TransportInterceptor,
    /// `pre-hook`.
    PreHook,
    /// `post-hook`.
    PostHook,
    /// `stream-chunk`.
    StreamChunk,
    /// `on-error`.
    OnError,
    /// `cleanup`.
    Cleanup,
}

impl Hook {
    /// Every hook, in the order of [`Hook::index`].
    pub const ALL: [Hook; 7] = [
        Hook::Init,
        Hook::TransportInterceptor,
        Hook::PreHook,
        Hook::PostHook,
        Hook::StreamChunk,
        Hook::OnError,
        Hook::Cleanup,
    ];

    /// The hook's position in [`Hook::ALL`] (for per-hook counters).
    pub fn index(self) -> usize {
        match self {
            Hook::Init => 0,
            Hook::TransportInterceptor => 1,
            Hook::PreHook => 2,
            Hook::PostHook => 3,
            Hook::StreamChunk => 4,
            Hook::OnError => 5,
            Hook::Cleanup => 6,
        }
    }

    /// The WIT name of the hook.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Init => "init",
            Hook::TransportInterceptor => "transport-interceptor",
            Hook::PreHook => "pre-hook",
            Hook::PostHook => "post-hook",
            Hook::StreamChunk => "stream-chunk",
            Hook::OnError => "on-error",
            Hook::Cleanup => "cleanup",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_all() {
        for (i, hook) in Hook::ALL.iter().enumerate() {
            assert_eq!(hook.index(), i, "{hook}");
        }
    }
}
