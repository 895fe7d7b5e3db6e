//! `hostile-nested-json`: returns JSON nested `depth` levels deep (default 100,000) from the hook
//! its config names (see `common.rs`; `pre` or `post`), in the `extra` field of the request it
//! continues with or of the response it replaces the outcome with. Expected: the gateway refuses
//! the output as invalid (too deeply nested) without overflowing its own stack.

#[path = "../../common.rs"]
mod common;

use common::Hook;
use serde::Deserialize;
use wasmgate_sdk::{ChatResponse, Ctx, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result};

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
    /// Nesting depth.
    #[serde(default = "default_depth")]
    depth: usize,
}

fn default_depth() -> usize {
    100_000
}

/// The plugin.
pub struct NestedJson {
    config: Config,
}

impl NestedJson {
    /// `{"nested":[[[...]]]}`, `depth` arrays deep.
    fn nested(&self) -> String {
        let depth = self.config.depth;
        let mut json = String::with_capacity(2 * depth + 16);
        json.push_str("{\"nested\":");
        json.push_str(&"[".repeat(depth));
        json.push_str(&"]".repeat(depth));
        json.push('}');
        json
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for NestedJson {
    fn init(config: &str) -> Result<Self> {
        Ok(Self {
            config: wasmgate_sdk::parse_config(config)?,
        })
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let mut req = req.to_request();
        if self.config.target.hits(Hook::Pre, Some(ctx)) {
            req.extra = self.nested();
        }
        Ok(PreOutcome::Continue(req))
    }

    fn post_hook(&mut self, ctx: &Ctx, _outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        if !self.config.target.hits(Hook::Post, Some(ctx)) {
            return Ok(None);
        }
        let mut response = ChatResponse::with_text("chatcmpl-nested", "nested", "nested", 0, "");
        response.extra = self.nested();
        Ok(Some(PostOutcome::Response(response)))
    }
}
