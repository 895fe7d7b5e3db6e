//! The gateway's error: what a client receives as an OpenAI-style error body.

use std::fmt;

use serde_json::{Value, json};

/// An error flowing through the pipeline and, if it leaves the gateway, the OpenAI error the
/// client receives (Bifrost's `BifrostError`).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    /// HTTP status the client gets (400..=599).
    pub status: u16,
    /// What failed, on what, and what to do about it.
    pub message: String,
    /// OpenAI error type; derived from the status when none.
    pub kind: Option<String>,
    /// Machine-readable code, e.g. `invalid_api_key`.
    pub code: Option<String>,
    /// The request field the error is about, e.g. `messages[0].role`.
    pub param: Option<String>,
    /// Whether fallback providers may be tried after this error; none means allowed.
    pub allow_fallbacks: Option<bool>,
    /// Extra HTTP headers sent with the error (e.g. `retry-after`), names lower-case. (A boxed
    /// slice: errors travel in `Result`s, so they are kept small.)
    pub headers: Box<[(String, String)]>,
}

impl GatewayError {
    /// An error with the given status and message; other fields empty.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: None,
            code: None,
            param: None,
            allow_fallbacks: None,
            headers: Box::default(),
        }
    }

    /// A 400 `invalid_request_error` about a malformed request; never retried on a fallback.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
            .with_kind("invalid_request_error")
            .no_fallbacks()
    }

    /// A 404 for an unknown model, provider or route.
    pub fn not_found(message: impl Into<String>, code: &str) -> Self {
        Self::new(404, message)
            .with_kind("invalid_request_error")
            .with_code(code)
            .no_fallbacks()
    }

    /// Sets the OpenAI error type.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the request field the error is about.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Adds a header to send with the error.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut headers = std::mem::take(&mut self.headers).into_vec();
        headers.push((name.into().to_ascii_lowercase(), value.into()));
        self.headers = headers.into_boxed_slice();
        self
    }

    /// Forbids fallbacks after this error.
    pub fn no_fallbacks(mut self) -> Self {
        self.allow_fallbacks = Some(false);
        self
    }

    /// Whether the pipeline may try the next fallback after this error (none counts as yes).
    pub fn fallbacks_allowed(&self) -> bool {
        self.allow_fallbacks.unwrap_or(true)
    }

    /// The OpenAI error type: the explicit one, or the conventional one for the status.
    pub fn error_type(&self) -> &str {
        if let Some(kind) = &self.kind {
            return kind;
        }
        match self.status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The status as a valid HTTP error status: anything outside 400..=599 becomes 500.
    pub fn http_status(&self) -> u16 {
        if (400..=599).contains(&self.status) {
            self.status
        } else {
            500
        }
    }

    /// The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.error_type(),
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.error_type(),
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape_and_derived_type() {
        let err = GatewayError::new(429, "slow down").with_code("rate_limited");
        assert_eq!(
            err.to_json(),
            json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "rate_limited"}})
        );
        assert!(err.fallbacks_allowed());
        assert!(!GatewayError::invalid_request("bad").fallbacks_allowed());
    }

    #[test]
    fn out_of_range_status_becomes_500() {
        assert_eq!(GatewayError::new(200, "x").http_status(), 500);
        assert_eq!(GatewayError::new(503, "x").http_status(), 503);
        assert_eq!(GatewayError::new(700, "x").error_type(), "server_error");
    }
}
