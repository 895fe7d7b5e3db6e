//! `hostile-huge-output`: returns a string of `bytes` bytes (default 100 MB) from the hook its
//! config names (see `common.rs`; `transport`, `pre` or `post`): the HTTP body the transport
//! interceptor answers with, or the text of the response the pre-hook answers with or the
//! post-hook replaces the outcome with. Expected: with the default memory cap the plugin cannot
//! even build it (a memory-limit failure); with a cap large enough it builds it and the
//! gateway refuses the output as over the plugin's output limit, before parsing it.

#[path = "../../common.rs"]
mod common;

use common::Hook;
use serde::Deserialize;
use wasmgate_sdk::{
    ChatResponse, Ctx, HttpRequest, HttpResponse, Outcome, Plugin, PostOutcome, PreOutcome,
    Request, Result, TransportOutcome,
};

/// The plugin's config.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    target: common::Target,
    /// Size of the string, in bytes.
    #[serde(default = "default_bytes")]
    bytes: usize,
}

fn default_bytes() -> usize {
    100_000_000
}

/// The plugin.
pub struct HugeOutput {
    config: Config,
}

impl HugeOutput {
    fn huge(&self) -> String {
        "x".repeat(self.config.bytes)
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for HugeOutput {
    fn init(config: &str) -> Result<Self> {
        Ok(Self {
            config: wasmgate_sdk::parse_config(config)?,
        })
    }

    fn transport_interceptor(&mut self, ctx: &Ctx, _req: HttpRequest) -> Result<TransportOutcome> {
        if !self.config.target.hits(Hook::Transport, Some(ctx)) {
            return Ok(TransportOutcome::Pass);
        }
        Ok(TransportOutcome::Respond(HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: self.huge().into_bytes(),
        }))
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        if !self.config.target.hits(Hook::Pre, Some(ctx)) {
            return Ok(PreOutcome::Continue(req.to_request()));
        }
        Ok(PreOutcome::Respond(ChatResponse::with_text(
            "chatcmpl-huge",
            req.provider(),
            req.model(),
            0,
            self.huge(),
        )))
    }

    fn post_hook(&mut self, ctx: &Ctx, _outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        if !self.config.target.hits(Hook::Post, Some(ctx)) {
            return Ok(None);
        }
        Ok(Some(PostOutcome::Response(ChatResponse::with_text(
            "chatcmpl-huge",
            "huge",
            "huge",
            0,
            self.huge(),
        ))))
    }
}
