//! `#[plugin]` reports no hook when the impl defines only `init`.
#![allow(
    unsafe_code,
    reason = "calls the generated `extern \"C\"` export directly"
)]

use wasmgate_sdk::{Plugin, Result};

struct Nothing;

#[wasmgate_sdk::plugin]
impl Plugin for Nothing {
    fn init(_config: &str) -> Result<Self> {
        Ok(Nothing)
    }
}

unsafe extern "C" {
    #[link_name = "hooks"]
    fn exported_hooks() -> i32;
}

#[test]
fn reports_no_hook() {
    // SAFETY: `hooks` takes no arguments and returns the flags as an i32.
    assert_eq!(unsafe { exported_hooks() }, 0);
    assert_eq!(Nothing::name(), "hooks_none");
}
