//! What the fuzz targets in `fuzz/` run, shared with their regression test
//! (`host/tests/fuzz_regressions.rs`) so a crash found by fuzzing stays covered on stable.
//!
//! Each function takes arbitrary bytes, feeds them to a parser that sees untrusted input, and
//! panics only when the gateway would: a panic in the parser, or a broken invariant the rest of
//! the gateway relies on. Input that the parser rejects is fine; rejecting it is its job.
//! Not part of the gateway's API.

use std::path::Path;

use serde_json::Value;

use crate::chat::{self, ChatRequest, Extra};
use crate::config::{Config, valid_plugin_name};
use crate::providers::Providers;

/// A client's request body (`fuzz/corpus/chat_request`): parsed as `POST /v1/chat/completions`
/// parses it, then sent on as the pipeline sends it.
///
/// Invariants: the `provider/model` address splits back into the request's provider and model;
/// every fallback is an address `retarget` accepts; the upstream body carries the bare model and
/// no `fallbacks`; the request survives the trips it makes (back to a client body, through bytes,
/// and every `extra` through the text form plugins see) without a change.
pub fn chat_request(data: &[u8]) {
    let Ok(req) = ChatRequest::from_json_bytes(data) else {
        return;
    };
    let target = req.target();
    assert_eq!(
        chat::split_target(&target),
        Some((req.provider.as_str(), req.model.as_str())),
        "target {target:?}"
    );
    for fallback in &req.fallbacks {
        let mut retargeted = req.clone();
        assert!(
            retargeted.retarget(fallback).is_ok(),
            "fallback {fallback:?}"
        );
        assert_eq!(&retargeted.target(), fallback);
    }
    let upstream = req.to_upstream_json();
    assert_eq!(upstream["model"].as_str(), Some(req.model.as_str()));
    assert!(
        upstream.get("fallbacks").is_none(),
        "fallbacks sent upstream"
    );

    let client = client_body(&req);
    let again = reparse(client.clone());
    assert_eq!(normalized(&again), normalized(&req), "body {client}");
    assert_eq!(
        client_body(&again),
        client,
        "a second trip changed the body"
    );
    let bytes = client.to_string();
    let from_bytes = ChatRequest::from_json_bytes(bytes.as_bytes())
        .unwrap_or_else(|e| panic!("{bytes} does not parse: {}", e.message));
    assert_eq!(from_bytes, again, "body {bytes}");

    extra_survives_the_boundary(&req.extra);
    for message in &req.messages {
        extra_survives_the_boundary(&message.extra);
    }
}

/// The request as a client would send it: the upstream body with the full `provider/model` and
/// the fallbacks back in.
fn client_body(req: &ChatRequest) -> Value {
    let mut body = req.to_upstream_json();
    if let Value::Object(obj) = &mut body {
        obj.insert("model".into(), Value::String(req.target()));
        if !req.fallbacks.is_empty() {
            obj.insert("fallbacks".into(), req.fallbacks.clone().into());
        }
    }
    body
}

fn reparse(body: Value) -> ChatRequest {
    let text = body.to_string();
    ChatRequest::from_json(body).unwrap_or_else(|e| panic!("{text} does not parse: {}", e.message))
}

/// A request without `max_completion_tokens` in its `extra`: when a client sends it alongside
/// `max_tokens`, only `max_tokens` counts and the upstream body carries its value under the
/// `max_completion_tokens` key, so that one key of `extra` may change on the first trip.
fn normalized(req: &ChatRequest) -> ChatRequest {
    let mut req = req.clone();
    req.extra.remove("max_completion_tokens");
    req
}

/// `extra` crosses the plugin boundary as JSON text and comes back through
/// [`chat::parse_extra`]: it must come back unchanged, numbers included.
fn extra_survives_the_boundary(extra: &Extra) {
    let text = Value::Object(extra.clone()).to_string();
    assert_eq!(chat::parse_extra(&text).as_ref(), Ok(extra), "extra {text}");
}

/// A config file's text (`fuzz/corpus/config`): parsed and validated as `--config` and hot
/// reload do, then the steps that follow a valid config and need no wasm engine.
///
/// Invariants: a config that parses is valid; the per-plugin limits stay within the runtime's
/// caps and names are usable as file stems; the admin API's way of rewriting the file (a JSON
/// value, pretty-printed) gives back the same config.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    if let Err(e) = config.validate() {
        panic!("a parsed config fails validation: {e:#}");
    }
    let defaults = config.plugin_defaults();
    let _ = defaults.timeout();
    for plugin in &config.plugins {
        assert!(valid_plugin_name(&plugin.name), "name {:?}", plugin.name);
        assert!(plugin.config.is_object());
        let limits = plugin.limits.apply(defaults);
        assert!(limits.memory_bytes <= config.runtime.max_memory_bytes);
        assert!(limits.stack_bytes <= config.runtime.max_wasm_stack_bytes);
        let _ = limits.timeout();
    }

    let raw: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("a valid config is not a JSON value: {e}"));
    assert!(raw.is_object(), "a valid config is not a JSON object");
    let rewritten = serde_json::to_string_pretty(&raw)
        .unwrap_or_else(|e| panic!("a JSON value does not serialize: {e}"));
    match Config::parse(&rewritten) {
        Ok(again) => assert_eq!(again, config, "rewritten as {rewritten}"),
        Err(e) => panic!("rewritten config {rewritten} does not parse: {e:#}"),
    }

    let _ = Providers::from_config(&config.providers);
    let mut resolved = config;
    resolved.resolve_paths(Path::new("/etc/wasmgate"));
}

/// Text a plugin returns as an `extra` field (`fuzz/corpus/plugin_extra`): untrusted plugin
/// output, parsed by [`chat::parse_extra`].
///
/// Invariant: an object it accepts comes back unchanged when the host sends it to the next
/// plugin and that plugin returns it as is.
pub fn plugin_extra(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(extra) = chat::parse_extra(text) {
        extra_survives_the_boundary(&extra);
    }
}
