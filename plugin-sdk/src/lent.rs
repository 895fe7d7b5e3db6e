//! [`Request`] and [`Outcome`]: the request a pre-hook and the outcome a post-hook are lent.
//! The gateway keeps them; each part is copied into the plugin the first time the hook reads it,
//! so a hook pays only for what it reads.

use std::cell::OnceCell;

use serde_json::Value;

use crate::bindings::wasmgate::plugin::exchange;
use crate::types::extra_field;
use crate::{ChatRequest, GatewayError, Message, PostOutcome, Result, Usage};

/// The request a pre-hook is called with, as the plugins before this one left it.
///
/// Reading a part asks the gateway for it the first time and keeps it for later reads in the
/// same hook. To change the request, take a copy with [`Request::to_request`], change it and answer
/// [`PreOutcome::Continue`](crate::PreOutcome::Continue) with it.
pub struct Request<'a> {
    handle: &'a exchange::Request,
    provider: OnceCell<String>,
    model: OnceCell<String>,
    messages: OnceCell<Vec<Message>>,
    user: OnceCell<Option<String>>,
    fallbacks: OnceCell<Vec<String>>,
    extra: OnceCell<String>,
}

impl<'a> Request<'a> {
    /// The lent request behind `handle` (the SDK's export glue makes it).
    pub(crate) fn new(handle: &'a exchange::Request) -> Self {
        Request {
            handle,
            provider: OnceCell::new(),
            model: OnceCell::new(),
            messages: OnceCell::new(),
            user: OnceCell::new(),
            fallbacks: OnceCell::new(),
            extra: OnceCell::new(),
        }
    }

    /// Provider key from the `provider/model` address, e.g. `"mock"` or `"openai"`.
    pub fn provider(&self) -> &str {
        self.provider.get_or_init(|| self.handle.provider())
    }

    /// Model name without the provider prefix, e.g. `"gpt-4o-mini"`.
    pub fn model(&self) -> &str {
        self.model.get_or_init(|| self.handle.model())
    }

    /// The `provider/model` address.
    pub fn target(&self) -> String {
        // Concatenated rather than formatted: `format!` is dear in wasm.
        let (provider, model) = (self.provider(), self.model());
        let mut target = String::with_capacity(provider.len() + 1 + model.len());
        target.push_str(provider);
        target.push('/');
        target.push_str(model);
        target
    }

    /// The conversation so far (the most expensive part to read: every message is copied).
    pub fn messages(&self) -> &[Message] {
        self.messages.get_or_init(|| self.handle.messages())
    }

    /// The number of messages, without copying them.
    pub fn message_count(&self) -> usize {
        match self.messages.get() {
            Some(messages) => messages.len(),
            None => self.handle.message_count() as usize,
        }
    }

    /// The text of the last message whose role is `"user"`, if it has text; only that text is
    /// copied.
    pub fn last_user_text(&self) -> Option<String> {
        match self.messages.get() {
            Some(messages) => crate::types::last_user_text(messages).map(str::to_owned),
            None => self.handle.last_user_text(),
        }
    }

    /// Sampling temperature, when the client set one.
    pub fn temperature(&self) -> Option<f64> {
        self.handle.temperature()
    }

    /// Nucleus sampling probability mass, when the client set one.
    pub fn top_p(&self) -> Option<f64> {
        self.handle.top_p()
    }

    /// Upper bound on generated tokens (`max_tokens` or `max_completion_tokens`).
    pub fn max_tokens(&self) -> Option<u32> {
        self.handle.max_tokens()
    }

    /// Whether the client asked for a server-sent-event stream.
    pub fn stream(&self) -> bool {
        self.handle.stream()
    }

    /// The end-user id the client passed in `user`, when it passed one.
    pub fn user(&self) -> Option<&str> {
        self.user.get_or_init(|| self.handle.user()).as_deref()
    }

    /// Fallback targets as `provider/model`, tried in order when an attempt fails.
    pub fn fallbacks(&self) -> &[String] {
        self.fallbacks.get_or_init(|| self.handle.fallbacks())
    }

    /// Every other top-level field of the OpenAI request body, as a JSON object's text.
    pub fn extra(&self) -> &str {
        self.extra.get_or_init(|| self.handle.extra())
    }

    /// A top-level field of the request body that has no typed accessor (from `extra`).
    pub fn extra_field(&self, key: &str) -> Option<Value> {
        extra_field(self.extra(), key)
    }

    /// A copy of the whole request, to change and answer
    /// [`PreOutcome::Continue`](crate::PreOutcome::Continue) with.
    pub fn to_request(&self) -> ChatRequest {
        self.handle.get()
    }
}

impl core::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Request")
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

/// The outcome a post-hook is called with, a response or an error, as the post-hooks before
/// this one left it.
///
/// The accessors copy only what they return. To add a field to a response (a report, a
/// marker), call [`Outcome::set_extra`]: nothing is copied. To change anything else, take a
/// copy with [`Outcome::to_outcome`], change it and return it in `Some`.
pub struct Outcome<'a> {
    handle: &'a exchange::Outcome,
    is_error: OnceCell<bool>,
}

impl<'a> Outcome<'a> {
    /// The lent outcome behind `handle` (the SDK's export glue makes it).
    pub(crate) fn new(handle: &'a exchange::Outcome) -> Self {
        Outcome {
            handle,
            is_error: OnceCell::new(),
        }
    }

    /// Whether the outcome is an error.
    pub fn is_error(&self) -> bool {
        *self.is_error.get_or_init(|| self.handle.is_error())
    }

    /// The HTTP status the client would get: 200 for a response, the error's otherwise.
    pub fn status(&self) -> u16 {
        self.handle.status()
    }

    /// The response's token accounting; `None` for an error or when unknown.
    pub fn usage(&self) -> Option<Usage> {
        self.handle.usage()
    }

    /// The model that answered (without the provider prefix); `None` for an error.
    pub fn model(&self) -> Option<String> {
        self.handle.model()
    }

    /// The text of the first choice of a response; `None` for an error or without text.
    pub fn text(&self) -> Option<String> {
        self.handle.text()
    }

    /// Why the first choice of a response stopped; `None` for an error or when unknown.
    pub fn finish_reason(&self) -> Option<String> {
        self.handle.finish_reason()
    }

    /// The error; `None` for a response.
    pub fn error(&self) -> Option<GatewayError> {
        self.handle.error()
    }

    /// A copy of the whole outcome, to change and return in `Some`.
    pub fn to_outcome(&self) -> PostOutcome {
        self.handle.get()
    }

    /// Sets top-level field `key` of the response body to `value`, without copying the
    /// response: `outcome.set_extra("x_cache", "miss")?` then `Ok(None)`. The field is set on
    /// whatever response the hook hands on, the lent one or one it returns; it is dropped if
    /// the hook returns an error. Fails for an error outcome, for a field the response types
    /// itself (`id`, `created`, `model`, `choices`, `usage`) and past the hook's output limit.
    pub fn set_extra(&self, key: &str, value: impl serde::Serialize) -> Result<()> {
        let json =
            serde_json::to_string(&value).map_err(|e| format!("cannot serialise {key}: {e}"))?;
        self.handle.set_extra(key, &json)
    }
}

impl core::fmt::Debug for Outcome<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outcome")
            .field("is_error", &self.is_error())
            .finish_non_exhaustive()
    }
}
