//! `#[plugin]` reports exactly the hooks an impl defines: here `pre_hook` and `cleanup`, and no
//! `shared-instances` (the default of `SHARED_INSTANCES`).
//!
//! Calls the component exports the attribute generates, through their symbols (the bindings
//! compile natively, with imports that trap), so the test sees what the gateway will.
#![allow(
    unsafe_code,
    reason = "calls the generated `extern \"C\"` exports directly"
)]

use wasmgate_sdk::{Ctx, Hooks, Plugin, PreOutcome, Request, Result};

struct Some;

#[wasmgate_sdk::plugin]
impl Plugin for Some {
    fn init(config: &str) -> Result<Self> {
        if config == "bad" {
            return Err("bad config".into());
        }
        Ok(Some)
    }

    fn pre_hook(&mut self, _ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        Ok(PreOutcome::Continue(req.to_request()))
    }

    fn cleanup(&mut self) -> Result<()> {
        Ok(())
    }
}

unsafe extern "C" {
    #[link_name = "hooks"]
    fn exported_hooks() -> i32;
    #[link_name = "init"]
    fn exported_init(ptr: *mut u8, len: usize) -> *mut u8;
}

/// Calls the `init` export as the canonical ABI does: the argument string is handed over in
/// memory from the guest allocator; the first byte of the result area is 0 for `ok`.
fn init(config: &str) -> bool {
    let bytes = Box::into_raw(config.as_bytes().to_vec().into_boxed_slice());
    let len = bytes.len();
    // SAFETY: `init` takes ownership of a buffer of `len` bytes allocated by the global
    // allocator, which is what `Box<[u8]>` is; the result area is valid until the next call.
    unsafe { *exported_init(bytes.cast::<u8>(), len) == 0 }
}

#[test]
fn reports_exactly_the_hooks_written() {
    // SAFETY: `hooks` takes no arguments and returns the flags as an i32.
    let bits = unsafe { exported_hooks() };
    assert_eq!(bits, i32::from((Hooks::PRE_HOOK | Hooks::CLEANUP).bits()));
}

#[test]
fn init_goes_through_the_plugin() {
    assert!(init("{}"));
    assert!(!init("bad"));
}
