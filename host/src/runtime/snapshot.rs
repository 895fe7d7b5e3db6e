//! Pre-initialisation for per-request isolation. A per-request plugin is compiled from an
//! instrumented copy of its component (wasmtime's Wizer adds exports that read every core
//! instance's memories and globals); its first instance runs `init`, and that instance's state
//! is written into a new component whose every instance starts where `init` left off. A fresh
//! instance then costs one instantiation, from a copy-on-write memory image, and no `init`.
//!
//! A snapshot is refused (and the plugin's instances each run `init` instead, as pooled ones
//! do) when the component cannot be instrumented, or when `init` left the guest holding a host
//! resource (an open stream or directory): a handle is not memory, and a copy of the memory
//! would point at a resource the new instance does not have.

use anyhow::{Context as _, anyhow};
use wasmtime::Store;
use wasmtime::component::{Instance, Lift, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::host::HostState;
use super::limits::Limits;
use super::plugin::prepare;

/// What a compilation offers per-request isolation.
#[derive(Clone)]
pub(super) enum Snapshotting {
    /// Compiled for pooled instances: no snapshot is taken.
    NotWanted,
    /// The component compiled is the instrumented copy of this original: a snapshot can be
    /// taken after `init`.
    From(std::sync::Arc<[u8]>),
    /// Compiled for per-request isolation, but as it is: why no snapshot can be taken.
    Unavailable(std::sync::Arc<str>),
}

/// The Wizer configuration used for both halves (instrumenting and rewriting must agree).
fn wizer() -> Wizer {
    let mut wizer = Wizer::new();
    // The world's `init` export stays: the snapshot is still a plugin of the same world.
    wizer.keep_init_func(true);
    wizer
}

/// Instruments `source` so its instances' state can be read after `init`. Deterministic: the
/// same source always gives the same bytes (so the compiled result can be cached).
pub(super) fn instrument(source: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, instrumented) = wizer()
        .instrument_component(source)
        .map_err(|e| anyhow!("{e:#}"))?;
    Ok(instrumented)
}

/// Writes the state of `instance` (an instance of `instrument(source)` that has run `init`)
/// into a new component: `source` with its memories and globals as they are now. Each read is
/// a call under the plugin's `limits`.
pub(super) async fn take(
    source: &[u8],
    store: &mut Store<HostState>,
    instance: Instance,
    limits: Limits,
) -> anyhow::Result<Vec<u8>> {
    if !store.data().holds_no_resources() {
        anyhow::bail!(
            "init left the plugin holding a host resource (an open stream or directory), \
             which a snapshot of its memory cannot carry"
        );
    }
    let wizer = wizer();
    // Instrumenting again only to get Wizer's map of the component, which borrows `source`
    // and so cannot be kept from the compilation: once per load, never per request.
    let (cx, _) = wizer
        .instrument_component(source)
        .map_err(|e| anyhow!("{e:#}"))?;
    let mut access = Access {
        store,
        instance,
        limits,
        failed: None,
    };
    let snapshot = wizer.snapshot_component(&cx, &mut access).await;
    if let Some(err) = access.failed {
        return Err(err.context("reading the instance's state"));
    }
    snapshot.map_err(|e| anyhow!("writing the snapshot: {e:#}"))
}

/// Reads an instrumented instance's state through the accessor exports Wizer added. Wizer's
/// interface cannot fail, so the first failure is kept here and checked afterwards.
struct Access<'a> {
    store: &'a mut Store<HostState>,
    instance: Instance,
    limits: Limits,
    failed: Option<anyhow::Error>,
}

impl Access<'_> {
    async fn call<R: Lift + Send + Sync + 'static>(
        &mut self,
        interface: &str,
        func: &str,
    ) -> anyhow::Result<R> {
        let store = &mut *self.store;
        let (_, parent) = self
            .instance
            .get_export(&mut *store, None, interface)
            .with_context(|| format!("the instrumented component exports no `{interface}`"))?;
        let (_, index) = self
            .instance
            .get_export(&mut *store, Some(&parent), func)
            .with_context(|| format!("`{interface}` exports no `{func}`"))?;
        let typed = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *store, index)
            .map_err(|e| anyhow!("`{interface}#{func}` has an unexpected type: {e:#}"))?;
        // Each read gets the budget of a call: a large memory takes a while to copy out.
        prepare(store, self.limits, None);
        let (value,) = typed
            .call_async(&mut *store, ())
            .await
            .map_err(|e| anyhow!("calling `{interface}#{func}` failed: {e:#}"))?;
        Ok(value)
    }

    /// Calls an accessor returning a number, or records the failure and returns zero.
    async fn number<R: Lift + Send + Sync + Default + 'static>(
        &mut self,
        interface: &str,
        func: &str,
    ) -> R {
        match self.call(interface, func).await {
            Ok(value) => value,
            Err(err) => {
                self.failed.get_or_insert(err);
                R::default()
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.call::<WasmList<u8>>(instance, func).await {
            Ok(list) => contents(list.as_le_slice(&*self.store)),
            Err(err) => {
                self.failed.get_or_insert(err);
                contents(&[]);
            }
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.number(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.number(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.number::<f32>(instance, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.number::<f64>(instance, func).await.to_bits()
    }
}
