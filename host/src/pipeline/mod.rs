//! The plugin pipeline with Bifrost's semantics and the priority/parallel chain: transport
//! interceptors, pre-hooks in order, the provider (unless short-circuited), post-hooks in exact
//! reverse order, fallbacks, and the error stage.
//!
//! Rules (each has an end-to-end test):
//! 1. Transport interceptors run first, in plugin order; one may answer the client directly.
//! 2. Plugin order is by priority (lower first, ties by name). Pre-hooks run in that order;
//!    post-hooks run in exact reverse order. Consecutive `parallel` plugins of one priority run
//!    their pre-hooks concurrently on the same input (see `parallel.rs`).
//! 3. Every plugin whose pre-hook ran gets its post-hook, and no other. A plugin without a
//!    pre-hook counts as having passed the request on; one skipped by `fail-open` did not run.
//! 4. `respond` skips the provider; the post-hooks of the plugins that ran see the response.
//! 5. `fail` skips the provider; post-hooks see the error; if it allows fallbacks and the request
//!    has some, the next target is tried with all pre-hooks run again.
//! 6. A provider error goes through the post-hooks, then the same fallback rule.
//! 7. A post-hook may recover an error into a response or turn a response into an error; later
//!    post-hooks see the new state.
//! 8. A hook failure (guest `err`, trap, exceeded limit) is handled by the plugin's policy:
//!    `fail-closed` fails the request with a 500 naming the plugin and the cause (no fallbacks),
//!    `fail-open` skips the hook and goes on.
//! 9. A request that ends in an error goes through every plugin's `on-error`, in reverse order
//!    (the error stage), before the error leaves the gateway.
//! 10. A streamed request's chunks go through the stream-chunk hooks in post-hook order; the
//!     post-hooks see the assembled response at the end (see `streaming.rs`).
//! 11. Stages limit which of a plugin's hooks are called at all (the chain's links carry the
//!     hooks already filtered).

mod parallel;
mod streaming;

use std::sync::Arc;

use crate::chat::{ChatRequest, ChatResponse};
use crate::config::{FailurePolicy, PIPELINE_HEADER, VIRTUAL_KEY_HEADER};
use crate::context::{GatewayValue, RequestContext};
use crate::error::GatewayError;
use crate::hooks::{
    Headers, Hook, HttpRequest, HttpResponse, Outcome, PostDecision, PreOutcome, TransportOutcome,
};
use crate::providers::Providers;
use crate::registry::{Chain, Link, Registry};
use crate::runtime::{FailureKind, HookFailure, LoadedPlugin, PluginInstance, checkout_all};
use crate::stream::{ChatStream, StreamChunk};

/// How a request (plain or streamed) got past the pre-hooks and the provider.
#[derive(Debug)]
pub enum Started {
    /// The complete response, after the post-hooks (a plain request's answer, or a plugin's
    /// short-circuit of a streamed one).
    Complete(ChatResponse),
    /// The provider is streaming; [`Pipeline::drive_stream`] runs the chunk hooks and, at the
    /// end, the post-hooks of the links in `ran`.
    Streaming {
        /// The provider's stream.
        stream: ChatStream,
        /// The links whose pre-hook ran, in chain order.
        ran: Vec<usize>,
    },
}

/// What a streamed request sends the client, in order.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk that passed the stream-chunk hooks.
    Chunk(StreamChunk),
    /// The stream ended normally.
    Done,
    /// The stream ended with this error (after the error stage).
    Error(GatewayError),
}

/// Runs requests through the active chain and the providers.
#[derive(Debug)]
pub struct Pipeline {
    registry: Arc<Registry>,
    providers: Arc<Providers>,
}

/// What the transport stage decided.
#[derive(Debug)]
pub enum Transported {
    /// Go on: parse this body as the chat request.
    Continue {
        /// Headers after every interceptor.
        headers: Headers,
        /// Body after every interceptor.
        body: Vec<u8>,
    },
    /// An interceptor answered; send this to the client.
    Respond(HttpResponse),
}

