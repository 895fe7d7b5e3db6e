//! Write [wasmgate](https://example.invalid/wasmgate) gateway plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`] with the hooks it needs, and the [`plugin`]
//! attribute on that impl, which registers it: it exports the type as the component's
//! implementation of the `wasmgate:plugin` world and reports to the gateway exactly the hooks the
//! impl defines, so hooks left out cost nothing. Build the crate as a `cdylib` for
//! `wasm32-wasip2` and the result is a plugin component.
//!
//! A complete plugin that rejects requests without a valid API key:
//!
//! ```
//! use wasmgate_sdk::{Ctx, GatewayError, Plugin, PreOutcome, Request, Result};
//!
//! /// Rejects requests whose `x-api-key` header is not one of `keys`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Auth {
//!     keys: Vec<String>,
//! }
//!
//! #[wasmgate_sdk::plugin]
//! impl Plugin for Auth {
//!     fn init(config: &str) -> Result<Self> {
//!         wasmgate_sdk::parse_config(config)
//!     }
//!
//!     fn pre_hook(&mut self, ctx: &Ctx, _req: &Request<'_>) -> Result<PreOutcome> {
//!         match ctx.header("x-api-key") {
//!             Some(key) if self.keys.contains(&key) => Ok(PreOutcome::Pass),
//!             _ => Ok(PreOutcome::Fail(
//!                 GatewayError::new(401, "invalid API key").kind("authentication_error").no_fallbacks(),
//!             )),
//!         }
//!     }
//! }
//! ```
//!
//! What the SDK provides:
//! - [`Request`] and [`Outcome`], the request a pre-hook and the outcome a post-hook are lent:
//!   each part is copied from the gateway only when the hook reads it;
//! - the data types of the world ([`ChatRequest`], [`ChatResponse`], [`GatewayError`], the
//!   outcome enums, ...), all `Clone + PartialEq + serde::Serialize + serde::Deserialize`, with
//!   small helpers ([`GatewayError::new`], [`ChatRequest::last_user_text`],
//!   [`ChatResponse::assistant_text`], [`ChatResponse::set_extra`], ...);
//! - [`Ctx`], the per-request context handed to every hook (request id, headers, values shared
//!   between plugins);
//! - [`kv`], state that outlives a request, with JSON helpers;
//! - [`digest::sha256`], computed by the gateway natively (hashing in wasm costs several times
//!   as much);
//! - logging macros ([`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`]) writing to the
//!   gateway's log, and [`now_ms`];
//! - [`parse_config`], which turns the JSON config into your type with errors naming the bad
//!   field.
//!
//! Errors are plain strings ([`Result`]): an `Err` from a hook is a plugin failure that the
//! gateway handles by the plugin's failure policy, while a panic traps the instance, which the
//! gateway discards.
#![deny(missing_docs)]

#[doc(hidden)]
// `allow`, not `expect`: whether rustc attributes these lints to macro-generated code depends on
// how the bindings are expanded (WIT_BINDGEN_DEBUG=1 writes them to a file, and then it does).
#[allow(
    unsafe_code,
    missing_docs,
    clippy::too_many_arguments,
    reason = "wit-bindgen generated ABI glue: raw pointers across the component boundary, one \
              argument per flattened value; the public types are documented where re-exported"
)]
pub mod bindings;

mod config;
mod ctx;
pub mod digest;
#[doc(hidden)]
pub mod export;
pub mod kv;
mod lent;
pub mod logging;
mod plugin;
mod types;

pub use config::{config_error, parse_config};
pub use ctx::{Ctx, MAX_CONTEXT_VALUE_BYTES};
pub use lent::{Outcome, Request};
pub use plugin::Plugin;
pub use types::{
    ChatRequest, ChatResponse, Choice, ChunkOutcome, GatewayError, Headers, Hooks, HttpRequest,
    HttpResponse, HttpRewrite, Message, PostOutcome, PreOutcome, StreamChunk, TransportOutcome,
    Usage,
};

/// Registers a [`Plugin`] implementation as the plugin of this component.
///
/// Put it on your `impl Plugin for T { ... }` block, once per crate. It leaves the impl as written
/// and generates, next to it:
/// - the export of `T` as the component's implementation of the `wasmgate:plugin` world;
/// - the `hooks()` export, reporting exactly the hooks the impl defines: `transport_interceptor`,
///   `pre_hook`, `post_hook`, `stream_chunk`, `on_error`, `cleanup`. The gateway never calls a hook that is not reported, so
///   a hook left to its trait default costs nothing;
/// - the instance slot: `init` stores the value it returns in a thread-local, every hook borrows
///   it mutably, and a hook called before a successful `init` fails with
///   `"plugin <name> not initialised"`. After `cleanup` returns, the instance is dropped.
///
/// Hooks are detected by their method names in the impl, so write them as methods of that very
/// impl (not through a macro that expands to them). The impl must not be generic.
///
/// ```
/// # use wasmgate_sdk::{Plugin, Result};
/// struct Noop;
///
/// #[wasmgate_sdk::plugin]
/// impl Plugin for Noop {
///     fn init(_config: &str) -> Result<Self> {
///         Ok(Noop)
///     }
/// }
/// ```
pub use wasmgate_sdk_macros::plugin;

/// serde_json, re-exported for editing `extra` fields and JSON bodies without another dependency.
pub use serde_json;

/// The result of every plugin function: errors are messages for the gateway's log and the client.
pub type Result<T, E = String> = core::result::Result<T, E>;

/// Milliseconds since the Unix epoch, from the gateway's clock.
pub fn now_ms() -> u64 {
    bindings::wasmgate::plugin::clock::now_ms()
}
