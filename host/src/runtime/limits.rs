//! Per-call limits on plugin code (fuel, wall-clock deadline, memory) and the resource limiter
//! that enforces the memory cap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most elements a plugin's table may have, declared or grown (the pool's slot size too).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

/// The limits every hook call of a plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one hook call may burn.
    pub fuel: u64,
    /// Wall-clock deadline of one hook call, in milliseconds.
    pub timeout_ms: u64,
    /// Most linear memory one instance may hold, in bytes.
    pub memory_bytes: u64,
    /// Wasm stack limit of a call, in bytes.
    pub stack_bytes: usize,
    /// Most bytes of text and data one hook call may return (strings, lists, headers),
    /// checked before the gateway parses or converts any of it.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 200_000_000,
            timeout_ms: 1_000,
            memory_bytes: 64 << 20,
            stack_bytes: 512 << 10,
            output_bytes: 8 << 20,
        }
    }
}

impl Limits {
    /// The wall-clock deadline as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Caps an instance's linear memories and tables and remembers whether the cap was hit, so a
/// trap that follows a refused `memory.grow` is reported as a memory-limit failure.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
    pub(crate) max_table_elements: usize,
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            max_table_elements: MAX_TABLE_ELEMENTS,
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes && maximum.is_none_or(|m| desired <= m);
        if !allowed {
            self.hit = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_table_elements && maximum.is_none_or(|m| desired <= m);
        if !allowed {
            self.hit = true;
        }
        Ok(allowed)
    }
}