/// One request's pass through the pipeline: the chain snapshot it started on, its context and
/// the plugin instances it has checked out (one per plugin, returned when it is dropped; a
/// shared plugin's only for the length of a call).
pub struct Session {
    chain: Arc<Chain>,
    ctx: Arc<RequestContext>,
    slots: Vec<Option<PluginInstance>>,
    /// Which links had a hook fail during this request (the error stage skips them: their
    /// failure is already what the request ends with, or was skipped by fail-open).
    failed: Vec<bool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("request_id", &self.ctx.id())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The request's context.
    pub fn context(&self) -> &Arc<RequestContext> {
        &self.ctx
    }

    /// Checks out (once per request) the instance of link `i` and runs `call` on it. The
    /// instance stays in the session's slot during the call, so a request dropped half-way
    /// (client gone) still returns it, poisoned, to its pool; one a call broke is returned at
    /// once. A quarantined plugin is refused before anything runs.
    async fn with_instance<T>(
        &mut self,
        i: usize,
        hook: Hook,
        call: impl AsyncFnOnce(
            &Link,
            &mut PluginInstance,
            &Arc<RequestContext>,
        ) -> Result<T, HookFailure>,
    ) -> Result<T, HookFailure> {
        if let Err(failure) = self.ensure_instance(i, hook).await {
            self.failed[i] = true;
            return Err(failure);
        }
        let Session {
            chain,
            ctx,
            slots,
            failed,
        } = self;
        let link = &chain.links[i];
        let Some(instance) = slots[i].as_mut() else {
            return Err(no_instance(link, hook));
        };
        let result = call(link, instance, ctx).await;
        if result.is_err() {
            failed[i] = true;
        }
        if (instance.is_poisoned() || link.shared())
            && let Some(instance) = slots[i].take()
        {
            // Broken: never reused (the pool drops it and frees its slot). Shared: the call
            // is over, and the next one, of any request, takes it again.
            link.plugin.checkin(instance);
        }
        result
    }

    /// Checks out, all at once, an instance for every link that has none yet (see
    /// [`checkout_all`]). Only running out of instance capacity is an error here: any other
    /// failure leaves the slots empty, and each hook then checks out lazily and applies its
    /// plugin's failure policy.
    async fn reserve(&mut self) -> Result<(), GatewayError> {
        let missing: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                // A quarantined plugin is refused at its hook without an instance.
                // A shared plugin's instance is taken per call, not held by the request.
                self.slots[i].is_none()
                    && !self.chain.links[i].shared()
                    && !self.failed[i]
                    && !self.chain.links[i].plugin.quarantine().quarantined
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let plugins: Vec<&Arc<LoadedPlugin>> = missing
            .iter()
            .map(|&i| &self.chain.links[i].plugin)
            .collect();
        match checkout_all(&plugins).await {
            Ok(instances) => {
                for (i, instance) in missing.into_iter().zip(instances) {
                    self.slots[i] = Some(instance);
                }
                Ok(())
            }
            Err(failure) if failure.kind == FailureKind::Capacity => {
                // Plugins without an instance sit this request out, the error stage included
                // (it would only queue again).
                for i in missing {
                    self.failed[i] = true;
                }
                tracing::warn!(
                    request_id = self.ctx.id(),
                    plugin = failure.plugin,
                    "{failure}"
                );
                Err(plugin_error(&failure).with_header("retry-after", "1"))
            }
            Err(_) => Ok(()),
        }
    }

    /// Makes sure link `i` has an instance for this request, unless the plugin is quarantined.
    async fn ensure_instance(&mut self, i: usize, hook: Hook) -> Result<(), HookFailure> {
        let plugin = &self.chain.links[i].plugin;
        plugin.admit(hook)?;
        if self.slots[i].is_none() {
            self.slots[i] = Some(plugin.checkout().await?);
        }
        Ok(())
    }

