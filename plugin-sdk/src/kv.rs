//! State that outlives a request: caches, counters, rate-limit windows.
//!
//! Each plugin has its own namespace, shared by all its instances; other plugins' keys are
//! invisible. Time-to-live values are [`Duration`]s, sent to the gateway in whole milliseconds
//! (rounded up, so a non-zero TTL never becomes zero); `None` means the entry does not expire.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::bindings::wasmgate::plugin::kv as host;

/// The value stored under `key`, unless it is absent or expired.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Stores `value` under `key`; with a `ttl`, it expires that long from now.
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) {
    host::set(key, value, ttl.map(ttl_ms))
}

/// Atomically adds `delta` to the integer under `key` and returns the new value.
///
/// An absent or expired key starts at 0 and takes `ttl`; an existing key keeps its expiry. A key
/// holding something other than a decimal integer is reset to 0 first.
pub fn incr(key: &str, delta: i64, ttl: Option<Duration>) -> i64 {
    host::incr(key, delta, ttl.map(ttl_ms))
}

/// Removes `key` (nothing happens if it is absent).
pub fn delete(key: &str) {
    host::delete(key)
}

/// The value under `key` decoded from JSON; `Ok(None)` when absent or expired, `Err` when the
/// stored bytes are not a valid `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    match get(key) {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("kv entry {key:?} is not valid JSON for this type: {e}")),
    }
}

/// Stores `value` as JSON under `key`; with a `ttl`, it expires that long from now.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T, ttl: Option<Duration>) -> Result<()> {
    let bytes = to_json(value)?;
    set(key, &bytes, ttl);
    Ok(())
}

/// Serialises `value` to JSON bytes with a message that names the failure.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| format!("cannot serialise value to JSON: {e}"))
}

/// A TTL in whole milliseconds, rounded up and saturating at `u64::MAX`.
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_rounded_up_to_whole_milliseconds() {
        assert_eq!(ttl_ms(Duration::ZERO), 0);
        assert_eq!(ttl_ms(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::from_secs(300)), 300_000);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }
}
