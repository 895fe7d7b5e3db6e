//! `noop`: a plugin whose pre-hook passes the request on unchanged (`pass`) and whose post-hook
//! hands the outcome on unchanged (`none`), reading neither: nothing is copied into the plugin or
//! back. It measures what a hook call itself costs (the benchmarks' "5 no-op plugins").

use wasmgate_sdk::{Ctx, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result};

/// Does nothing, in both hooks.
#[derive(Debug)]
pub struct Noop;

#[wasmgate_sdk::plugin]
impl Plugin for Noop {
    /// Nothing about a request is kept in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn init(_config: &str) -> Result<Self> {
        Ok(Noop)
    }

    fn pre_hook(&mut self, _ctx: &Ctx, _req: &Request<'_>) -> Result<PreOutcome> {
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, _ctx: &Ctx, _outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        Ok(None)
    }
}
