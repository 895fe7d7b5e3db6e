//! Tests that measure the whole process (open file handles, resident memory) must not overlap
//! other tests' gateways, whose sockets and plugin instances (tens of MiB for a Python one) they
//! would count. Every [`TestGateway`](crate::TestGateway) holds a [`Share`] while it lives;
//! [`alone`] waits until no gateway of another test is alive and keeps new ones from starting
//! until its guard is dropped. The waiting is not fair on purpose: a test that already holds a
//! gateway can always start another, so no test waits for itself.

use std::sync::Mutex;
use std::thread::ThreadId;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    /// Gateways alive in tests other than the exclusive one.
    shares: usize,
    /// The thread of the test running alone (a `#[tokio::test]` body runs on its own thread).
    alone: Option<ThreadId>,
}

static STATE: Mutex<State> = Mutex::new(State {
    shares: 0,
    alone: None,
});
static CHANGED: Notify = Notify::const_new();

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A gateway's share: while one exists, no other test runs [`alone`].
#[derive(Debug)]
pub struct Share(bool);

impl Drop for Share {
    fn drop(&mut self) {
        if self.0 {
            state().shares -= 1;
            CHANGED.notify_waiters();
        }
    }
}

/// The guard of a test running alone.
#[derive(Debug)]
pub struct Alone(());

impl Drop for Alone {
    fn drop(&mut self) {
        state().alone = None;
        CHANGED.notify_waiters();
    }
}

/// A share for a gateway about to start (waits while another test runs alone).
pub(crate) async fn share() -> Share {
    let me = std::thread::current().id();
    loop {
        let changed = CHANGED.notified();
        {
            let mut state = state();
            match state.alone {
                Some(owner) if owner == me => return Share(false),
                Some(_) => {}
                None => {
                    state.shares += 1;
                    return Share(true);
                }
            }
        }
        changed.await;
    }
}

/// Waits until no other test's gateway is alive, then keeps new ones from starting until the
/// guard is dropped. For tests that measure the process's file handles or memory.
pub async fn alone() -> Alone {
    let me = std::thread::current().id();
    loop {
        let changed = CHANGED.notified();
        {
            let mut state = state();
            if state.alone.is_none() && state.shares == 0 {
                state.alone = Some(me);
                return Alone(());
            }
        }
        changed.await;
    }
}
