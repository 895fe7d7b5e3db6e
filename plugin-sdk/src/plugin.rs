//! The [`Plugin`] trait: the one thing a plugin author implements.

use crate::{
    ChunkOutcome, Ctx, GatewayError, HttpRequest, Outcome, PostOutcome, PreOutcome, Request,
    Result, StreamChunk, TransportOutcome,
};

/// A gateway plugin: its constructor and the hooks it takes part in.
///
/// Implement [`init`](Plugin::init) and the hooks you need, and register the impl with the
/// [`plugin`](crate::plugin) attribute. Every hook has a default that leaves the request as it is;
/// the attribute reports to the gateway only the hooks your impl defines, so the gateway never
/// calls the others.
///
/// The gateway creates instances of a plugin as it needs them; each instance calls `init` once
/// and then serves one request at a time, with every hook of a request running on the same
/// instance. So `self` may carry state from a request's pre-hook to its post-hook, but state that
/// must be shared between instances or outlive one belongs in [`kv`](crate::kv).
///
/// A plugin that keeps nothing about a request in `self` (what a later hook needs goes in the
/// request's context with [`Ctx::set_state`](crate::Ctx::set_state), which works under every
/// isolation) should say so with [`SHARED_INSTANCES`](Plugin::SHARED_INSTANCES): the gateway
/// then shares its instances per hook call, so every call may land on another instance, and
/// under load a few warm instances serve every request in flight.
///
/// An `Err` from a hook is a plugin failure, handled by the failure policy the gateway configured
/// for the plugin; a panic traps the instance, which the gateway then discards.
pub trait Plugin: Sized + 'static {
    /// Whether the plugin keeps nothing about a request in `self` from one hook to the next,
    /// so that any instance may serve any hook call (the world's `shared-instances` flag).
    /// With `true` the gateway shares the plugin's instances per hook call unless its config
    /// sets `isolation`: a few warm instances serve every request in flight instead of one per
    /// request, which under load is faster and uses less memory. State in `self` that does not
    /// belong to one request (a parsed config, a compiled pattern) is fine either way.
    ///
    /// Default: `false`, every hook of a request runs on the instance its first hook ran on.
    const SHARED_INSTANCES: bool = false;

    /// A short human-readable name, shown in the gateway's logs and admin API.
    ///
    /// Default: the name of the crate that defines `Self` (e.g. `hello_world` for
    /// `hello_world::HelloWorld`).
    fn name() -> String {
        crate_name_of::<Self>().to_owned()
    }

    /// Creates an instance from the plugin's JSON config (`{}` when none is configured).
    ///
    /// Validate the config here and reject an invalid one with a message naming the bad field;
    /// [`parse_config`](crate::parse_config) does both for a `serde` type. The gateway refuses to
    /// load a plugin whose `init` fails. There is no request yet: [`Ctx`] is not available.
    fn init(config: &str) -> Result<Self>;

    /// Sees the raw HTTP request before its body is parsed (HTTP transport only), in plugin order.
    ///
    /// Return [`TransportOutcome::Pass`] to go on unchanged (cheapest),
    /// [`TransportOutcome::Rewrite`] to go on with new headers and body, or
    /// [`TransportOutcome::Respond`] to answer the client directly.
    ///
    /// Default: `Pass`.
    fn transport_interceptor(&mut self, ctx: &Ctx, req: HttpRequest) -> Result<TransportOutcome> {
        let _ = (ctx, req);
        Ok(TransportOutcome::Pass)
    }

    /// Runs before the provider is called, in plugin order.
    ///
    /// `req` is lent: read the parts the hook needs ([`Request::model`],
    /// [`Request::messages`], ...); each is copied from the gateway on first read, and a hook
    /// that reads nothing copies nothing.
    ///
    /// Return [`PreOutcome::Pass`] to go on with the request unchanged (the cheapest answer:
    /// nothing is copied back to the gateway), [`PreOutcome::Continue`] with an edited request,
    /// [`PreOutcome::Respond`] to answer without calling the provider, or [`PreOutcome::Fail`] to
    /// fail the request. In the last two cases the post-hooks of the plugins whose pre-hook ran,
    /// this one included, still see the outcome.
    ///
    /// Default: `Pass`.
    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let _ = (ctx, req);
        Ok(PreOutcome::Pass)
    }

    /// Runs after the provider (or a short-circuit), in exact reverse order of the pre-hooks, and
    /// only for plugins whose pre-hook ran.
    ///
    /// `outcome` is lent: read what the hook needs ([`Outcome::is_error`],
    /// [`Outcome::usage`], ...), or take a copy of the whole with [`Outcome::to_outcome`].
    ///
    /// Return `None` to hand the outcome on exactly as received (the cheapest answer: nothing is
    /// copied back to the gateway), or `Some` outcome to go on with: a response may be changed or
    /// turned into an error, an error may be changed or recovered into a response.
    ///
    /// Default: `None`.
    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        let _ = (ctx, outcome);
        Ok(None)
    }

    /// Runs on each chunk of a streamed completion (`stream: true`), in post-hook order, for the
    /// plugins whose pre-hook ran. The post-hooks see the assembled response once the stream
    /// ends, so a plugin that only needs the whole response implements `post_hook` alone.
    ///
    /// Return [`ChunkOutcome::Pass`] to send the chunk on unchanged (the cheapest answer: nothing
    /// is copied back to the gateway), [`ChunkOutcome::Emit`] with an edited chunk,
    /// [`ChunkOutcome::Drop`] to send nothing for it, or [`ChunkOutcome::Fail`] to end the
    /// stream with an error. A plugin that must see across chunk boundaries (a filter for a word
    /// split over two chunks) keeps the tail of the text in `self` and emits it with a later
    /// chunk: the last chunk of a choice has `finish_reason` set.
    ///
    /// Default: `Pass`.
    fn stream_chunk(&mut self, ctx: &Ctx, chunk: StreamChunk) -> Result<ChunkOutcome> {
        let _ = (ctx, chunk);
        Ok(ChunkOutcome::Pass)
    }

    /// The error stage: runs when the request ends in an error, after the post-hooks and before
    /// the error leaves the gateway, for every plugin in the chain. Rewrite the error (mask
    /// upstream details, add a header) and return it in `Some`, or return `None` to hand it on
    /// exactly as received (nothing is copied back); recovering is the post-hook's job.
    ///
    /// Default: `None`.
    fn on_error(&mut self, ctx: &Ctx, error: GatewayError) -> Result<Option<GatewayError>> {
        let _ = (ctx, error);
        Ok(None)
    }

    /// Called once when the instance is retired (plugin unloaded or gateway shut down); the
    /// instance is dropped right after.
    ///
    /// Default: nothing to do, `Ok(())`.
    fn cleanup(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The first path segment of `T`'s type name, which is the name of the crate defining it.
fn crate_name_of<T>() -> &'static str {
    let full = core::any::type_name::<T>();
    full.split("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Local;

    impl Plugin for Local {
        fn init(_config: &str) -> Result<Self> {
            Ok(Local)
        }
    }

    #[test]
    fn default_name_is_the_crate_name() {
        assert_eq!(Local::name(), "wasmgate_sdk");
    }
}
