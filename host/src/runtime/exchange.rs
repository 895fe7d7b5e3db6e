//! The request and the outcome a hook is lent (the world's `exchange` interface): the gateway
//! keeps them, the plugin reads the parts it needs through a handle, and nothing else is copied
//! into the plugin. A no-op hook costs a call, not a copy of the request.

use std::sync::Arc;

use serde_json::Value;
use wasmtime::component::Resource;

use super::bindings::{self, exchange, types};
use super::host::HostState;
use crate::chat::{ChatRequest, ChatResponse};
use crate::hooks::Outcome;

/// The request a pre-hook is lent; its handle stands for [`Lent::Request`] of the call.
pub enum LentRequest {}

/// The outcome a post-hook is lent; its handle stands for [`Lent::Outcome`] of the call.
pub enum LentOutcome {}

/// What the current call was lent. The component model ends a borrowed handle with the call it
/// was passed to, so the handle needs no table entry: it always means this call's value.
#[derive(Default)]
pub(crate) enum Lent {
    /// Nothing: outside a pre- or post-hook call.
    #[default]
    Nothing,
    /// The request of a pre-hook call.
    Request(Arc<ChatRequest>),
    /// The outcome of a post-hook call.
    Outcome(Arc<Outcome>),
}

/// The top-level response fields a post-hook set through `outcome.set-extra`, in the order set,
/// with the bytes they take counted against the hook's output limit. Kept in the store's state
/// for the call, apart from what was lent, and taken by the post-hook call when it succeeds.
#[derive(Debug, Default)]
pub(crate) struct Annotations {
    fields: Vec<(String, Value)>,
    bytes: usize,
    limit: usize,
}

impl Annotations {
    /// No fields yet; at most `limit` bytes of names and values in all.
    pub(crate) fn new(limit: usize) -> Self {
        Annotations {
            fields: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// The fields, in the order set (a later one of the same name wins when applied).
    pub(crate) fn into_fields(self) -> Vec<(String, Value)> {
        self.fields
    }

    /// Records field `name` = the JSON text `value`; the error, for the plugin, says why not.
    fn set(&mut self, name: String, value: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("the field name is empty".into());
        }
        if ChatResponse::TYPED_FIELDS.contains(&name.as_str()) {
            return Err(format!(
                "`{name}` is a typed part of the response, not an extra field: to change it, \
                 copy the outcome with `get` and return the changed one"
            ));
        }
        let bytes = self.bytes + name.len() + value.len();
        if bytes > self.limit {
            return Err(format!(
                "setting `{name}` would take the fields this call set to {bytes} bytes, over the \
                 plugin's output limit of {} bytes (`limits.output_kb`)",
                self.limit
            ));
        }
        let value: Value = serde_json::from_str(value)
            .map_err(|e| format!("the value of `{name}` is not JSON text: {e}"))?;
        self.bytes = bytes;
        self.fields.push((name, value));
        Ok(())
    }
}

/// The handle a pre-hook is called with.
pub(crate) fn request_handle() -> Resource<LentRequest> {
    Resource::new_borrow(0)
}

/// The handle a post-hook is called with.
pub(crate) fn outcome_handle() -> Resource<LentOutcome> {
    Resource::new_borrow(0)
}

/// Why a handle could not be read: only a broken guest or host could get here.
fn not_lent(what: &str) -> wasmtime::Error {
    wasmtime::format_err!(
        "the plugin read a lent {what} outside the hook call it was lent to; a handle is valid \
         only during its call"
    )
}

impl HostState {
    fn lent_request(&mut self, import: &'static str) -> wasmtime::Result<&ChatRequest> {
        self.enter(import)?;
        match &self.lent {
            Lent::Request(r) => Ok(r),
            _ => Err(not_lent("request")),
        }
    }

    fn lent_outcome(&mut self, import: &'static str) -> wasmtime::Result<&Outcome> {
        self.enter(import)?;
        match &self.lent {
            Lent::Outcome(o) => Ok(o),
            _ => Err(not_lent("outcome")),
        }
    }

    fn lent_response(&mut self, import: &'static str) -> wasmtime::Result<Option<&ChatResponse>> {
        Ok(self.lent_outcome(import)?.as_ref().ok())
    }
}

impl exchange::Host for HostState {}

type Req = Resource<LentRequest>;

impl exchange::HostRequest for HostState {
    fn provider(&mut self, _: Req) -> wasmtime::Result<String> {
        Ok(self.lent_request("request.provider")?.provider.clone())
    }

    fn model(&mut self, _: Req) -> wasmtime::Result<String> {
        Ok(self.lent_request("request.model")?.model.clone())
    }

    fn messages(&mut self, _: Req) -> wasmtime::Result<Vec<types::Message>> {
        let r = self.lent_request("request.messages")?;
        Ok(bindings::messages_to_wit(&r.messages))
    }

    fn message_count(&mut self, _: Req) -> wasmtime::Result<u32> {
        let r = self.lent_request("request.message-count")?;
        Ok(u32::try_from(r.messages.len()).unwrap_or(u32::MAX))
    }

    fn last_user_text(&mut self, _: Req) -> wasmtime::Result<Option<String>> {
        let r = self.lent_request("request.last-user-text")?;
        Ok(r.last_user_text().map(str::to_owned))
    }

