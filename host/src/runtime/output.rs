//! A plugin's stdout and stderr: each line goes to the gateway's log tagged with the plugin,
//! and the last lines of a call are kept so a trap can be reported with the guest's own words
//! (a Rust panic message, say).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of output logged per hook call; the rest of a chatty call's output is dropped.
const LOG_BUDGET_PER_CALL: usize = 16 * 1024;
/// Longest line kept; longer lines are cut.
const MAX_LINE: usize = 2048;
/// Lines kept for failure messages (a JavaScript guest's engine writes four of its own after
/// the guest's message).
const TAIL_LINES: usize = 8;

#[derive(Debug)]
struct State {
    plugin: Arc<str>,
    stream: &'static str,
    partial: Vec<u8>,
    tail: VecDeque<String>,
    budget: usize,
}

impl State {
    fn line(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes).trim_end().to_string();
        if line.is_empty() {
            return;
        }
        tracing::info!(target: "plugin", plugin = &*self.plugin, stream = self.stream, "{line}");
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn write(&mut self, mut bytes: &[u8]) {
        let take = bytes.len().min(self.budget);
        self.budget -= take;
        bytes = &bytes[..take];
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..end]);
            self.line(&line);
            bytes = &bytes[end + 1..];
        }
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// One captured output stream of one instance. Clones share the same buffer.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<State>>);

impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>, stream: &'static str) -> Self {
        Self(Arc::new(Mutex::new(State {
            plugin,
            stream,
            partial: Vec::new(),
            tail: VecDeque::new(),
            budget: LOG_BUDGET_PER_CALL,
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Forgets the previous call's lines and restores the log budget.
    pub(crate) fn reset(&self) {
        self.with(|s| {
            s.tail.clear();
            s.partial.clear();
            s.budget = LOG_BUDGET_PER_CALL;
        });
    }

    /// The last lines written during this call (an unterminated last line included), joined.
    pub(crate) fn tail(&self) -> Option<String> {
        self.with(|s| {
            if !s.partial.is_empty() {
                let partial = std::mem::take(&mut s.partial);
                s.line(&partial);
            }
            (!s.tail.is_empty()).then(|| s.tail.iter().cloned().collect::<Vec<_>>().join(" | "))
        })
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.with(|s| s.write(&bytes));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|s| s.write(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_respects_the_budget() {
        let out = GuestOutput::new(Arc::from("p"), "stderr");
        out.with(|s| s.write(b"0\n1\ntwo\nthree\nfour\nfive\nsix\n7\n8\n9"));
        assert_eq!(
            out.tail().as_deref(),
            Some("two | three | four | five | six | 7 | 8 | 9")
        );
        out.reset();
        assert_eq!(out.tail(), None);
        out.with(|s| s.write(&vec![b'x'; LOG_BUDGET_PER_CALL * 2]));
        assert!(out.with(|s| s.budget) == 0);
    }
}