    /// Moves link `i`'s instance out of the session (for a call on another task); give it back
    /// with [`Session::put_instance`].
    async fn take_instance(&mut self, i: usize, hook: Hook) -> Result<PluginInstance, HookFailure> {
        self.ensure_instance(i, hook).await?;
        self.slots[i]
            .take()
            .ok_or_else(|| no_instance(&self.chain.links[i], hook))
    }

    /// Puts link `i`'s instance back after a call (`failed`: the call failed), or returns it to
    /// its pool if the call broke it or the plugin's instances are shared.
    fn put_instance(&mut self, i: usize, instance: PluginInstance, failed: bool) {
        if failed {
            self.failed[i] = true;
        }
        let link = &self.chain.links[i];
        if instance.is_poisoned() || link.shared() {
            link.plugin.checkin(instance);
        } else {
            self.slots[i] = Some(instance);
        }
    }
}

/// The failure for a slot found empty right after a checkout filled it (a bug, not a plugin's
/// doing).
fn no_instance(link: &Link, hook: Hook) -> HookFailure {
    HookFailure {
        plugin: link.plugin.name().to_string(),
        hook,
        kind: FailureKind::Instantiate,
        detail: "internal error: no instance after checkout".into(),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (link, slot) in self.chain.links.iter().zip(self.slots.iter_mut()) {
            if let Some(instance) = slot.take() {
                link.plugin.checkin(instance);
            }
        }
    }
}

/// The error a client gets when a `fail-closed` plugin fails.
fn plugin_error(failure: &HookFailure) -> GatewayError {
    let status = if matches!(
        failure.kind,
        FailureKind::Quarantined | FailureKind::Capacity
    ) {
        503
    } else {
        500
    };
    GatewayError::new(status, failure.to_string())
        .with_kind("plugin_error")
        .with_code(failure.kind.code())
        .no_fallbacks()
}

/// Applies a link's failure policy: `Err` to fail the request, `Ok` to skip the hook.
fn apply_policy(
    link: &Link,
    ctx: &RequestContext,
    failure: &HookFailure,
) -> Result<(), GatewayError> {
    match link.policy {
        FailurePolicy::FailClosed => {
            tracing::warn!(request_id = ctx.id(), plugin = failure.plugin, hook = %failure.hook, kind = failure.kind.code(), "{failure}; failing the request (fail-closed)");
            Err(plugin_error(failure))
        }
        FailurePolicy::FailOpen => {
            tracing::warn!(request_id = ctx.id(), plugin = failure.plugin, hook = %failure.hook, kind = failure.kind.code(), "{failure}; skipping the hook (fail-open)");
            Ok(())
        }
    }
}

impl Pipeline {
    /// A pipeline over the registry's chain and the providers.
    pub fn new(registry: Arc<Registry>, providers: Arc<Providers>) -> Self {
        Self {
            registry,
            providers,
        }
    }

