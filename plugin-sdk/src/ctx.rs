//! [`Ctx`]: the request context handed to every hook.

use crate::bindings::wasmgate::plugin::context;

/// The request being served, as seen by a hook: its id, its headers, and values that hooks and
/// plugins share for the length of the request (Bifrost's `ctx`).
///
/// A zero-sized handle; the SDK creates one for every hook call. The values live in the gateway,
/// so they are visible to every plugin of the request, in both its pre- and post-hooks.
#[derive(Debug)]
pub struct Ctx {
    _private: (),
}

impl Ctx {
    /// The handle for the request being served. Only the SDK's export glue creates one.
    pub(crate) const fn new() -> Self {
        Ctx { _private: () }
    }

    /// The gateway's id for the current request (unique per request).
    pub fn request_id(&self) -> String {
        context::request_id()
    }

    /// The value of a request header (name matched case-insensitively), as left by the
    /// transport interceptors.
    pub fn header(&self, name: &str) -> Option<String> {
        context::header(name)
    }

    /// A value a hook of this or another plugin stored for this request with [`Ctx::set`].
    pub fn get(&self, key: &str) -> Option<String> {
        context::get(key)
    }

    /// Stores `value` under `key` for the rest of this request, visible to every plugin.
    ///
    /// Keys are shared by all plugins: prefix them with your plugin's name (`"cache.status"`).
    pub fn set(&self, key: &str, value: &str) {
        context::set(key, value)
    }
}
