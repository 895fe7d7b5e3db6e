//! `content-filter`: banned patterns (regular expressions) in prompts and completions, rejected
//! or redacted, streams included.
//!
//! The pre-hook scans the content of the request's messages whose role is in `roles` (by default
//! the system and user messages); the post-hook scans the text of every choice of the response.
//! On a match, `action` decides:
//!
//! - `reject`: a prompt fails with HTTP 400, a completion with HTTP 422, both with type
//!   `invalid_request_error`, code `content_filter` and no fallbacks. The message says where
//!   the match was (message index and role, or choice index), never what matched.
//! - `redact`: every match is replaced with `replacement` and the request or response goes on.
//!
//! Streamed completions are filtered chunk by chunk: the last characters of each choice are held
//! back until no match can still be completed by the next chunk (at most the longest possible
//! match, capped by `max_match_chars`), so a banned word split across chunks never reaches the
//! client. On a stream, `reject` ends the stream with the same 422 error event.
//!
//! Config (unknown fields rejected):
//!
//! | field              | type            | default              | meaning                                              |
//! |--------------------|-----------------|----------------------|------------------------------------------------------|
//! | `patterns`         | list of strings | (required)           | banned regexes (Rust `regex` syntax); at least one    |
//! | `action`           | string          | `"reject"`           | `"reject"` or `"redact"`                              |
//! | `replacement`      | string          | `"[redacted]"`       | text that replaces a match (`redact`); must not match |
//! | `scope`            | string          | `"both"`             | `"prompts"`, `"completions"` or `"both"`              |
//! | `roles`            | list of strings | `["system", "user"]` | roles of the prompt messages scanned                  |
//! | `case_insensitive` | bool            | `true`               | match regardless of case                              |
//! | `max_match_chars`  | integer         | `64`                 | longest match a stream guards against, 1..=4096       |
//!
//! ```json
//! { "patterns": ["\\bdamn\\b", "sk-[A-Za-z0-9]{20,40}"], "action": "redact", "scope": "both" }
//! ```

mod filter;
mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{
    ChatRequest, ChatResponse, ChunkOutcome, Ctx, GatewayError, Message, Outcome, Plugin,
    PostOutcome, PreOutcome, Request, Result, StreamChunk, config_error, info, warn,
};

pub use filter::{Action, Filter, Found};
pub use window::Window;

/// The error code of every rejection.
pub const CODE: &str = "content_filter";

/// What a match leads to (the `action` field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    /// Fail the request or the response.
    #[default]
    Reject,
    /// Replace matches with `replacement`.
    Redact,
}

/// What is scanned (the `scope` field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The request's messages only.
    Prompts,
    /// The response's choices only (streamed or not).
    Completions,
    /// Both.
    #[default]
    Both,
}

impl Scope {
    fn prompts(self) -> bool {
        matches!(self, Scope::Prompts | Scope::Both)
    }

    fn completions(self) -> bool {
        matches!(self, Scope::Completions | Scope::Both)
    }
}

/// The plugin's config, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Banned patterns (required, at least one).
    pub patterns: Vec<String>,
    /// What a match leads to.
    #[serde(default)]
    pub action: ActionName,
    /// What replaces a match when redacting.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// What is scanned.
    #[serde(default)]
    pub scope: Scope,
    /// Roles of the prompt messages that are scanned.
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    /// Whether matching ignores case.
    #[serde(default = "default_case_insensitive")]
    pub case_insensitive: bool,
    /// The longest match a stream guards against (1..=4096 characters).
    #[serde(default = "default_max_match_chars")]
    pub max_match_chars: usize,
}

fn default_replacement() -> String {
    "[redacted]".into()
}

fn default_roles() -> Vec<String> {
    vec!["system".into(), "user".into()]
}

fn default_case_insensitive() -> bool {
    true
}

fn default_max_match_chars() -> usize {
    64
}

/// The filter. It keeps nothing about a request in the instance: a stream's held-back text
/// waits for the next chunk in the request's context ([`WINDOWS`]), so any instance can serve
/// any hook (the plugin may run `"isolation": "shared"`).
#[derive(Debug)]
pub struct ContentFilter {
    filter: Filter,
    scope: Scope,
    roles: Vec<String>,
}

