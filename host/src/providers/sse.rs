//! Server-sent events from an upstream response: the `data:` payloads as JSON, read as they
//! arrive (`event:`, `id:` and comment lines skipped), until `[DONE]` or the end of the body;
//! an event carrying an `error` object ends the stream as an error.

use serde_json::Value;

use super::client::Response;
use crate::error::GatewayError;

/// Largest server-sent event accepted from an upstream, in bytes.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Reads `data:` events of a server-sent event stream from an upstream response.
#[derive(Debug, Default)]
pub(super) struct SseEvents {
    buffer: Vec<u8>,
    done: bool,
}

impl SseEvents {
    /// The next event's JSON; none once `[DONE]` or the end of the body is reached.
    pub(super) async fn next(
        &mut self,
        response: &mut Response,
        provider: &str,
    ) -> Result<Option<Value>, GatewayError> {
        let failed = |why: String| {
            GatewayError::new(502, format!("provider `{provider}` streamed badly: {why}"))
                .with_code("provider_bad_response")
        };
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue; // blank lines, comments, `event:` and `id:` fields
                };
                let data = data.trim();
                if data == "[DONE]" {
                    self.done = true;
                    return Ok(None);
                }
                let value: Value = serde_json::from_str(data)
                    .map_err(|e| failed(format!("an event is not JSON ({e})")))?;
                if let Some(message) = value.pointer("/error/message").and_then(Value::as_str) {
                    return Err(failed(format!("it sent an error event: {message}")));
                }
                return Ok(Some(value));
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(failed(format!("an event is over {MAX_EVENT_BYTES} bytes")));
            }
            match response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => return Err(failed(format!("reading the stream failed: {e}"))),
            }
        }
    }
}
