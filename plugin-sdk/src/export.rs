//! Glue between the world's exports and a [`Plugin`] (used by the `#[plugin]` expansion only).
//!
//! The attribute generates, in the plugin's crate, a thread-local [`Slot`] and an implementation
//! of the bindings' `Guest` trait whose functions forward to the functions here. Keeping the logic
//! here keeps the generated code to a few lines and lets it be read and tested like normal code.

use std::cell::RefCell;
use std::thread::LocalKey;

pub use crate::bindings::Guest;
use crate::bindings::wasmgate::plugin::exchange;
use crate::{
    ChunkOutcome, Ctx, GatewayError, Hooks, HttpRequest, Outcome, Plugin, PostOutcome, PreOutcome,
    Request, Result, StreamChunk,
};
use crate::{TransportOutcome, bindings};

/// Where an instance's plugin value lives between calls: set by `init`, dropped after `cleanup`.
pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

/// Which hooks an impl defines (what the `hooks` export reports).
#[derive(Debug, Clone, Copy, Default)]
pub struct Defined {
    /// `transport_interceptor`.
    pub transport: bool,
    /// `pre_hook`.
    pub pre: bool,
    /// `post_hook`.
    pub post: bool,
    /// `stream_chunk`.
    pub stream_chunk: bool,
    /// `on_error`.
    pub on_error: bool,
    /// `cleanup`.
    pub cleanup: bool,
}

/// `hooks` export: the flags for the hooks that are present, and `shared-instances` when the
/// plugin declares [`Plugin::SHARED_INSTANCES`].
pub fn hooks(defined: Defined, shared_instances: bool) -> Hooks {
    let mut hooks = Hooks::empty();
    hooks.set(Hooks::SHARED_INSTANCES, shared_instances);
    hooks.set(Hooks::TRANSPORT_INTERCEPTOR, defined.transport);
    hooks.set(Hooks::PRE_HOOK, defined.pre);
    hooks.set(Hooks::POST_HOOK, defined.post);
    hooks.set(Hooks::STREAM_CHUNK, defined.stream_chunk);
    hooks.set(Hooks::ON_ERROR, defined.on_error);
    hooks.set(Hooks::CLEANUP, defined.cleanup);
    hooks
}

/// `init` export: builds the plugin from its config and stores it, replacing any previous one.
pub fn init<T: Plugin>(slot: &'static Slot<T>, config: String) -> Result<()> {
    slot.with(|cell| cell.replace(None));
    let plugin = T::init(&config)?;
    slot.with(|cell| cell.replace(Some(plugin)));
    Ok(())
}

/// `transport-interceptor` export.
pub fn transport_interceptor<T: Plugin>(
    slot: &'static Slot<T>,
    req: HttpRequest,
) -> Result<TransportOutcome> {
    with_plugin(slot, "transport-interceptor", |p, ctx| {
        p.transport_interceptor(ctx, req)
    })
}

/// `pre-hook` export.
pub fn pre_hook<T: Plugin>(slot: &'static Slot<T>, req: &exchange::Request) -> Result<PreOutcome> {
    with_plugin(slot, "pre-hook", |p, ctx| {
        p.pre_hook(ctx, &Request::new(req))
    })
}

/// `post-hook` export.
pub fn post_hook<T: Plugin>(
    slot: &'static Slot<T>,
    outcome: &exchange::Outcome,
) -> Result<Option<PostOutcome>> {
    with_plugin(slot, "post-hook", |p, ctx| {
        p.post_hook(ctx, &Outcome::new(outcome))
    })
}

/// `stream-chunk` export.
pub fn stream_chunk<T: Plugin>(slot: &'static Slot<T>, chunk: StreamChunk) -> Result<ChunkOutcome> {
    with_plugin(slot, "stream-chunk", |p, ctx| p.stream_chunk(ctx, chunk))
}

/// `on-error` export.
pub fn on_error<T: Plugin>(
    slot: &'static Slot<T>,
    error: GatewayError,
) -> Result<Option<GatewayError>> {
    with_plugin(slot, "on-error", |p, ctx| p.on_error(ctx, error))
}

/// `cleanup` export: runs the plugin's cleanup, then drops the plugin.
pub fn cleanup<T: Plugin>(slot: &'static Slot<T>) -> Result<()> {
    let result = with_plugin(slot, "cleanup", |p, _| p.cleanup());
    slot.with(|cell| cell.replace(None));
    result
}

/// Runs `hook` on the stored plugin, or fails if there is none.
fn with_plugin<T: Plugin, R>(
    slot: &'static Slot<T>,
    hook: &str,
    f: impl FnOnce(&mut T, &Ctx) -> Result<R>,
) -> Result<R> {
    slot.with(|cell| {
        let mut guard = cell
            .try_borrow_mut()
            .map_err(|_| format!("plugin {}: {hook} re-entered", T::name()))?;
        match guard.as_mut() {
            Some(plugin) => f(plugin, &Ctx::new()),
            None => Err(format!(
                "plugin {} not initialised: {hook} called before a successful init",
                T::name()
            )),
        }
    })
}

/// Re-exported so the generated code names the `export!` macro through this crate.
pub use bindings::export;

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        calls: u32,
    }

    impl Plugin for Counter {
        fn init(config: &str) -> Result<Self> {
            match config {
                "bad" => Err("bad config".into()),
                _ => Ok(Counter { calls: 0 }),
            }
        }
        fn cleanup(&mut self) -> Result<()> {
            self.calls += 1;
            Ok(())
        }
    }

    thread_local! {
        static SLOT: RefCell<Option<Counter>> = const { RefCell::new(None) };
    }

    #[test]
    fn hooks_flags_follow_presence() {
        assert_eq!(hooks(Defined::default(), false), Hooks::empty());
        let some = Defined {
            pre: true,
            post: true,
            ..Defined::default()
        };
        assert_eq!(hooks(some, false), Hooks::PRE_HOOK | Hooks::POST_HOOK);
        assert_eq!(
            hooks(some, true),
            Hooks::PRE_HOOK | Hooks::POST_HOOK | Hooks::SHARED_INSTANCES
        );
        let all = Defined {
            transport: true,
            pre: true,
            post: true,
            stream_chunk: true,
            on_error: true,
            cleanup: true,
        };
        assert_eq!(hooks(all, true), Hooks::all());
        assert_eq!(hooks(all, false), Hooks::all() - Hooks::SHARED_INSTANCES);
    }

    #[test]
    fn lifecycle() {
        let before = cleanup(&SLOT).unwrap_err();
        assert!(before.contains("not initialised"), "{before}");
        assert_eq!(init(&SLOT, "bad".into()), Err("bad config".into()));
        init(&SLOT, "{}".into()).unwrap();
        // No host calls: cleanup does not touch the context.
        cleanup(&SLOT).unwrap();
        assert!(SLOT.with(|s| s.borrow().is_none()));
    }
}