    /// The providers requests go to.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// The chain a request runs: the named pipeline of its route (`route`), else the one its
    /// `x-wasmgate-pipeline` header names, else the one its virtual key (`x-wasmgate-vk`) is
    /// routed to, else the default pipeline. Naming a pipeline that does not exist is a 404.
    pub fn select(
        &self,
        route: Option<&str>,
        headers: &Headers,
    ) -> Result<Arc<Chain>, GatewayError> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let (named, how) = if let Some(route) = route {
            (route.to_string(), "in the route")
        } else if let Some(name) = header(PIPELINE_HEADER) {
            (name.to_string(), "in the x-wasmgate-pipeline header")
        } else if let Some(name) =
            header(VIRTUAL_KEY_HEADER).and_then(|key| self.registry.pipeline_of_key(key))
        {
            (name, "for the virtual key")
        } else {
            return Ok(self.registry.chain());
        };
        if named == "default" {
            return Ok(self.registry.chain());
        }
        self.registry.named_chain(&named).ok_or_else(|| {
            GatewayError::not_found(
                format!(
                    "no pipeline named `{named}` ({how}); configure it under `pipelines`, or \
                     leave it out to use the default pipeline"
                ),
                "pipeline_not_found",
            )
        })
    }

    /// Starts a request on `chain` (see [`Pipeline::select`]).
    pub fn session(&self, chain: Arc<Chain>, headers: Headers) -> Session {
        let slots = chain.links.iter().map(|_| None).collect();
        let failed = vec![false; chain.links.len()];
        let ctx = Arc::new(RequestContext::new(headers));
        ctx.set_gateway(GatewayValue::Chain, chain.names.clone());
        ctx.set_gateway(
            GatewayValue::Pipeline,
            chain.pipeline.clone().unwrap_or_else(|| "default".into()),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        ctx.set_gateway(GatewayValue::StartedMs, now.to_string());
        Session {
            chain,
            ctx,
            slots,
            failed,
        }
    }

    /// Runs the transport interceptors in plugin order.
    pub async fn transport(
        &self,
        session: &mut Session,
        mut req: HttpRequest,
    ) -> Result<Transported, GatewayError> {
        if let Some(missing) = session.chain.missing.first() {
            tracing::warn!(
                request_id = session.ctx.id(),
                plugin = missing.name,
                "request refused: a required plugin is not active"
            );
            return Err(GatewayError::new(
                503,
                format!(
                    "plugin `{}` is required but not active ({}); requests are refused until \
                     it loads. See GET /api/plugins/{}",
                    missing.name, missing.reason, missing.name
                ),
            )
            .with_kind("plugin_error")
            .with_code(FailureKind::Instantiate.code())
            .no_fallbacks());
        }
        session.reserve().await?;
        for i in 0..session.chain.links.len() {
            if !session.chain.links[i].hooks.transport_interceptor {
                continue;
            }
            let result = session
                .with_instance(
                    i,
                    Hook::TransportInterceptor,
                    async |link, instance, ctx| {
                        link.plugin.transport_interceptor(instance, ctx, &req).await
                    },
                )
                .await;
            match result {
                Ok(TransportOutcome::Pass) => {}
                Ok(TransportOutcome::Rewrite { headers, body }) => {
                    session.ctx.set_headers(headers.clone());
                    req.headers = headers;
                    req.body = body;
                }
                Ok(TransportOutcome::Respond(response)) => {
                    session.chain.links[i]
                        .plugin
                        .note_short_circuit(Hook::TransportInterceptor);
                    return Ok(Transported::Respond(response));
                }
                Err(failure) => {
                    apply_policy(&session.chain.links[i], &session.ctx, &failure)?;
                }
            }
        }
        Ok(Transported::Continue {
            headers: req.headers,
            body: req.body,
        })
    }

    /// The error stage: runs the `on-error` hook of every plugin in the chain (except those that
    /// already failed during this request), in post-hook order (reverse of the pre-hooks), on
    /// the error a request ends in, before it leaves the gateway. Each may rewrite the error; a failing hook is handled by its plugin's policy
    /// (fail-closed: the plugin failure becomes the error the next plugins and the client see).
    pub async fn finish_error(&self, session: &mut Session, mut err: GatewayError) -> GatewayError {
        for i in (0..session.chain.links.len()).rev() {
            if !session.chain.links[i].hooks.on_error || session.failed[i] {
                continue;
            }
            let result = session
                .with_instance(i, Hook::OnError, async |link, instance, ctx| {
                    link.plugin.on_error(instance, ctx, &err).await
                })
                .await;
            match result {
                Ok(Some(next)) => err = next,
                // Handed on unchanged.
                Ok(None) => {}
                Err(failure) => {
                    if let Err(failed) =
                        apply_policy(&session.chain.links[i], &session.ctx, &failure)
                    {
                        err = failed;
                    }
                }
            }
        }
        err
    }

    /// Runs a parsed request through the pre-hooks, the provider and the post-hooks, trying its
    /// fallbacks as Bifrost does, and returns the final outcome.
    pub async fn run(&self, session: &mut Session, req: ChatRequest) -> Outcome {
        match self.run_attempts(session, req, false).await? {
            Started::Complete(response) => Ok(response),
            Started::Streaming { .. } => Err(GatewayError::new(
                500,
                "internal error: a plain request was streamed",
            )),
        }
    }

    /// [`Pipeline::run`] for a streamed request (`stream: true`): the pre-hooks and the start of
    /// the provider's stream, with the same fallbacks (an attempt whose stream fails to start
    /// goes through its post-hooks and on to the next target). Once a stream has started,
    /// [`Pipeline::drive_stream`] carries it to the end.
    pub async fn start_stream(
        &self,
        session: &mut Session,
        req: ChatRequest,
    ) -> Result<Started, GatewayError> {
        self.run_attempts(session, req, true).await
    }

    /// The fallback loop shared by plain and streamed requests.
    async fn run_attempts(
        &self,
        session: &mut Session,
        req: ChatRequest,
        stream: bool,
    ) -> Result<Started, GatewayError> {
        session.reserve().await?;
        let mut targets = vec![req.target()];
        if req.fallbacks.is_empty() {
            // The request gives none: the ones configured for its target, if any.
            targets.extend(
                self.providers
                    .fallbacks_for(&req.provider, &req.model)
                    .iter()
                    .cloned(),
            );
        } else {
            targets.extend(req.fallbacks.iter().cloned());
        }
        let mut last = None;
        let mut req = Some(req);
        for (attempt, target) in targets.iter().enumerate() {
            // Each attempt starts from the client's request; the last one takes it (the usual
            // request has a single target, and then nothing is cloned).
            let next = if attempt + 1 < targets.len() {
                req.clone()
            } else {
                req.take()
            };
            let Some(mut attempt_req) = next else {
                break;
            };
            if attempt > 0 {
                attempt_req.retarget(target)?;
                tracing::info!(
                    request_id = session.ctx.id(),
                    target,
                    attempt,
                    "trying fallback"
                );
            }
            session
                .ctx
                .set_gateway(GatewayValue::Attempt, attempt.to_string());
            session.ctx.unset_gateway(GatewayValue::ShortCircuit);
            session.ctx.unset_gateway(GatewayValue::Target);
            let started = self.attempt(session, attempt_req, stream).await;
            match started {
                Err(err) if err.fallbacks_allowed() && attempt + 1 < targets.len() => {
                    tracing::info!(request_id = session.ctx.id(), target, error = %err, "attempt failed; fallbacks allowed");
                    last = Some(err);
                }
                started => return started,
            }
        }
        Err(last.unwrap_or_else(|| GatewayError::new(500, "no target to try")))
    }

    /// One attempt at one target: pre-hooks, then the provider (or a short-circuit), then the
    /// post-hooks; for a stream that started, the post-hooks wait for its end.
    async fn attempt(
        &self,
        session: &mut Session,
        req: ChatRequest,
        stream: bool,
    ) -> Result<Started, GatewayError> {
        let (ran, next) = self.pre_stage(session, req).await;
        let outcome = match next {
            Err(short_circuit) => short_circuit,
            Ok(req) => {
                session.ctx.set_gateway(GatewayValue::Target, req.target());
                if stream {
                    session.ctx.set_gateway(GatewayValue::Stream, "true");
                    match self.providers.chat_stream(&req).await {
                        Ok(stream) => return Ok(Started::Streaming { stream, ran }),
                        Err(err) => Err(err),
                    }
                } else {
                    self.providers.chat(&req).await
                }
            }
        };
        self.post_stage(session, &ran, outcome)
            .await
            .map(Started::Complete)
    }

    /// The pre-hooks in chain order, parallel groups concurrently: the links whose pre-hook ran
    /// (their post-hooks run later, in reverse), and the request to send or the outcome a
    /// plugin short-circuited with. In a group, every member runs; the first in chain order
    /// that answered, failed or failed closed decides.
    async fn pre_stage(
        &self,
        session: &mut Session,
        req: ChatRequest,
    ) -> (Vec<usize>, Result<ChatRequest, Outcome>) {
        // Shared with the hooks it is lent to, never copied for them.
        let mut req = Arc::new(req);
        let mut ran = Vec::with_capacity(session.chain.links.len());
        let mut start = 0;
        while start < session.chain.links.len() {
            let end = parallel::group_end(&session.chain, start);
            let results = if end - start > 1 {
                parallel::pre_hooks(session, &req, start..end).await
            } else if session.chain.links[start].hooks.pre_hook {
                let result = session
                    .with_instance(start, Hook::PreHook, async |link, instance, ctx| {
                        link.plugin.pre_hook(instance, ctx, &req).await
                    })
                    .await;
                vec![(start, Some(result))]
            } else {
                vec![(start, None)]
            };
            start = end;
            let mut decided: Option<(usize, Outcome)> = None;
            for (i, result) in results {
                let short_circuit = match result {
                    // No pre-hook, or one that passed: the request goes on as it is.
                    None | Some(Ok(PreOutcome::Pass)) => {
                        ran.push(i);
                        continue;
                    }
                    Some(Ok(PreOutcome::Continue(next))) => {
                        ran.push(i);
                        req = Arc::new(next);
                        continue;
                    }
                    Some(Ok(PreOutcome::Respond(response))) => {
                        ran.push(i);
                        Ok(response)
                    }
                    Some(Ok(PreOutcome::Fail(err))) => {
                        ran.push(i);
                        Err(err)
                    }
                    Some(Err(failure)) => {
                        match apply_policy(&session.chain.links[i], &session.ctx, &failure) {
                            Ok(()) => continue,
                            Err(err) => Err(err),
                        }
                    }
                };
                decided.get_or_insert((i, short_circuit));
            }
            if let Some((i, short_circuit)) = decided {
                if !session.failed[i] {
                    let plugin = &session.chain.links[i].plugin;
                    session
                        .ctx
                        .set_gateway(GatewayValue::ShortCircuit, plugin.name());
                    plugin.note_short_circuit(Hook::PreHook);
                }
                return (ran, Err(short_circuit));
            }
        }
        // The last lent copy went with its hook call: this does not clone.
        (ran, Ok(Arc::unwrap_or_clone(req)))
    }

    /// The post-hooks of the links in `ran`, in exact reverse order.
    async fn post_stage(&self, session: &mut Session, ran: &[usize], outcome: Outcome) -> Outcome {
        // Shared with the hooks it is lent to, never copied for them.
        let mut outcome = Arc::new(outcome);
        for &i in ran.iter().rev() {
            if !session.chain.links[i].hooks.post_hook {
                continue;
            }
            let result = session
                .with_instance(i, Hook::PostHook, async |link, instance, ctx| {
                    link.plugin.post_hook(instance, ctx, &outcome).await
                })
                .await;
            match result {
                Ok(PostDecision::Replaced(next)) => outcome = Arc::new(next),
                // The lent copy went with the call: this does not clone.
                Ok(PostDecision::Annotated(fields)) => {
                    if let Ok(response) = Arc::make_mut(&mut outcome) {
                        response.set_extra_fields(fields);
                    }
                }
                Ok(PostDecision::Unchanged) => {}
                Err(failure) => {
                    if let Err(err) = apply_policy(&session.chain.links[i], &session.ctx, &failure)
                    {
                        outcome = Arc::new(Err(err));
                    }
                }
            }
        }
        // The last lent copy went with its hook call: this does not clone.
        Arc::unwrap_or_clone(outcome)
    }
}
