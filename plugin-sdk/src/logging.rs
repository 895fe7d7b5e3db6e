//! Logging into the gateway's log.
//!
//! Use the macros [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
//! [`warn!`](crate::warn) and [`error!`](crate::error), which take `format!` arguments like the
//! `log` crate's. The gateway tags each line with the plugin's name and the current request id,
//! and truncates very long lines.

/// Severity of a log line.
pub use crate::bindings::wasmgate::plugin::logging::Level;

/// Writes `message` to the gateway's log at `level`. The macros call this.
pub fn log(level: Level, message: &str) {
    crate::bindings::wasmgate::plugin::logging::log(level, message)
}

/// Logs a `format!`-style message at the given [`Level`](crate::logging::Level).
///
/// ```no_run
/// use wasmgate_sdk::logging::Level;
/// wasmgate_sdk::log!(Level::Info, "{} keys loaded", 3);
/// ```
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::logging::log($level, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at trace level (very detailed tracing).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::logging::Level::Trace, $($arg)+) };
}

/// Logs a `format!`-style message at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::logging::Level::Debug, $($arg)+) };
}

/// Logs a `format!`-style message at info level (normal operation).
///
/// ```no_run
/// let model = "gpt-4o-mini";
/// wasmgate_sdk::info!("routing to {model}");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::logging::Level::Info, $($arg)+) };
}

/// Logs a `format!`-style message at warn level (something unexpected that was handled).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::logging::Level::Warn, $($arg)+) };
}

/// Logs a `format!`-style message at error level (something failed).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::logging::Level::Error, $($arg)+) };
}
