//! Parallel groups (the priority/parallel chain): consecutive `parallel` plugins of the same
//! priority run their pre-hooks concurrently, on separate tasks, on the same input.
//!
//! A parallel plugin only reads: it may pass the request on unchanged, answer it or fail it. A
//! rewrite is refused as a plugin failure (its policy applies) rather than merged, since two
//! concurrent rewrites of one request have no meaningful merge.

use std::ops::Range;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Session;
use crate::chat::ChatRequest;
use crate::hooks::{Hook, PreOutcome};
use crate::registry::Chain;
use crate::runtime::{FailureKind, HookFailure};

/// The end (exclusive) of the group starting at link `start`: the run of links sharing its
/// priority that are all `parallel` and have a pre-hook; just `start + 1` otherwise.
pub(super) fn group_end(chain: &Chain, start: usize) -> usize {
    let first = &chain.links[start];
    if !(first.parallel && first.hooks.pre_hook) {
        return start + 1;
    }
    let mut end = start + 1;
    while let Some(next) = chain.links.get(end)
        && next.parallel
        && next.hooks.pre_hook
        && next.priority == first.priority
    {
        end += 1;
    }
    end
}

/// Runs the pre-hooks of the links in `group` concurrently on `req` and returns each result
/// in chain order. Each call runs on its own task with the link's instance; if this request is
/// dropped meanwhile, the task returns the instance to its pool itself.
pub(super) async fn pre_hooks(
    session: &mut Session,
    req: &Arc<ChatRequest>,
    group: Range<usize>,
) -> Vec<(usize, Option<Result<PreOutcome, HookFailure>>)> {
    let mut results = Vec::with_capacity(group.len());
    let mut running = Vec::with_capacity(group.len());
    for i in group {
        let mut instance = match session.take_instance(i, Hook::PreHook).await {
            Ok(instance) => instance,
            Err(failure) => {
                session.failed[i] = true;
                results.push((i, Some(Err(failure))));
                continue;
            }
        };
        let plugin = session.chain.links[i].plugin.clone();
        let ctx = session.ctx.clone();
        let input = req.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let result = plugin.pre_hook(&mut instance, &ctx, &input).await;
            let result = result.and_then(|outcome| read_only(plugin.name(), &input, outcome));
            // Let go of the request before answering, so the stage gets it back unshared.
            drop(input);
            if let Err((instance, _)) = tx.send((instance, result)) {
                plugin.checkin(instance);
            }
        });
        running.push((i, rx));
    }
    for (i, rx) in running {
        let result = match rx.await {
            Ok((instance, result)) => {
                session.put_instance(i, instance, result.is_err());
                result
            }
            Err(_) => {
                session.failed[i] = true;
                Err(HookFailure {
                    plugin: session.chain.links[i].plugin.name().to_string(),
                    hook: Hook::PreHook,
                    kind: FailureKind::Trap,
                    detail: "the pre-hook's task ended without an answer".into(),
                })
            }
        };
        results.push((i, Some(result)));
    }
    results.sort_by_key(|(i, _)| *i);
    results
}

/// Refuses a parallel plugin's rewrite of the request.
fn read_only(
    plugin: &str,
    input: &ChatRequest,
    outcome: PreOutcome,
) -> Result<PreOutcome, HookFailure> {
    match outcome {
        PreOutcome::Continue(next) if next != *input => Err(HookFailure {
            plugin: plugin.to_string(),
            hook: Hook::PreHook,
            kind: FailureKind::InvalidOutput,
            detail: "rewrote the request, but a `parallel` plugin runs alongside others on the \
                     same input and may only pass it on, answer it or fail it; set \
                     `parallel: false` to let it rewrite"
                .into(),
        }),
        outcome => Ok(outcome),
    }
}
