//! [`Ctx`]: the request context handed to every hook.

use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
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

    /// This plugin's name in the gateway's config (the context value `gateway.plugin`). Two
    /// entries of one component in a chain (say a per-key and a global `rate-limit`) have
    /// different names. Asked of the gateway once per instance.
    pub fn plugin_name(&self) -> &'static str {
        static NAME: OnceLock<String> = OnceLock::new();
        NAME.get_or_init(|| context::get(PLUGIN_KEY).unwrap_or_default())
    }

    /// What this plugin kept for the current request with [`Ctx::set_state`] under `key`:
    /// `Ok(None)` when nothing is kept (or it was cleared), `Err` when the value is not a valid
    /// `T`.
    ///
    /// Request state lives in the request's context, not in the instance: a pre-hook keeps
    /// what its post-hook needs (or a stream chunk what the next needs) here, and the plugin
    /// works under every isolation the gateway may choose, `shared` included, where
    /// each hook call may run on another instance.
    pub fn state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let key = self.state_key(key);
        match context::get(&key) {
            None => Ok(None),
            Some(text) if text == CLEARED => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("context value {key:?} is not valid JSON for this type: {e}")),
        }
    }

    /// Keeps `value` (as JSON) for this plugin's later hooks of the current request, under
    /// `<plugin name>.<key>` in the context (which other plugins can read too). `Err` when it
    /// cannot be serialised or its JSON is longer than [`MAX_CONTEXT_VALUE_BYTES`] (the gateway
    /// would drop it, and a later hook would read what was kept before).
    pub fn set_state<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        context::set(&self.state_key(key), &state_json(key, value)?);
        Ok(())
    }

    /// Forgets what this plugin kept under `key` for the current request.
    pub fn clear_state(&self, key: &str) {
        context::set(&self.state_key(key), CLEARED);
    }

    fn state_key(&self, key: &str) -> String {
        let name = self.plugin_name();
        let mut full = String::with_capacity(name.len() + 1 + key.len());
        full.push_str(name);
        full.push('.');
        full.push_str(key);
        full
    }
}

/// The longest context value the gateway keeps, in bytes (`context.set` drops longer ones).
pub const MAX_CONTEXT_VALUE_BYTES: usize = 64 * 1024;

/// `value` as the JSON [`Ctx::set_state`] keeps under `key`, checked against
/// [`MAX_CONTEXT_VALUE_BYTES`].
fn state_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<String> {
    let json = serde_json::to_string(value)
        .map_err(|e| format!("cannot serialise the state {key:?} to JSON: {e}"))?;
    if json.len() > MAX_CONTEXT_VALUE_BYTES {
        return Err(format!(
            "the state {key:?} is {} bytes as JSON, over the gateway's \
             {MAX_CONTEXT_VALUE_BYTES} bytes per context value; keep less of it",
            json.len()
        ));
    }
    Ok(json)
}

/// The context value of cleared state (the context has no delete): JSON's `null`.
const CLEARED: &str = "null";

/// The context key the gateway answers with the calling plugin's configured name.
const PLUGIN_KEY: &str = "gateway.plugin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_longer_than_the_context_keeps_is_refused_naming_the_key() {
        let fits = "x".repeat(MAX_CONTEXT_VALUE_BYTES - 2);
        assert_eq!(
            state_json("seen", &fits).unwrap().len(),
            MAX_CONTEXT_VALUE_BYTES
        );
        let over = "x".repeat(MAX_CONTEXT_VALUE_BYTES - 1);
        let err = state_json("seen", &over).unwrap_err();
        assert_eq!(
            err,
            "the state \"seen\" is 65537 bytes as JSON, over the gateway's 65536 bytes per \
             context value; keep less of it"
        );
        assert_eq!(state_json("pending", &("p", 3)).unwrap(), r#"["p",3]"#);
    }
}
