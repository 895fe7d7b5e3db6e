// The body of the `stamp-v1` and `stamp-v2` test plugins; each crate sets `VERSION` and
// includes this file, so the two builds are distinct components of one plugin.

use serde::Deserialize;
use wasmgate_sdk::{Ctx, Outcome, Plugin, PostOutcome, PreOutcome, Request, Result, kv, now_ms};

/// Config: `{ "delay_ms": 0 }`, a busy wait in the pre-hook so requests overlap reloads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Milliseconds the pre-hook busy-waits.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Stamps `VERSION` into the request context in its pre-hook and into the response (both the
/// pre-hook's stamp and its own) in its post-hook; counts inits and cleanups per version in kv.
#[derive(Debug)]
pub struct Stamp {
    config: Config,
}

#[wasmgate_sdk::plugin]
impl Plugin for Stamp {
    fn name() -> String {
        format!("stamp-{}", crate::VERSION)
    }

    fn init(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        kv::incr(&format!("inits:{}", crate::VERSION), 1, None);
        Ok(Stamp { config })
    }

    fn pre_hook(&mut self, ctx: &Ctx, _req: &Request<'_>) -> Result<PreOutcome> {
        ctx.set("stamp.pre", crate::VERSION);
        let end = now_ms().saturating_add(self.config.delay_ms);
        while now_ms() < end {
            core::hint::black_box(());
        }
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        match outcome.to_outcome() {
            PostOutcome::Response(mut response) => {
                response.set_extra("stamp_pre", ctx.get("stamp.pre"))?;
                response.set_extra("stamp_post", crate::VERSION)?;
                Ok(Some(PostOutcome::Response(response)))
            }
            PostOutcome::Error(_) => Ok(None),
        }
    }

    fn cleanup(&mut self) -> Result<()> {
        kv::incr(&format!("cleanups:{}", crate::VERSION), 1, None);
        Ok(())
    }
}