/// The request state (`<plugin name>.windows`) each stream chunk leaves for the next: the
/// stream's [`Windows`]. Present for a streamed completion only, so it also tells the post-hook
/// that the completion was filtered chunk by chunk and the assembled response is left alone.
const WINDOWS: &str = "windows";

/// The held-back text of each streamed choice of one request.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Windows(BTreeMap<u32, Window>);

impl Windows {
    /// Whether text is still held for a choice whose stream ended without a finish reason.
    pub fn stranded(&self) -> bool {
        self.0.values().any(Window::is_holding)
    }
}

impl ContentFilter {
    /// Parses and validates the JSON config and compiles the patterns.
    pub fn from_config(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        if !(1..=4096).contains(&config.max_match_chars) {
            return Err(config_error(
                "max_match_chars",
                format!("must be 1..=4096, got {}", config.max_match_chars),
            ));
        }
        if config.roles.is_empty() && config.scope == Scope::Prompts {
            return Err(config_error(
                "roles",
                "must list at least one role when scope is \"prompts\"",
            ));
        }
        if let Some(i) = config.roles.iter().position(|r| r.trim().is_empty()) {
            return Err(config_error(&format!("roles[{i}]"), "must not be empty"));
        }
        let action = match config.action {
            ActionName::Reject => Action::Reject,
            ActionName::Redact => Action::Redact(config.replacement),
        };
        let filter = Filter::new(
            &config.patterns,
            config.case_insensitive,
            action,
            config.max_match_chars,
        )?;
        Ok(ContentFilter {
            filter,
            scope: config.scope,
            roles: config.roles,
        })
    }

    /// Filters the prompt without copying it: `Ok` with the new text of each redacted message
    /// (by index; empty when nothing matched), or the index of the first message that matched
    /// and what matched, to reject.
    pub fn filter_prompt(
        &self,
        messages: &[Message],
    ) -> core::result::Result<Vec<(usize, String)>, Rejected> {
        let mut redacted = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if !self.roles.contains(&message.role) {
                continue;
            }
            let Some(text) = message.content.as_deref() else {
                continue;
            };
            match self.filter.action() {
                Action::Reject => {
                    if let Some(found) = self.filter.find(text) {
                        return Err(Rejected {
                            index: i,
                            role: message.role.clone(),
                            found,
                        });
                    }
                }
                Action::Redact(replacement) => {
                    let new = self.filter.redact(text, replacement);
                    if let std::borrow::Cow::Owned(new) = new {
                        redacted.push((i, new));
                    }
                }
            }
        }
        Ok(redacted)
    }

    /// Filters a complete response: `Ok(n)` with the number of choices redacted, or the first
    /// choice that matched, to reject.
    pub fn filter_completion(
        &self,
        resp: &mut ChatResponse,
    ) -> core::result::Result<usize, Rejected> {
        let mut redacted = 0;
        for choice in &mut resp.choices {
            let Some(text) = choice.message.content.as_mut() else {
                continue;
            };
            match self.filter.action() {
                Action::Reject => {
                    if let Some(found) = self.filter.find(text) {
                        return Err(Rejected {
                            index: choice.index as usize,
                            role: choice.message.role.clone(),
                            found,
                        });
                    }
                }
                Action::Redact(replacement) => {
                    if let std::borrow::Cow::Owned(new) = self.filter.redact(text, replacement) {
                        *text = new;
                        redacted += 1;
                    }
                }
            }
        }
        Ok(redacted)
    }

    /// Filters one streamed chunk: the chunk to send (its content replaced by the text that
    /// can be released), `None` when there is nothing to send, or the rejection.
    pub fn filter_chunk(
        &self,
        windows: &mut Windows,
        mut chunk: StreamChunk,
    ) -> core::result::Result<Option<StreamChunk>, Rejected> {
        if !self.scope.completions() {
            return Ok(Some(chunk));
        }
        let choice = chunk.choice;
        let reject = |found| Rejected {
            index: choice as usize,
            role: "assistant".into(),
            found,
        };
        let window = windows.0.entry(choice).or_default();
        let mut out = match chunk.content.take() {
            Some(text) => window.push(&self.filter, &text).map_err(reject)?,
            None => String::new(),
        };
        if chunk.finish_reason.is_some() {
            let rest = window.finish(&self.filter).map_err(reject)?;
            out.push_str(&rest);
            windows.0.remove(&choice);
        }
        if !out.is_empty() {
            chunk.content = Some(out);
        } else if chunk.role.is_none() && chunk.finish_reason.is_none() && chunk.usage.is_none() {
            return Ok(None);
        }
        Ok(Some(chunk))
    }
}

