//! `#[plugin]` reports every hook when the impl defines them all, and `shared-instances` when it
//! declares `SHARED_INSTANCES`; none of them when it defines none (see `hooks_none.rs`).
#![allow(
    unsafe_code,
    reason = "calls the generated `extern \"C\"` export directly"
)]

use wasmgate_sdk::{
    ChunkOutcome, Ctx, GatewayError, Hooks, HttpRequest, Outcome, Plugin, PostOutcome, PreOutcome,
    Request, Result, StreamChunk, TransportOutcome,
};

struct All;

#[wasmgate_sdk::plugin]
impl wasmgate_sdk::Plugin for All {
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "all".into()
    }
    fn init(_config: &str) -> Result<Self> {
        Ok(All)
    }
    fn transport_interceptor(&mut self, _: &Ctx, _: HttpRequest) -> Result<TransportOutcome> {
        Ok(TransportOutcome::Pass)
    }
    fn pre_hook(&mut self, _: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        Ok(PreOutcome::Continue(req.to_request()))
    }
    fn post_hook(&mut self, _: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        Ok(Some(outcome.to_outcome()))
    }
    fn stream_chunk(&mut self, _: &Ctx, chunk: StreamChunk) -> Result<ChunkOutcome> {
        Ok(ChunkOutcome::Emit(chunk))
    }
    fn on_error(&mut self, _: &Ctx, error: GatewayError) -> Result<Option<GatewayError>> {
        Ok(Some(error))
    }
    fn cleanup(&mut self) -> Result<()> {
        Ok(())
    }
}

unsafe extern "C" {
    #[link_name = "hooks"]
    fn exported_hooks() -> i32;
}

#[test]
fn reports_every_hook_and_shared_instances() {
    // SAFETY: `hooks` takes no arguments and returns the flags as an i32.
    let bits = unsafe { exported_hooks() };
    assert_eq!(bits, i32::from(Hooks::all().bits()));
    assert_eq!(All::name(), "all");
}
