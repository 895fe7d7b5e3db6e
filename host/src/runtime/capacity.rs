//! The instance budget: at most `runtime.max_instances` plugin instances exist at once (the
//! pooling allocator's size), warm idle ones included. A request that needs an instance when
//! the budget is spent does not fail: it takes an instance of its plugin given back meanwhile,
//! or the place of an idle instance of another plugin (cleaned up and dropped), or waits for a
//! place to be freed, up to a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::plugin::LoadedPlugin;

/// The budget, shared by every plugin of a runtime.
pub(crate) struct Capacity {
    permits: Arc<Semaphore>,
    total: usize,
    /// Every plugin loaded on the runtime (dead ones are pruned as they are met), whose idle
    /// instances can be given up for another plugin's request.
    plugins: Mutex<Vec<Weak<LoadedPlugin>>>,
    /// Held by the one request at a time that creates instances for a whole chain.
    gate: tokio::sync::Mutex<()>,
    /// Signalled whenever an instance goes back to a pool, for requests waiting for one.
    changed: Notify,
    /// Requests waiting for `changed` (see [`Capacity::waiting`]): with none, an instance
    /// given back signals nobody and skips the `Notify`'s lock, the case on every hook call
    /// of a shared plugin.
    waiting: AtomicUsize,
}

/// Counts a request as waiting for [`Capacity::changed`] while it lives.
pub(super) struct Waiting<'a>(&'a Capacity);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A place in the budget, held by an instance for its whole life.
pub(crate) type Permit = OwnedSemaphorePermit;

impl Capacity {
    /// A budget of `total` instances.
    pub(super) fn new(total: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
            plugins: Mutex::new(Vec::new()),
            gate: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Resolves at the next [`notify_changed`](Self::notify_changed). Only for a request
    /// counted as [`waiting`](Self::waiting): take that first, then arm this, then look at the
    /// pool again.
    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Counts the caller as waiting for [`changed`](Self::changed) until the guard is
    /// dropped. Sequentially consistent with [`notify_changed`](Self::notify_changed): an
    /// instance given back either finds the count raised and signals, or was pushed before the
    /// waiter raised it, and the waiter's next look at the pool (under the pool's lock) finds
    /// it.
    pub(super) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }

    /// Wakes the requests waiting for an instance to come back to a pool (call it after the
    /// instance is in the pool).
    pub(super) fn notify_changed(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Waits for the turn to create instances for a whole chain (see
    /// [`checkout_all`](super::plugin::checkout_all)).
    pub(super) async fn gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// The size of the budget.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Instances that can still be created without waiting.
    pub(super) fn available(&self) -> usize {
        self.permits.available_permits()
    }

    fn plugins(&self) -> std::sync::MutexGuard<'_, Vec<Weak<LoadedPlugin>>> {
        self.plugins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `plugin`'s idle instances available to other plugins' requests.
    pub(super) fn register(&self, plugin: &Arc<LoadedPlugin>) {
        let mut plugins = self.plugins();
        plugins.retain(|p| p.strong_count() > 0);
        plugins.push(Arc::downgrade(plugin));
    }

    /// A place for a new instance if one is free now (background work that must not wait).
    pub(super) fn try_acquire(&self) -> Option<Permit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A place for a new instance: a free one, else the first freed before `deadline`. `None`
    /// when the deadline passes first.
    pub(super) async fn acquire(&self, deadline: Instant) -> Option<Permit> {
        if let Some(permit) = self.try_acquire() {
            return Some(permit);
        }
        tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Drops one idle instance of the plugin holding the most (after its `cleanup`), so its
    /// place goes to whoever waits. Returns whether one was found.
    pub(super) fn evict_one(&self) -> bool {
        let live: Vec<Arc<LoadedPlugin>> =
            self.plugins().iter().filter_map(Weak::upgrade).collect();
        live.iter()
            .max_by_key(|p| p.idle_instances())
            .is_some_and(|p| p.evict_idle())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_spent_budget_waits_until_a_place_is_freed_or_the_deadline() {
        let capacity = Capacity::new(2);
        let a = capacity.try_acquire().unwrap();
        let _b = capacity.try_acquire().unwrap();
        assert!(capacity.try_acquire().is_none());
        assert_eq!(capacity.available(), 0);
        // Nothing idle to give up and nobody frees a place: the deadline ends the wait.
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(capacity.acquire(soon).await.is_none());
        // A place freed while waiting goes to the waiter.
        let later = Instant::now() + Duration::from_secs(30);
        let (got, ()) = tokio::join!(capacity.acquire(later), async move {
            tokio::task::yield_now().await;
            drop(a);
        });
        assert!(got.is_some());
    }
}