    fn temperature(&mut self, _: Req) -> wasmtime::Result<Option<f64>> {
        Ok(self.lent_request("request.temperature")?.temperature)
    }

    fn top_p(&mut self, _: Req) -> wasmtime::Result<Option<f64>> {
        Ok(self.lent_request("request.top-p")?.top_p)
    }

    fn max_tokens(&mut self, _: Req) -> wasmtime::Result<Option<u32>> {
        Ok(self.lent_request("request.max-tokens")?.max_tokens)
    }

    fn stream(&mut self, _: Req) -> wasmtime::Result<bool> {
        Ok(self.lent_request("request.stream")?.stream)
    }

    fn user(&mut self, _: Req) -> wasmtime::Result<Option<String>> {
        Ok(self.lent_request("request.user")?.user.clone())
    }

    fn fallbacks(&mut self, _: Req) -> wasmtime::Result<Vec<String>> {
        Ok(self.lent_request("request.fallbacks")?.fallbacks.clone())
    }

    fn extra(&mut self, _: Req) -> wasmtime::Result<String> {
        let r = self.lent_request("request.extra")?;
        Ok(bindings::extra_text(&r.extra))
    }

    fn get(&mut self, _: Req) -> wasmtime::Result<types::ChatRequest> {
        let r = self.lent_request("request.get")?;
        Ok(bindings::request_to_wit(r))
    }

    fn drop(&mut self, _: Req) -> wasmtime::Result<()> {
        // Only ever lent (borrowed): there is nothing to free.
        Ok(())
    }
}

type Out = Resource<LentOutcome>;

impl exchange::HostOutcome for HostState {
    fn is_error(&mut self, _: Out) -> wasmtime::Result<bool> {
        Ok(self.lent_outcome("outcome.is-error")?.is_err())
    }

    fn status(&mut self, _: Out) -> wasmtime::Result<u16> {
        Ok(match self.lent_outcome("outcome.status")? {
            Ok(_) => 200,
            Err(e) => e.status,
        })
    }

    fn usage(&mut self, _: Out) -> wasmtime::Result<Option<types::Usage>> {
        let r = self.lent_response("outcome.usage")?;
        Ok(r.and_then(|r| r.usage).map(bindings::usage_to_wit))
    }

    fn model(&mut self, _: Out) -> wasmtime::Result<Option<String>> {
        let r = self.lent_response("outcome.model")?;
        Ok(r.map(|r| r.model.clone()))
    }

    fn text(&mut self, _: Out) -> wasmtime::Result<Option<String>> {
        let r = self.lent_response("outcome.text")?;
        Ok(r.and_then(|r| r.choices.first()?.message.content.clone()))
    }

    fn finish_reason(&mut self, _: Out) -> wasmtime::Result<Option<String>> {
        let r = self.lent_response("outcome.finish-reason")?;
        Ok(r.and_then(|r| r.choices.first()?.finish_reason.clone()))
    }

    fn error(&mut self, _: Out) -> wasmtime::Result<Option<types::GatewayErrorResult>> {
        let o = self.lent_outcome("outcome.error")?;
        Ok(o.as_ref().err().map(bindings::error_to_wit))
    }

    fn get(&mut self, _: Out) -> wasmtime::Result<types::PostOutcome> {
        let o = self.lent_outcome("outcome.get")?;
        Ok(bindings::outcome_to_wit(o))
    }

    fn set_extra(
        &mut self,
        _: Out,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        if self.lent_outcome("outcome.set-extra")?.is_err() {
            return Ok(Err(
                "the outcome is an error, which has no response body to set a field of: read \
                 it with `error`, and return a changed error to change it"
                    .into(),
            ));
        }
        Ok(self.annotations.set(name, &value))
    }

    fn drop(&mut self, _: Out) -> wasmtime::Result<()> {
        // Only ever lent (borrowed): there is nothing to free.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn annotations_keep_valid_fields_in_order_and_refuse_the_rest_with_the_reason() {
        let mut a = Annotations::new(41);
        assert_eq!(a.set("x_report".into(), r#"{"left":9}"#), Ok(()));
        assert_eq!(a.set("x_cache".into(), r#""miss""#), Ok(()));
        let refused = |a: &mut Annotations, name: &str, value: &str| {
            a.set(name.into(), value).expect_err("refused")
        };
        assert!(refused(&mut a, "choices", "[]").contains("`choices` is a typed part"));
        assert!(refused(&mut a, "", "1").contains("name is empty"));
        assert!(refused(&mut a, "x", "{oops").contains("the value of `x` is not JSON text"));
        // 8 + 10 + 7 + 6 = 31 bytes so far: `x_more` and 4 bytes reach 41, the limit; 5 do not fit.
        assert!(refused(&mut a, "x_more", "12345").contains("over the plugin's output limit"));
        assert_eq!(a.set("x_more".into(), "1234"), Ok(()));
        assert_eq!(
            a.into_fields(),
            vec![
                ("x_report".to_string(), json!({"left": 9})),
                ("x_cache".to_string(), json!("miss")),
                ("x_more".to_string(), json!(1234)),
            ]
        );
    }
}