/// A match that rejects a prompt message or a completion choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Message index (prompt) or choice index (completion).
    pub index: usize,
    /// The role of that message.
    pub role: String,
    /// Which pattern matched.
    pub found: Found,
}

impl Rejected {
    /// The 400 a rejected prompt fails with.
    pub fn prompt_error(&self) -> GatewayError {
        GatewayError::new(
            400,
            format!(
                "the prompt was rejected by the content filter (message {}, role {})",
                self.index, self.role
            ),
        )
        .kind("invalid_request_error")
        .code(CODE)
        .no_fallbacks()
    }

    /// The 422 a rejected completion fails with.
    pub fn completion_error(&self) -> GatewayError {
        GatewayError::new(
            422,
            format!(
                "the completion was withheld by the content filter (choice {})",
                self.index
            ),
        )
        .kind("invalid_request_error")
        .code(CODE)
        .no_fallbacks()
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for ContentFilter {
    /// What a later hook of a request needs is kept in the request's context
    /// (`Ctx::set_state`), never in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "content-filter".into()
    }

    fn init(config: &str) -> Result<Self> {
        let plugin = ContentFilter::from_config(config)?;
        if plugin.scope.completions() {
            for i in plugin.filter.unbounded() {
                warn!(
                    "patterns[{i}] can match more characters than max_match_chars ({}): in \
                     streams only that many characters of such a match are sure to be redacted",
                    plugin.filter.hold()
                );
            }
        }
        Ok(plugin)
    }

    fn pre_hook(&mut self, _ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        if !self.scope.prompts() {
            return Ok(PreOutcome::Pass);
        }
        match self.filter_prompt(req.messages()) {
            Ok(redacted) if redacted.is_empty() => Ok(PreOutcome::Pass),
            Ok(redacted) => {
                info!(
                    "redacted banned content in {} prompt message(s)",
                    redacted.len()
                );
                Ok(PreOutcome::Continue(redact(req.to_request(), redacted)))
            }
            Err(rejected) => {
                warn!(
                    "prompt rejected: message {} ({}) matches patterns[{}]",
                    rejected.index, rejected.role, rejected.found.pattern
                );
                Ok(PreOutcome::Fail(rejected.prompt_error()))
            }
        }
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        if !self.scope.completions() {
            return Ok(None);
        }
        if let Some(windows) = ctx.state::<Windows>(WINDOWS)? {
            if windows.stranded() {
                warn!(
                    "a streamed choice ended without a finish reason: its held-back text was not sent"
                );
            }
            return Ok(None);
        }
        let PostOutcome::Response(mut resp) = outcome.to_outcome() else {
            return Ok(None);
        };
        match self.filter_completion(&mut resp) {
            // Nothing matched: the response goes on unchanged (nothing copied back).
            Ok(0) => Ok(None),
            Ok(n) => {
                info!("redacted banned content in {n} completion choice(s)");
                Ok(Some(PostOutcome::Response(resp)))
            }
            Err(rejected) => {
                warn!(
                    "completion rejected: choice {} matches patterns[{}]",
                    rejected.index, rejected.found.pattern
                );
                Ok(Some(PostOutcome::Error(rejected.completion_error())))
            }
        }
    }

    fn stream_chunk(&mut self, ctx: &Ctx, chunk: StreamChunk) -> Result<ChunkOutcome> {
        if !self.scope.completions() {
            return Ok(ChunkOutcome::Pass);
        }
        // The first chunk of a stream starts afresh (a fallback's stream is a new one).
        let mut windows = if chunk.index == 0 {
            Windows::default()
        } else {
            ctx.state(WINDOWS)?.unwrap_or_default()
        };
        let filtered = self.filter_chunk(&mut windows, chunk);
        ctx.set_state(WINDOWS, &windows)?;
        match filtered {
            Ok(Some(chunk)) => Ok(ChunkOutcome::Emit(chunk)),
            Ok(None) => Ok(ChunkOutcome::Drop),
            Err(rejected) => {
                warn!(
                    "streamed completion rejected: choice {} matches patterns[{}]",
                    rejected.index, rejected.found.pattern
                );
                Ok(ChunkOutcome::Fail(rejected.completion_error()))
            }
        }
    }
}

/// `req` with the redacted messages' text replaced (`redacted` from
/// [`ContentFilter::filter_prompt`] on its messages).
pub fn redact(mut req: ChatRequest, redacted: Vec<(usize, String)>) -> ChatRequest {
    for (i, text) in redacted {
        if let Some(message) = req.messages.get_mut(i) {
            message.content = Some(text);
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::{Message, Usage};

    fn plugin(config: &str) -> ContentFilter {
        ContentFilter::from_config(config).unwrap()
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            provider: "mock".into(),
            model: "echo".into(),
            messages,
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            fallbacks: vec![],
            extra: "{}".into(),
        }
    }

    fn chunk(index: u32, content: Option<&str>, finish: bool) -> StreamChunk {
        StreamChunk {
            index,
            choice: 0,
            role: (index == 0).then(|| "assistant".to_owned()),
            content: content.map(str::to_owned),
            finish_reason: finish.then(|| "stop".to_owned()),
            usage: finish.then_some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3,
            }),
        }
    }

