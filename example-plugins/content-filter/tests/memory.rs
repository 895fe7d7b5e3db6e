//! What compiling the patterns costs at its peak. In a wasm instance that peak is never given
//! back, and the gateway keeps an instance per concurrent request, so it is a per-instance cost.
//! Measured natively with a counting allocator: the same code allocates the same way in wasm.

#![expect(
    unsafe_code,
    reason = "a counting allocator must implement the unsafe GlobalAlloc trait"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use content_filter::{Action, Filter};
use regex_automata::meta::Regex;
use regex_automata::util::syntax;

/// Counts this thread's live bytes and their peak (tests run on several threads).
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System`; the counting touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.get() + layout.size();
        LIVE.set(live);
        PEAK.set(PEAK.get().max(live));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.set(LIVE.get().saturating_sub(layout.size()));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The most bytes `f` had allocated at once, beyond what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = LIVE.get();
    PEAK.set(before);
    let value = f();
    (PEAK.get() - before, value)
}

const PATTERNS: [&str; 2] = [r"\bpassword\b", r"sk-[A-Za-z0-9]{20,40}"];

#[test]
fn case_insensitive_patterns_compile_without_the_utf8_scratch_table() {
    let patterns: Vec<String> = PATTERNS.iter().map(|p| (*p).to_string()).collect();
    let (peak, filter) =
        peak_of(|| Filter::new(&patterns, true, Action::Redact("[x]".into()), 64).unwrap());
    // What the same patterns cost compiled as written: the reason for the rewrite.
    let (plain, _) = peak_of(|| {
        Regex::builder()
            .syntax(syntax::Config::new().case_insensitive(true))
            .build_many(&PATTERNS)
            .unwrap()
    });
    assert!(
        plain > 300 << 10,
        "compiled as written: {plain} bytes at the peak"
    );
    assert!(
        peak < 150 << 10,
        "the filter's compile peaked at {peak} bytes"
    );
    // The rewrite keeps the language: the non-ASCII case variants still match.
    assert_eq!(
        filter.redact("PAſſWORD, sk-\u{212A}bcdefghijklmnopqrstu!", "[x]"),
        "[x], [x]!"
    );
}
