//! `hello-world`: the smallest plugin that takes part in every hook, and logs each call.
//!
//! Each hook logs one line at info level with the request id (and, for the pre- and post-hook,
//! the provider and model), then leaves the request unchanged. The stream-chunk hook logs the
//! first and the last chunk of a stream; the error stage logs the final error's status. Use it
//! to see the hook order of the pipeline in the gateway's log, or as a template.
//!
//! Config (all optional, unknown fields rejected):
//!
//! | field      | type   | default   | meaning                          |
//! |------------|--------|-----------|----------------------------------|
//! | `greeting` | string | `"hello"` | first word of every log line     |
//!
//! ```json
//! { "greeting": "bonjour" }
//! ```

use serde::Deserialize;
use wasmgate_sdk::{
    ChunkOutcome, Ctx, GatewayError, HttpRequest, Outcome, Plugin, PostOutcome, PreOutcome,
    Request, Result, StreamChunk, TransportOutcome, info,
};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// First word of every log line; `"hello"` when absent.
    pub greeting: Option<String>,
}

/// Logs every hook it sees.
#[derive(Debug)]
pub struct HelloWorld {
    greeting: String,
}

#[wasmgate_sdk::plugin]
impl Plugin for HelloWorld {
    /// Nothing about a request is kept in `self`: any instance may serve any call.
    const SHARED_INSTANCES: bool = true;

    fn name() -> String {
        "hello-world".into()
    }

    fn init(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        let greeting = config.greeting.unwrap_or_else(|| "hello".into());
        info!("{greeting} from init");
        Ok(HelloWorld { greeting })
    }

    fn transport_interceptor(&mut self, ctx: &Ctx, req: HttpRequest) -> Result<TransportOutcome> {
        let id = ctx.request_id();
        info!(
            "{} from transport: request {id}, {} {}",
            self.greeting, req.method, req.path
        );
        Ok(TransportOutcome::Pass)
    }

    fn pre_hook(&mut self, ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let id = ctx.request_id();
        info!(
            "{} from pre-hook: request {id}, {}",
            self.greeting,
            req.target()
        );
        Ok(PreOutcome::Pass)
    }

    fn post_hook(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) -> Result<Option<PostOutcome>> {
        let id = ctx.request_id();
        match outcome.error() {
            None => info!(
                "{} from post-hook: request {id}, response from {}",
                self.greeting,
                outcome.model().unwrap_or_default()
            ),
            Some(e) => info!(
                "{} from post-hook: request {id}, error {}: {}",
                self.greeting, e.status, e.message
            ),
        }
        // Only looked: the outcome goes on unchanged, nothing copied back.
        Ok(None)
    }

    fn stream_chunk(&mut self, ctx: &Ctx, chunk: StreamChunk) -> Result<ChunkOutcome> {
        // Once per stream, not per chunk: streams can have hundreds.
        if chunk.index == 0 {
            let id = ctx.request_id();
            info!(
                "{} from stream-chunk: request {id}, first chunk",
                self.greeting
            );
        }
        if let Some(reason) = &chunk.finish_reason {
            let id = ctx.request_id();
            info!(
                "{} from stream-chunk: request {id}, chunk {} ends the stream ({reason})",
                self.greeting, chunk.index
            );
        }
        Ok(ChunkOutcome::Pass)
    }

    fn on_error(&mut self, ctx: &Ctx, error: GatewayError) -> Result<Option<GatewayError>> {
        let id = ctx.request_id();
        info!(
            "{} from on-error: request {id} ends in error {}",
            self.greeting, error.status
        );
        Ok(None)
    }

    fn cleanup(&mut self) -> Result<()> {
        info!("{} from cleanup", self.greeting);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let c: Config = wasmgate_sdk::parse_config("").unwrap_or_default();
        assert_eq!(c.greeting, None);
        let c: Result<Config> = wasmgate_sdk::parse_config(r#"{"greeting": "hi"}"#);
        assert_eq!(c.ok().and_then(|c| c.greeting).as_deref(), Some("hi"));
        let e = wasmgate_sdk::parse_config::<Config>(r#"{"greting": "hi"}"#).err();
        assert!(e.is_some_and(|e| e.contains("unknown field `greting`")));
        let e = wasmgate_sdk::parse_config::<Config>(r#"{"greeting": 1}"#).err();
        assert_eq!(
            e.as_deref(),
            Some("invalid config: greeting: invalid type: integer `1`, expected a string")
        );
    }
}
