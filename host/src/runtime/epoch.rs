//! The epoch ticker: one thread that advances every engine's epoch each millisecond, which is
//! what lets a wasm call notice its wall-clock deadline (and yield to other tasks). It ticks
//! only while wasm runs: with no call in progress it parks, so an idle gateway uses no CPU for
//! it. It lingers for a few ticks after the last call, so steady traffic does not park and
//! wake it around every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::Duration;

/// How often the epoch advances while wasm runs; the granularity of wall-clock deadlines.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The ticker of one runtime (cheap to clone).
#[derive(Clone)]
pub(crate) struct Ticker(Arc<Shared>);

struct Shared {
    engines: Mutex<Vec<wasmtime::EngineWeak>>,
    /// Wasm calls (and instantiations) in progress.
    active: AtomicUsize,
    thread: OnceLock<Thread>,
    /// Ticks so far (for the tests and for anyone curious).
    ticks: std::sync::atomic::AtomicU64,
}

/// Keeps the ticker ticking while it lives: held around every entry into wasm.
pub(crate) struct Ticking(Arc<Shared>);

impl Ticker {
    /// Starts the ticker's thread; it ends once the last clone of the ticker is dropped.
    pub(super) fn start() -> Self {
        let shared = Arc::new(Shared {
            engines: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            thread: OnceLock::new(),
            ticks: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&shared);
        match thread::Builder::new()
            .name("wasm-epoch-ticker".into())
            .spawn(move || run(&weak))
        {
            Ok(handle) => {
                let _ = shared.thread.set(handle.thread().clone());
            }
            Err(err) => tracing::error!(
                "could not start the epoch ticker; plugin deadlines will not fire: {err}"
            ),
        }
        Self(shared)
    }

    /// Has the ticker advance `engine`'s epoch too.
    pub(super) fn add(&self, engine: &wasmtime::Engine) {
        self.0
            .engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(engine.weak());
    }

    /// Marks a wasm call in progress until the returned guard is dropped, waking the ticker if
    /// it was parked (a syscall only then).
    pub(crate) fn ticking(&self) -> Ticking {
        if self.0.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = self.0.thread.get()
        {
            thread.unpark();
        }
        Ticking(self.0.clone())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Ticks without a call before the ticker parks: under steady traffic it keeps ticking
/// rather than being parked and woken around every request.
const LINGER_TICKS: u32 = 50;

/// The ticker thread: ticks while calls are active (and a little after), parks while none is,
/// ends with the runtime.
fn run(shared: &Weak<Shared>) {
    let mut idle_ticks = 0;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.active.load(Ordering::Acquire) == 0 {
            idle_ticks += 1;
        } else {
            idle_ticks = 0;
        }
        if idle_ticks > LINGER_TICKS {
            drop(strong);
            // Woken by the next call; the timeout only notices a runtime that went away. Still
            // idle after it: park again at once rather than lingering (and ticking) anew.
            thread::park_timeout(Duration::from_secs(1));
            continue;
        }
        let engines = strong.engines.lock().map(|e| e.clone()).unwrap_or_default();
        drop(strong);
        for engine in engines.iter().filter_map(wasmtime::EngineWeak::upgrade) {
            engine.increment_epoch();
        }
        if let Some(strong) = shared.upgrade() {
            strong.ticks.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(EPOCH_TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(ticker: &Ticker) -> u64 {
        ticker.0.ticks.load(Ordering::Relaxed)
    }

    #[test]
    fn the_ticker_ticks_only_while_a_call_runs() {
        let ticker = Ticker::start();
        // Idle from the start: it lingers, then parks and stops ticking.
        thread::sleep(Duration::from_millis(200));
        let idle = ticks(&ticker);
        thread::sleep(Duration::from_millis(30));
        assert_eq!(ticks(&ticker), idle, "ticked on with no call running");

        let call = ticker.ticking();
        while ticks(&ticker) < idle + 3 {
            thread::sleep(EPOCH_TICK);
        }
        drop(call);
        // It lingers for LINGER_TICKS, then parks again.
        thread::sleep(Duration::from_millis(200));
        let settled = ticks(&ticker);
        thread::sleep(Duration::from_millis(30));
        assert_eq!(ticks(&ticker), settled, "kept ticking after the call ended");

        // A later call wakes it again.
        let _call = ticker.ticking();
        while ticks(&ticker) == settled {
            thread::sleep(EPOCH_TICK);
        }
    }
}
