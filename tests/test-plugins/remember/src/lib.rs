//! `remember`: a test plugin that leaks, on purpose, what one request left in its memory into
//! the next: its post-hook adds `"previous_prompt"` to the response body, the last user message
//! of the request this instance served before (`null` on an instance's first request). Pooled
//! instances show the leak; per-request isolation must always answer `null`.

use wasmgate_sdk::{Ctx, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result};

/// Remembers prompts across requests in its own memory.
#[derive(Debug, Default)]
pub struct Remember {
    /// The last user message of the request before the current one.
    previous: Option<String>,
    /// The last user message of the current request.
    current: Option<String>,
}

#[wasmgate_sdk::plugin]
impl Plugin for Remember {
    fn init(_config: &str) -> Result<Self> {
        Ok(Remember::default())
    }

    fn pre_hook(&mut self, _ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        self.previous = self.current.take();
        self.current = req.last_user_text();
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, _ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        Ok(match outcome.to_outcome() {
            PostOutcome::Response(mut response) => {
                response.set_extra("previous_prompt", &self.previous)?;
                Some(PostOutcome::Response(response))
            }
            PostOutcome::Error(_) => None,
        })
    }
}
