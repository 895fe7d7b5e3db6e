//! Shared by the hostile test plugins (included with `#[path]`, not a crate): which hook
//! misbehaves, on which requests, and a macro writing a plugin that misbehaves there.
//!
//! Config fields every hostile plugin takes:
//!
//! | field     | default | values                                                          |
//! |-----------|---------|-----------------------------------------------------------------|
//! | `hook`    | `"pre"` | `init`, `transport`, `pre`, `post`, `cleanup`                   |
//! | `trigger` | none    | misbehave only on requests whose `x-hostile` header equals it   |
//!
//! `init` and `cleanup` have no request: they misbehave whenever `hook` names them.

use serde::Deserialize;
use wasmgate_sdk::Ctx;

/// A hook of the plugin world.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `init`.
    Init,
    /// The transport interceptor.
    Transport,
    /// The pre-hook.
    #[default]
    Pre,
    /// The post-hook.
    Post,
    /// `cleanup`.
    Cleanup,
}

/// Where and when a hostile plugin misbehaves.
#[derive(Debug, Default, Deserialize)]
pub struct Target {
    /// The hook that misbehaves.
    #[serde(default)]
    pub hook: Hook,
    /// Misbehave only on requests whose `x-hostile` header equals this.
    #[serde(default)]
    pub trigger: Option<String>,
}

impl Target {
    /// Whether `hook`, called for the request of `ctx` (none for init and cleanup), misbehaves.
    pub fn hits(&self, hook: Hook, ctx: Option<&Ctx>) -> bool {
        self.hook == hook
            && match (&self.trigger, ctx) {
                (Some(trigger), Some(ctx)) => {
                    ctx.header("x-hostile").as_deref() == Some(trigger.as_str())
                }
                _ => true,
            }
    }
}

/// Writes plugin `$plugin`, configured by `$config` (a `Deserialize` struct with a flattened
/// `target: Target` field), that calls `$misbehave(&config)` in its target hook and otherwise
/// passes everything through unchanged.
#[macro_export]
macro_rules! hostile_plugin {
    ($plugin:ident, $config:ty, $misbehave:path) => {
        /// The plugin: its config, kept for the hooks.
        pub struct $plugin {
            config: $config,
        }

        impl $plugin {
            fn check(&self, hook: $crate::common::Hook, ctx: Option<&wasmgate_sdk::Ctx>) {
                if self.config.target.hits(hook, ctx) {
                    $misbehave(&self.config);
                }
            }
        }

        #[wasmgate_sdk::plugin]
        impl wasmgate_sdk::Plugin for $plugin {
            fn init(config: &str) -> wasmgate_sdk::Result<Self> {
                let plugin = Self {
                    config: wasmgate_sdk::parse_config(config)?,
                };
                plugin.check($crate::common::Hook::Init, None);
                Ok(plugin)
            }

            fn transport_interceptor(
                &mut self,
                ctx: &wasmgate_sdk::Ctx,
                _req: wasmgate_sdk::HttpRequest,
            ) -> wasmgate_sdk::Result<wasmgate_sdk::TransportOutcome> {
                self.check($crate::common::Hook::Transport, Some(ctx));
                Ok(wasmgate_sdk::TransportOutcome::Pass)
            }

            fn pre_hook(
                &mut self,
                ctx: &wasmgate_sdk::Ctx,
                req: &wasmgate_sdk::Request<'_>,
            ) -> wasmgate_sdk::Result<wasmgate_sdk::PreOutcome> {
                self.check($crate::common::Hook::Pre, Some(ctx));
                Ok(wasmgate_sdk::PreOutcome::Continue(req.to_request()))
            }

            fn post_hook(
                &mut self,
                ctx: &wasmgate_sdk::Ctx,
                outcome: &wasmgate_sdk::Outcome<'_>,
            ) -> wasmgate_sdk::Result<Option<wasmgate_sdk::PostOutcome>> {
                self.check($crate::common::Hook::Post, Some(ctx));
                let _ = outcome;
                Ok(None)
            }

            fn cleanup(&mut self) -> wasmgate_sdk::Result<()> {
                self.check($crate::common::Hook::Cleanup, None);
                Ok(())
            }
        }
    };
}
