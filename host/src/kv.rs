//! The key-value store behind the `kv` import: state that outlives a request (caches, counters),
//! namespaced per plugin, with TTLs and atomic increments, bounded in size.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The value alone is larger than the per-value limit.
    #[error("value of {size} bytes exceeds the per-value limit of {limit} bytes")]
    ValueTooLarge {
        /// Size of the refused value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store is full even after expired entries were dropped.
    #[error("the key-value store is full ({limit} bytes); the write was dropped")]
    Full {
        /// The store's byte limit.
        limit: usize,
    },
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
    fn cost(key: &(String, String), value_len: usize) -> usize {
        key.0.len() + key.1.len() + value_len + 48
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(String, String), Entry>,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, key: &(String, String)) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= Entry::cost(key, old.value.len());
        }
    }

    fn sweep(&mut self, now: Instant) {
        let dead: Vec<_> = self
            .map
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            self.remove(&key);
        }
    }

    fn insert(&mut self, key: (String, String), entry: Entry, limit: usize) -> Result<(), KvError> {
        self.remove(&key);
        let cost = Entry::cost(&key, entry.value.len());
        if self.bytes + cost > limit {
            self.sweep(Instant::now());
            if self.bytes + cost > limit {
                return Err(KvError::Full { limit });
            }
        }
        self.bytes += cost;
        self.map.insert(key, entry);
        Ok(())
    }
}

/// An in-memory key-value store shared by every plugin instance of the process.
///
/// Its lock is asynchronous, so a hook call waiting for it can be given up when the call's
/// deadline passes (see the `kv` host import).
#[derive(Debug)]
pub struct KvStore {
    inner: Mutex<Inner>,
    max_bytes: usize,
    max_value_bytes: usize,
}

impl KvStore {
    /// A store holding at most `max_bytes` (keys, values and overhead), each value at most
    /// `max_value_bytes`.
    pub fn new(max_bytes: usize, max_value_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            max_value_bytes,
        }
    }

    async fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().await
    }

    /// The live value under `namespace`/`key`.
    pub async fn get(&self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut inner = self.lock().await;
        let k = (namespace.to_string(), key.to_string());
        match inner.map.get(&k) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                inner.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Stores a value, optionally expiring after `ttl`.
    pub async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        if value.len() > self.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        let expires = ttl.map(|t| Instant::now() + t);
        self.lock().await.insert(
            (namespace.to_string(), key.to_string()),
            Entry { value, expires },
            self.max_bytes,
        )
    }

    /// Adds `delta` to the decimal integer under the key and returns the result. An absent,
    /// expired or non-integer value starts from 0; only a new key takes `ttl`.
    pub async fn incr(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let now = Instant::now();
        let k = (namespace.to_string(), key.to_string());
        let mut inner = self.lock().await;
        let (current, expires) = match inner.map.get(&k) {
            Some(e) if e.live(now) => (
                std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0),
                e.expires,
            ),
            _ => (0, ttl.map(|t| now + t)),
        };
        let next = current.saturating_add(delta);
        inner.insert(
            k,
            Entry {
                value: next.to_string().into_bytes(),
                expires,
            },
            self.max_bytes,
        )?;
        Ok(next)
    }

    /// Removes the key.
    pub async fn delete(&self, namespace: &str, key: &str) {
        self.lock()
            .await
            .remove(&(namespace.to_string(), key.to_string()));
    }

    /// Holds the store's lock until the guard drops: lets tests stall every other user.
    #[cfg(test)]
    pub(crate) async fn hold(&self) -> impl Drop + '_ {
        self.lock().await
    }

    /// Bytes in use (keys, values and bookkeeping).
    pub async fn bytes_used(&self) -> usize {
        self.lock().await.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespaces_ttl_and_incr() {
        let kv = KvStore::new(1 << 20, 1 << 10);
        kv.set("a", "k", b"v".to_vec(), None).await.expect("fits");
        assert_eq!(kv.get("a", "k").await.as_deref(), Some(&b"v"[..]));
        assert_eq!(kv.get("b", "k").await, None);
        kv.set("a", "t", b"x".to_vec(), Some(Duration::ZERO))
            .await
            .expect("fits");
        assert_eq!(kv.get("a", "t").await, None);
        assert_eq!(kv.incr("a", "n", 2, None).await, Ok(2));
        assert_eq!(kv.incr("a", "n", -5, None).await, Ok(-3));
        assert_eq!(
            kv.incr("a", "k", 1, None).await,
            Ok(1),
            "non-integer resets to 0"
        );
        kv.delete("a", "n").await;
        assert_eq!(kv.get("a", "n").await, None);
    }

    #[tokio::test]
    async fn limits_refuse_oversized_and_overflowing_writes() {
        let kv = KvStore::new(200, 100);
        assert!(matches!(
            kv.set("a", "k", vec![0; 101], None).await,
            Err(KvError::ValueTooLarge { .. })
        ));
        kv.set("a", "k1", vec![0; 90], None).await.expect("fits");
        assert!(matches!(
            kv.set("a", "k2", vec![0; 90], None).await,
            Err(KvError::Full { .. })
        ));
        kv.delete("a", "k1").await;
        assert_eq!(kv.bytes_used().await, 0);
        kv.set("a", "k2", vec![0; 90], None)
            .await
            .expect("fits after delete");
    }
}
