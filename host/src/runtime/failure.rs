//! Plugin failures: the two layers a hook call can fail in, named and classified.
//!
//! A guest `err` means the plugin refused and its instance is still healthy. A trap or an
//! exceeded limit means the instance is broken: it is discarded, never reused.

use std::fmt;

use crate::hooks::Hook;

/// What went wrong in a hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The hook returned `err(message)`.
    GuestError,
    /// The hook returned a value the gateway cannot use (bad JSON in `extra`, bad status...).
    InvalidOutput,
    /// The hook returned more output than the plugin's output limit allows.
    OutputTooLarge,
    /// The call burned its fuel.
    OutOfFuel,
    /// The call ran past its wall-clock deadline.
    Deadline,
    /// The instance tried to grow memory (or a table) past its cap.
    MemoryLimit,
    /// The wasm stack overflowed.
    StackOverflow,
    /// Any other trap (`unreachable`, a Rust panic, out-of-bounds access...).
    Trap,
    /// The instance could not be created (pool exhausted, instantiation error).
    Instantiate,
    /// The plugin is quarantined after repeated failures; it was not called.
    Quarantined,
    /// Every instance the runtime allows was in use and none was freed in time (load, not the
    /// plugin's fault: never counted towards quarantine).
    Capacity,
}

impl FailureKind {
    /// Whether the instance must be discarded after this failure.
    pub fn poisons_instance(self) -> bool {
        !matches!(
            self,
            FailureKind::GuestError
                | FailureKind::InvalidOutput
                | FailureKind::Quarantined
                | FailureKind::Capacity
        )
    }

    /// The machine-readable code clients see, e.g. `plugin_out_of_fuel`.
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::GuestError => "plugin_error",
            FailureKind::InvalidOutput => "plugin_invalid_output",
            FailureKind::OutputTooLarge => "plugin_output_too_large",
            FailureKind::OutOfFuel => "plugin_out_of_fuel",
            FailureKind::Deadline => "plugin_deadline_exceeded",
            FailureKind::MemoryLimit => "plugin_memory_limit",
            FailureKind::StackOverflow => "plugin_stack_overflow",
            FailureKind::Trap => "plugin_trap",
            FailureKind::Instantiate => "plugin_unavailable",
            FailureKind::Quarantined => "plugin_quarantined",
            FailureKind::Capacity => "plugin_capacity_exhausted",
        }
    }
}

/// A failed hook call of a named plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    /// The plugin.
    pub plugin: String,
    /// The hook that failed.
    pub hook: Hook,
    /// The class of failure.
    pub kind: FailureKind,
    /// What exactly happened, and the limit involved.
    pub detail: String,
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin `{}` failed in {}: {}",
            self.plugin, self.hook, self.detail
        )
    }
}

impl std::error::Error for HookFailure {}
