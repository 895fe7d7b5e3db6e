//! Compiling a component without leaving the compiler's memory behind: Cranelift runs in a
//! throwaway engine on threads that end with the compilation, and the long-lived engine only
//! loads the finished machine code.
//!
//! Why: an engine keeps its compiler contexts for reuse, and rayon's global pool keeps its
//! threads (and their allocator heaps) for the life of the process. Compiling in the serving
//! engine left ~20 MB of compiler state and ~8 MB of worker heaps resident for good: a cold
//! start with the realistic five kept 59 MB (40 MB anonymous) against 24 MB warm. Compiled here,
//! a cold start keeps what a warm one does (29 MB, 10.5 MB anonymous; measured 3 times each).

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy};

/// How to compile for one serving engine: its config, with instances allocated on demand (a
/// compiling engine never instantiates, so it needs no instance pool).
#[derive(Clone)]
pub(super) struct Compiler {
    config: Config,
}

impl Compiler {
    /// A compiler for the engine built from `serving`.
    pub(super) fn for_engine(serving: &Config) -> Self {
        let mut config = serving.clone();
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        Self { config }
    }

    /// Compiles `bytes` (a component) and loads the result into `engine`, which must be the
    /// serving engine this compiler was made for. Blocking and CPU-heavy. The error is
    /// wasmtime's (validation, compilation, or the serving engine's limits, such as its
    /// instance pool's), for the caller to phrase.
    pub(super) fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let artifact = self.precompile(bytes)?;
        // Before loading: the long-lived code then lands in pages the compilation's garbage no
        // longer holds (~2 MB less resident for the realistic five than collecting only after
        // the load, which `Runtime::compile_bounded` also does for what the load freed).
        return_freed_memory();
        load_own_artifact(engine, &artifact)
    }

    /// Machine code for `bytes`, from an engine that is dropped once done, compiled in parallel
    /// on a thread pool whose threads end with it.
    fn precompile(&self, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        let compile = |config: &Config| Engine::new(config)?.precompile_component(bytes);
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        match rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("wasm-compile-{i}"))
            .build()
        {
            Ok(pool) => pool.install(|| compile(&self.config)),
            Err(err) => {
                tracing::debug!("no compile threads ({err}); compiling on this one");
                let mut serial = self.config.clone();
                serial.parallel_compilation(false);
                compile(&serial)
            }
        }
    }
}

/// Loads machine code that [`Compiler::precompile`] produced for `engine`'s config.
#[expect(
    unsafe_code,
    reason = "loading machine code is unsafe in wasmtime; this is our own compiler's output"
)]
fn load_own_artifact(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` is sound for the unmodified output of
    // `precompile_component` by an engine whose config is compatible (which it checks). The
    // bytes were produced just now, in memory, by an engine built from this engine's config.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Hands the memory the allocator holds free back to the OS now. mimalloc (the binary's
/// allocator) returns freed pages only after a delay, and only when some thread allocates
/// again: a compilation's garbage (tens of MB for a few components) would otherwise stay
/// resident while the gateway idles, and count in its peak under the next load. Under another
/// global allocator (tests, an embedding program) this only tidies mimalloc's own empty heap.
#[expect(unsafe_code, reason = "a call into mimalloc's C API")]
pub(super) fn return_freed_memory() {
    // SAFETY: `mi_collect` has no preconditions; it may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
