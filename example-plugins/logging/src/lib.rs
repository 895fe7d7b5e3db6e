//! `logging`: one structured access-log line per request, at info level in the gateway's log.
//!
//! The pre-hook notes what was asked for; the post-hook writes the line once the outcome is
//! known. Put the plugin **first** in the chain: its pre-hook then sees every request, and its
//! post-hook, which runs last, sees the outcome the client gets. A request that falls back to
//! another target runs the pre- and post-hooks once per attempt, so it logs one line per
//! attempt, told apart by `attempt`.
//!
//! Fields, in this order, absent ones left out: `request_id`, `chain` (the plugins, in order),
//! `model` (the `provider/model` the attempt asked for), `target` (the `provider/model` sent
//! upstream, absent when a plugin answered), `attempt` (0 first), `stream`, `status` (`ok` or
//! `error`), `http_status`, `error_type` and `error_code` (errors), `short_circuit` (the plugin
//! whose pre-hook answered or failed), `finish_reason`, `latency_ms` (since the gateway received
//! the request), `prompt_tokens`, `completion_tokens`, `total_tokens`; with `include_bodies`
//! also `prompt` (the last user message), `completion` (the first choice's text) and
//! `error_message`, each cut to `max_body_chars` characters.
//!
//! Config (all optional, unknown fields rejected):
//!
//! | field            | type    | default  | meaning                                                   |
//! |------------------|---------|----------|-----------------------------------------------------------|
//! | `format`         | string  | `"json"` | `"json"` (one object) or `"kv"` (`key=value` pairs)       |
//! | `include_bodies` | bool    | `false`  | also log the prompt, the completion and error messages    |
//! | `max_body_chars` | integer | `200`    | longest logged body, in characters, 1..=65536             |
//! | `response_field` | string  | none     | debugging aid: also put the line in this response field   |
//! | `error_header`   | string  | none     | debugging aid: also send the line in this error header    |
//!
//! ```json
//! { "format": "kv", "include_bodies": true, "max_body_chars": 80 }
//! ```

mod record;

use serde::{Deserialize, Serialize};
use wasmgate_sdk::serde_json::Value;
use wasmgate_sdk::{
    Ctx, GatewayError, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result, Usage,
    config_error, info,
};

pub use record::{Format, Record, truncate};

/// The plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How the line is written.
    pub format: Format,
    /// Whether the prompt, the completion and error messages are logged.
    pub include_bodies: bool,
    /// Longest logged body, in characters (1..=65536).
    pub max_body_chars: usize,
    /// A response body field that also gets the line (a debugging aid; off by default).
    pub response_field: Option<String>,
    /// An HTTP header that also carries the line on error responses (a debugging aid).
    pub error_header: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Json,
            include_bodies: false,
            max_body_chars: 200,
            response_field: None,
            error_header: None,
        }
    }
}

impl Config {
    /// Parses and validates the JSON config.
    pub fn parse(config: &str) -> Result<Self> {
        let mut config: Config = wasmgate_sdk::parse_config(config)?;
        if !(1..=65_536).contains(&config.max_body_chars) {
            return Err(config_error(
                "max_body_chars",
                format!("must be 1..=65536, got {}", config.max_body_chars),
            ));
        }
        if let Some(field) = &config.response_field
            && field.trim().is_empty()
        {
            return Err(config_error("response_field", "must not be empty"));
        }
        if let Some(name) = &mut config.error_header {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(config_error(
                    "error_header",
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            }
            name.make_ascii_lowercase();
        }
        Ok(config)
    }
}

/// An HTTP token character (RFC 9110), what header names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the pre-hook saw of the attempt, kept for the post-hook in the request's context
/// ([`SEEN`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// `provider/model` asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The last user message (only kept with `include_bodies`).
    pub prompt: Option<String>,
}

/// The gateway's values for the request (the `gateway.*` context values and the clock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayValues {
    /// The request id.
    pub request_id: String,
    /// `gateway.chain`.
    pub chain: Option<String>,
    /// `gateway.target`.
    pub target: Option<String>,
    /// `gateway.attempt`.
    pub attempt: Option<String>,
    /// `gateway.short_circuit`.
    pub short_circuit: Option<String>,
    /// `gateway.started_ms`.
    pub started_ms: Option<String>,
    /// Now, in milliseconds since the epoch.
    pub now_ms: u64,
}