    #[test]
    fn config_defaults() {
        let p = plugin(r#"{"patterns": ["damn"]}"#);
        assert_eq!(p.scope, Scope::Both);
        assert_eq!(p.roles, ["system", "user"]);
        assert_eq!(p.filter.action(), &Action::Reject);
        let p = plugin(r#"{"patterns": ["damn"], "action": "redact"}"#);
        assert_eq!(p.filter.action(), &Action::Redact("[redacted]".into()));
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c: &str| ContentFilter::from_config(c).unwrap_err();
        assert_eq!(err("{}"), "invalid config: missing field `patterns`");
        assert_eq!(
            err(r#"{"patterns": ["x"], "action": "block"}"#),
            "invalid config: action: unknown variant `block`, expected `reject` or `redact`"
        );
        assert!(
            err(r#"{"patterns": ["x"], "scope": "all"}"#).starts_with("invalid config: scope: ")
        );
        assert_eq!(
            err(r#"{"patterns": ["x"], "max_match_chars": 0}"#),
            "invalid config: max_match_chars: must be 1..=4096, got 0"
        );
        assert_eq!(
            err(r#"{"patterns": ["x"], "roles": ["user", " "]}"#),
            "invalid config: roles[1]: must not be empty"
        );
        assert!(err(r#"{"patterns": ["x"], "pattern": "y"}"#).contains("unknown field `pattern`"));
        assert!(err(r#"{"patterns": ["(x"]}"#).starts_with("invalid config: patterns[0]: "));
    }

    #[test]
    fn prompts_are_rejected_with_the_message_index_but_not_the_text() {
        let p = plugin(r#"{"patterns": ["damn"]}"#);
        let messages = vec![
            Message::system("be nice"),
            Message::assistant("damn (assistant messages are not scanned)"),
            Message::user("well DAMN"),
        ];
        let rejected = p.filter_prompt(&messages).unwrap_err();
        assert_eq!((rejected.index, rejected.role.as_str()), (2, "user"));
        let e = rejected.prompt_error();
        assert_eq!((e.status, e.code.as_deref()), (400, Some(CODE)));
        assert_eq!(e.allow_fallbacks, Some(false));
        assert!(!e.message.to_lowercase().contains("damn"), "{}", e.message);
    }

    #[test]
    fn prompts_are_redacted_in_the_configured_roles() {
        let p = plugin(r#"{"patterns": ["damn"], "action": "redact", "replacement": "***"}"#);
        let req = request(vec![
            Message::system("no damn swearing"),
            Message::assistant("damn"),
            Message::user("clean"),
        ]);
        let redacted = p.filter_prompt(&req.messages).unwrap();
        assert_eq!(redacted, [(0, "no *** swearing".to_owned())]);
        let req = redact(req, redacted);
        assert_eq!(req.messages[0].content.as_deref(), Some("no *** swearing"));
        assert_eq!(req.messages[1].content.as_deref(), Some("damn"));
    }

    #[test]
    fn completions_are_rejected_or_redacted() {
        let mut resp = ChatResponse::with_text("id", "mock", "echo", 0, "echo: damn");
        let p = plugin(r#"{"patterns": ["damn"]}"#);
        let e = p
            .filter_completion(&mut resp)
            .unwrap_err()
            .completion_error();
        assert_eq!((e.status, e.code.as_deref()), (422, Some(CODE)));
        let p = plugin(r#"{"patterns": ["damn"], "action": "redact"}"#);
        assert_eq!(p.filter_completion(&mut resp), Ok(1));
        assert_eq!(resp.text(), Some("echo: [redacted]"));
    }

    #[test]
    fn chunks_hold_back_text_and_flush_it_with_the_finish_reason() {
        let (p, mut w) = (
            plugin(r#"{"patterns": ["damn"], "action": "redact"}"#),
            Windows::default(),
        );
        let first = p
            .filter_chunk(&mut w, chunk(0, Some("echo: da"), false))
            .unwrap();
        let first = first.expect("the role is sent");
        assert_eq!(first.role.as_deref(), Some("assistant"));
        assert_eq!(first.content.as_deref(), Some("echo"));
        // Nothing releasable and nothing else in the chunk: dropped.
        assert_eq!(
            p.filter_chunk(&mut w, chunk(1, Some(""), false)).unwrap(),
            None
        );
        let third = p
            .filter_chunk(&mut w, chunk(2, Some("mn it"), false))
            .unwrap();
        assert_eq!(
            third.and_then(|c| c.content).as_deref(),
            Some(": [redacted]")
        );
        let last = p
            .filter_chunk(&mut w, chunk(3, None, true))
            .unwrap()
            .expect("finish");
        assert_eq!(last.content.as_deref(), Some(" it"));
        assert_eq!(last.usage.map(|u| u.total_tokens), Some(3));
        assert!(!w.stranded());
    }

    #[test]
    fn windows_carried_as_json_between_chunks_filter_as_if_kept_in_memory() {
        let p = plugin(r#"{"patterns": ["damn"], "action": "redact"}"#);
        let pieces = ["echo: da", "m", "n it, d", "amn", " again"];
        let mut kept = Windows::default();
        let mut carried = String::new();
        let (mut direct, mut via_json) = (String::new(), String::new());
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let c = chunk(i as u32, Some(piece), last);
            let mut windows: Windows = if i == 0 {
                Windows::default()
            } else {
                wasmgate_sdk::serde_json::from_str(&carried).unwrap()
            };
            let a = p.filter_chunk(&mut kept, c.clone()).unwrap();
            let b = p.filter_chunk(&mut windows, c).unwrap();
            carried = wasmgate_sdk::serde_json::to_string(&windows).unwrap();
            direct.extend(a.and_then(|c| c.content));
            via_json.extend(b.and_then(|c| c.content));
        }
        assert_eq!(direct, "echo: [redacted] it, [redacted] again");
        assert_eq!(via_json, direct);
        assert!(!kept.stranded());
    }

    #[test]
    fn chunks_are_rejected_before_the_banned_word_is_sent() {
        let (p, mut w) = (plugin(r#"{"patterns": ["damn"]}"#), Windows::default());
        let first = p
            .filter_chunk(&mut w, chunk(0, Some("echo: da"), false))
            .unwrap();
        assert_eq!(first.and_then(|c| c.content).as_deref(), Some("echo"));
        let rejected = p
            .filter_chunk(&mut w, chunk(1, Some("mn!"), true))
            .unwrap_err();
        assert_eq!(rejected.completion_error().status, 422);
    }

    #[test]
    fn prompt_scope_leaves_chunks_alone() {
        let (p, mut w) = (
            plugin(r#"{"patterns": ["damn"], "scope": "prompts"}"#),
            Windows::default(),
        );
        let c = chunk(0, Some("damn"), false);
        assert_eq!(p.filter_chunk(&mut w, c.clone()).unwrap(), Some(c));
    }
}
