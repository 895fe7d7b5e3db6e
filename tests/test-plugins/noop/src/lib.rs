//! `noop`: a plugin whose pre-hook passes the request on unchanged (`pass`) and whose post-hook
//! hands the outcome on unchanged (`none`): nothing is copied back from either. It measures what
//! a hook call itself costs (the benchmarks' "5 no-op plugins").

use wasmgate_sdk::{ChatRequest, Ctx, Plugin, PostOutcome, PreOutcome, Result};

/// Does nothing, in both hooks.
#[derive(Debug)]
pub struct Noop;

#[wasmgate_sdk::plugin]
impl Plugin for Noop {
    fn init(_config: &str) -> Result<Self> {
        Ok(Noop)
    }

    fn pre_hook(&mut self, _ctx: &Ctx, _req: ChatRequest) -> Result<PreOutcome> {
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, _ctx: &Ctx, _outcome: PostOutcome) -> Result<Option<PostOutcome>> {
        Ok(None)
    }
}