impl GatewayValues {
    /// Reads them from the request context.
    fn read(ctx: &Ctx) -> Self {
        GatewayValues {
            request_id: ctx.request_id(),
            chain: ctx.get("gateway.chain"),
            target: ctx.get("gateway.target"),
            attempt: ctx.get("gateway.attempt"),
            short_circuit: ctx.get("gateway.short_circuit"),
            started_ms: ctx.get("gateway.started_ms"),
            now_ms: wasmgate_sdk::now_ms(),
        }
    }
}

/// A number when the text is one, else the text.
fn number_or_text(text: &str) -> Value {
    text.parse::<u64>()
        .map_or_else(|_| Value::from(text), Value::from)
}

/// What the post-hook read of the outcome: only the parts a log line shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// A response.
    Response {
        /// Why its first choice stopped.
        finish_reason: Option<String>,
        /// Its token accounting.
        usage: Option<Usage>,
        /// The text of its first choice (only read with `include_bodies`).
        text: Option<String>,
    },
    /// An error.
    Error(GatewayError),
}

impl Ended {
    /// Reads what a line needs from the lent `outcome` (the completion text only when
    /// `bodies`): a response is never copied whole.
    pub fn read(outcome: &Outcome<'_>, bodies: bool) -> Self {
        match outcome.error() {
            Some(e) => Ended::Error(e),
            None => Ended::Response {
                finish_reason: outcome.finish_reason(),
                usage: outcome.usage(),
                text: if bodies { outcome.text() } else { None },
            },
        }
    }
}

impl From<&PostOutcome> for Ended {
    fn from(outcome: &PostOutcome) -> Self {
        match outcome {
            PostOutcome::Response(r) => Ended::Response {
                finish_reason: r.choices.first().and_then(|c| c.finish_reason.clone()),
                usage: r.usage,
                text: r.text().map(str::to_owned),
            },
            PostOutcome::Error(e) => Ended::Error(e.clone()),
        }
    }
}

/// The log record of one attempt.
pub fn record(config: &Config, seen: Option<&Seen>, gw: &GatewayValues, ended: &Ended) -> Record {
    let body = |text: &str| truncate(text, config.max_body_chars);
    let mut r = Record::default();
    r.field("request_id", gw.request_id.as_str())
        .opt("chain", gw.chain.as_deref())
        .opt("model", seen.map(|s| s.model.as_str()))
        .opt("target", gw.target.as_deref())
        .opt("attempt", gw.attempt.as_deref().map(number_or_text))
        .opt("stream", seen.map(|s| s.stream));
    match ended {
        Ended::Response { .. } => {
            r.field("status", "ok").field("http_status", 200);
        }
        Ended::Error(e) => {
            r.field("status", "error")
                .field("http_status", e.status)
                .opt("error_type", e.kind.as_deref())
                .opt("error_code", e.code.as_deref());
        }
    }
    r.opt("short_circuit", gw.short_circuit.as_deref());
    if let Ended::Response { finish_reason, .. } = ended {
        r.opt("finish_reason", finish_reason.as_deref());
    }
    let started = gw.started_ms.as_deref().and_then(|s| s.parse::<u64>().ok());
    r.opt("latency_ms", started.map(|t| gw.now_ms.saturating_sub(t)));
    if let Ended::Response {
        usage: Some(usage), ..
    } = ended
    {
        r.field("prompt_tokens", usage.prompt_tokens)
            .field("completion_tokens", usage.completion_tokens)
            .field("total_tokens", usage.total_tokens);
    }
    if config.include_bodies {
        r.opt("prompt", seen.and_then(|s| s.prompt.as_deref()).map(body));
        match ended {
            Ended::Response { text, .. } => {
                r.opt("completion", text.as_deref().map(body));
            }
            Ended::Error(e) => {
                r.field("error_message", body(&e.message));
            }
        }
    }
    r
}

/// `line` with every non-ASCII character written as a `\uXXXX` escape (UTF-16, as JSON does), so
/// it is a valid HTTP header value.
pub fn ascii_only(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The request state (`<plugin name>.seen`) a pre-hook leaves for its post-hook: [`Seen`].
const SEEN: &str = "seen";

/// The most bytes the kept prompt may take as JSON text: the rest of [`Seen`] is short, and the
/// whole must fit a context value.
const MAX_KEPT_PROMPT_JSON: usize = wasmgate_sdk::MAX_CONTEXT_VALUE_BYTES - 4 * 1024;

/// The prompt as the pre-hook keeps it: cut to one character more than `max` (the line cuts it
/// to `max` and marks the cut, exactly as it would the whole prompt), so a long prompt does not
/// travel through the context whole. A prompt that would still not fit the context
/// ([`MAX_KEPT_PROMPT_JSON`]) is cut where it stops fitting and marked with `…` here.
fn kept_prompt(mut text: String, max: usize) -> String {
    let mut json_bytes = 0;
    for (i, (at, c)) in text.char_indices().enumerate() {
        if i > max {
            text.truncate(at);
            return text;
        }
        json_bytes += json_len(c);
        if json_bytes > MAX_KEPT_PROMPT_JSON - '…'.len_utf8() {
            text.truncate(at);
            text.push('…');
            return text;
        }
    }
    text
}

/// The bytes `c` takes inside a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Writes one line per request (per attempt). What the pre-hook saw waits for the post-hook in
/// the request's context, so any instance can serve either hook (the plugin may run
/// `"isolation": "shared"`).
#[derive(Debug)]
pub struct Logging {
    config: Config,
}

#[wasmgate_sdk::plugin]
impl Plugin for Logging {
    /// What a later hook of a request needs is kept in the request's context
    /// (`Ctx::set_state`), never in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "logging".into()
    }

    fn init(config: &str) -> Result<Self> {
        Ok(Logging {
            config: Config::parse(config)?,
        })
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let seen = Seen {
            model: req.target(),
            stream: req.stream(),
            prompt: if self.config.include_bodies {
                req.last_user_text()
                    .map(|text| kept_prompt(text, self.config.max_body_chars))
            } else {
                None
            },
        };
        ctx.set_state(SEEN, &seen)?;
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        // Unreadable (another plugin overwrote it): the line is still written, without it.
        let seen = ctx.state::<Seen>(SEEN).ok().flatten();
        let gw = GatewayValues::read(ctx);
        let ended = Ended::read(outcome, self.config.include_bodies);
        let line = record(&self.config, seen.as_ref(), &gw, &ended).write(self.config.format);
        info!("{line}");
        // Unless configured to annotate it, the outcome goes on unchanged (nothing copied back).
        Ok(match ended {
            Ended::Response { .. } => match &self.config.response_field {
                Some(field) => {
                    // Set where it lies: the response is not copied in and back.
                    outcome.set_extra(field, &line)?;
                    None
                }
                None => None,
            },
            Ended::Error(err) => self
                .config
                .error_header
                .as_ref()
                .map(|name| PostOutcome::Error(err.header(name.as_str(), ascii_only(&line)))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::{ChatResponse, GatewayError, Usage};

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn a_kept_prompt_is_cut_so_that_the_line_reads_as_with_the_whole_prompt() {
        let long = "é".repeat(50);
        for (text, max) in [
            (long.as_str(), 10),
            (long.as_str(), 49),
            ("short", 10),
            ("", 3),
        ] {
            let kept = kept_prompt(text.to_owned(), max);
            assert!(kept.chars().count() <= max + 1, "{kept:?}");
            assert_eq!(
                truncate(&kept, max),
                truncate(text, max),
                "{text:?} at {max}"
            );
        }
    }

    #[test]
    fn a_kept_prompt_always_fits_the_context() {
        // At the largest max_body_chars, two-byte characters, quotes and control characters
        // (six bytes each as JSON) would overflow the gateway's 64 KiB per context value.
        for unit in ["é", "\"", "\u{1}", "a\n"] {
            let text = unit.repeat(70_000);
            let kept = kept_prompt(text.clone(), 65_536);
            let json = wasmgate_sdk::serde_json::to_string(&Seen {
                model: "openai/gpt-4o-mini".into(),
                stream: false,
                prompt: Some(kept.clone()),
            })
            .unwrap();
            assert!(
                json.len() <= wasmgate_sdk::MAX_CONTEXT_VALUE_BYTES,
                "{unit:?}: {} bytes",
                json.len()
            );
            assert!(json.len() > 59 * 1024, "{unit:?}: cut only where needed");
            assert!(kept.ends_with('…'), "{unit:?}: the cut is marked");
            let kept_chars = kept.chars().count() - 1;
            assert!(text.starts_with(&kept[..kept.len() - '…'.len_utf8()]));
            assert!(kept_chars < 65_536, "{unit:?}");
        }
        // What fits is kept as before.
        let ascii = "a".repeat(50_000);
        assert_eq!(kept_prompt(ascii.clone(), 65_536), ascii);
    }

    fn gw() -> GatewayValues {
        GatewayValues {
            request_id: "req-1".into(),
            chain: Some("logging,cache".into()),
            target: Some("mock/echo".into()),
            attempt: Some("0".into()),
            short_circuit: None,
            started_ms: Some("1000".into()),
            now_ms: 1042,
        }
    }

    fn seen() -> Seen {
        Seen {
            model: "mock/echo".into(),
            stream: false,
            prompt: Some("a secret prompt".into()),
        }
    }

    fn response() -> PostOutcome {
        let mut resp = ChatResponse::with_text("id", "mock", "echo", 0, "echo: a secret prompt");
        resp.usage = Some(Usage {
            prompt_tokens: 6,
            completion_tokens: 3,
            total_tokens: 9,
        });
        PostOutcome::Response(resp)
    }

    #[test]
    fn config_is_validated() {
        let c = config("{}");
        assert_eq!(
            (c.format, c.include_bodies, c.max_body_chars),
            (Format::Json, false, 200)
        );
        let err = |c: &str| Config::parse(c).unwrap_err();
        assert_eq!(
            err(r#"{"format": "xml"}"#),
            "invalid config: format: unknown variant `xml`, expected `json` or `kv`"
        );
        assert_eq!(
            err(r#"{"max_body_chars": 0}"#),
            "invalid config: max_body_chars: must be 1..=65536, got 0"
        );
        assert_eq!(
            err(r#"{"response_field": " "}"#),
            "invalid config: response_field: must not be empty"
        );
        assert_eq!(
            err(r#"{"error_header": "x log"}"#),
            "invalid config: error_header: \"x log\" is not a valid HTTP header name"
        );
        assert!(err(r#"{"formats": "kv"}"#).contains("unknown field `formats`"));
        assert_eq!(
            config(r#"{"error_header": "X-Log"}"#)
                .error_header
                .as_deref(),
            Some("x-log")
        );
    }

    #[test]
    fn a_response_line_has_tokens_latency_and_no_bodies_by_default() {
        let line =
            record(&config("{}"), Some(&seen()), &gw(), &(&response()).into()).write(Format::Json);
        assert_eq!(
            line,
            r#"{"request_id":"req-1","chain":"logging,cache","model":"mock/echo","target":"mock/echo","attempt":0,"stream":false,"status":"ok","http_status":200,"finish_reason":"stop","latency_ms":42,"prompt_tokens":6,"completion_tokens":3,"total_tokens":9}"#
        );
        assert!(!line.contains("secret"));
    }

    #[test]
    fn an_error_line_has_status_code_and_short_circuit() {
        let err = GatewayError::new(401, "no key")
            .kind("authentication_error")
            .code("invalid_api_key");
        let mut values = gw();
        values.target = None;
        values.short_circuit = Some("auth".into());
        let line =
            record(&config("{}"), Some(&seen()), &values, &Ended::Error(err)).write(Format::Kv);
        assert_eq!(
            line,
            "request_id=req-1 chain=logging,cache model=mock/echo attempt=0 stream=false \
             status=error http_status=401 error_type=authentication_error \
             error_code=invalid_api_key short_circuit=auth latency_ms=42"
        );
    }

    #[test]
    fn bodies_are_included_on_request_and_truncated() {
        let c = config(r#"{"include_bodies": true, "max_body_chars": 8}"#);
        let r = record(&c, Some(&seen()), &gw(), &(&response()).into());
        assert_eq!(r.get("prompt"), Some(&Value::from("a secret…")));
        assert_eq!(r.get("completion"), Some(&Value::from("echo: a …")));
        let err = Ended::Error(GatewayError::new(503, "upstream unavailable"));
        let r = record(&c, None, &gw(), &err);
        assert_eq!(r.get("error_message"), Some(&Value::from("upstream…")));
        assert_eq!(r.get("model"), None);
    }

    #[test]
    fn header_values_are_ascii() {
        assert_eq!(
            ascii_only(r#"{"a":"é😀"}"#),
            r#"{"a":"\u00e9\ud83d\ude00"}"#
        );
    }
}
