//! A plugin's exports on one instance: found by their indices and called with the types the
//! link checked once, instead of the generated `PluginIndices::load`, which type-checks all
//! nine exports again on every instance (~11 k instructions each time, a noticeable part of
//! creating a per-request instance).

use wasmtime::Store;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Func, Instance, InstancePre, Lift, Lower, Resource,
    TypedFunc,
};

use super::generated::{
    ChunkOutcome, GatewayErrorParam, GatewayErrorResult, Hooks, HttpRequest, Outcome,
    PluginIndices, PostOutcome, PreOutcome, Request, StreamChunk, TransportOutcome,
};
use crate::runtime::host::HostState;

/// The world's exports, in the order [`NAMES`] lists them.
#[derive(Debug, Clone, Copy)]
enum Export {
    GetName,
    Hooks,
    Init,
    TransportInterceptor,
    PreHook,
    PostHook,
    StreamChunk,
    OnError,
    Cleanup,
}

/// The exports' names in the world, indexed by [`Export`].
const NAMES: [&str; 9] = [
    "get-name",
    "hooks",
    "init",
    "transport-interceptor",
    "pre-hook",
    "post-hook",
    "stream-chunk",
    "on-error",
    "cleanup",
];

/// Where a linked component's exports are. Creating it checks every export's type against the
/// world, once per linked component: what lets [`Exports`] call them unchecked.
#[derive(Debug, Clone)]
pub(crate) struct ExportIndices([ComponentExportIndex; NAMES.len()]);

impl ExportIndices {
    /// Finds and type-checks the world's exports in `pre`; fails naming the first one missing
    /// or mistyped.
    pub(crate) fn new(pre: &InstancePre<HostState>) -> wasmtime::Result<Self> {
        // The generated indices check each export's type against the world's signature, the
        // same signatures `Exports` calls with below.
        PluginIndices::new(pre)?;
        let component = pre.component();
        let mut found = Vec::with_capacity(NAMES.len());
        for name in NAMES {
            let index = component
                .get_export_index(None, name)
                .ok_or_else(|| wasmtime::format_err!("no export `{name}` found"))?;
            found.push(index);
        }
        let indices = found
            .try_into()
            .map_err(|_| wasmtime::format_err!("the world has {} exports", NAMES.len()))?;
        Ok(Self(indices))
    }

    /// The exports of `instance`, an instance of the component these indices were made for.
    pub(crate) fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Exports> {
        let mut funcs = Vec::with_capacity(NAMES.len());
        for (index, name) in self.0.iter().zip(NAMES) {
            let func = instance
                .get_func(&mut *store, index)
                .ok_or_else(|| wasmtime::format_err!("export `{name}` is not a function"))?;
            funcs.push(func);
        }
        let funcs = funcs
            .try_into()
            .map_err(|_| wasmtime::format_err!("the world has {} exports", NAMES.len()))?;
        Ok(Exports(funcs))
    }
}

/// One instance's exports, callable with the world's signatures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exports([Func; NAMES.len()]);

impl Exports {
    /// `which` with its signature `P -> R`. Debug builds check the signature on every call;
    /// release builds rely on [`ExportIndices::new`] having checked it for this component.
    #[expect(
        unsafe_code,
        reason = "an export's type is checked once per linked component, not per instance"
    )]
    fn typed<P, R>(
        &self,
        store: &mut Store<HostState>,
        which: Export,
    ) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let func = self.0[which as usize];
        if cfg!(debug_assertions) {
            return func.typed::<P, R>(&*store);
        }
        // SAFETY: `ExportIndices::new` checked this export of this component against the
        // world's signature (the generated `PluginIndices::new`), and every call below names
        // that same signature, which debug builds (the test suite) check on each call.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }

    /// Calls `get-name`.
    pub(crate) async fn call_get_name(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<String> {
        let f = self.typed::<(), (String,)>(store, Export::GetName)?;
        Ok(f.call_async(store, ()).await?.0)
    }

    /// Calls `hooks`.
    pub(crate) async fn call_hooks(&self, store: &mut Store<HostState>) -> wasmtime::Result<Hooks> {
        let f = self.typed::<(), (Hooks,)>(store, Export::Hooks)?;
        Ok(f.call_async(store, ()).await?.0)
    }

    /// Calls `init(config)`.
    pub(crate) async fn call_init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        let f = self.typed::<(&str,), (Result<(), String>,)>(store, Export::Init)?;
        Ok(f.call_async(store, (config,)).await?.0)
    }

    /// Calls `transport-interceptor(req)`.
    pub(crate) async fn call_transport_interceptor(
        &self,
        store: &mut Store<HostState>,
        req: HttpRequest<'_>,
    ) -> wasmtime::Result<Result<TransportOutcome, String>> {
        let f = self.typed::<(HttpRequest<'_>,), (Result<TransportOutcome, String>,)>(
            store,
            Export::TransportInterceptor,
        )?;
        Ok(f.call_async(store, (req,)).await?.0)
    }

    /// Calls `pre-hook(req)`.
    pub(crate) async fn call_pre_hook(
        &self,
        store: &mut Store<HostState>,
        req: Resource<Request>,
    ) -> wasmtime::Result<Result<PreOutcome, String>> {
        let f = self
            .typed::<(Resource<Request>,), (Result<PreOutcome, String>,)>(store, Export::PreHook)?;
        Ok(f.call_async(store, (req,)).await?.0)
    }

    /// Calls `post-hook(outcome)`.
    pub(crate) async fn call_post_hook(
        &self,
        store: &mut Store<HostState>,
        outcome: Resource<Outcome>,
    ) -> wasmtime::Result<Result<Option<PostOutcome>, String>> {
        let f = self.typed::<(Resource<Outcome>,), (Result<Option<PostOutcome>, String>,)>(
            store,
            Export::PostHook,
        )?;
        Ok(f.call_async(store, (outcome,)).await?.0)
    }

    /// Calls `stream-chunk(chunk)`.
    pub(crate) async fn call_stream_chunk(
        &self,
        store: &mut Store<HostState>,
        chunk: StreamChunk<'_>,
    ) -> wasmtime::Result<Result<ChunkOutcome, String>> {
        let f = self.typed::<(StreamChunk<'_>,), (Result<ChunkOutcome, String>,)>(
            store,
            Export::StreamChunk,
        )?;
        Ok(f.call_async(store, (chunk,)).await?.0)
    }

    /// Calls `on-error(err)`.
    pub(crate) async fn call_on_error(
        &self,
        store: &mut Store<HostState>,
        err: GatewayErrorParam<'_>,
    ) -> wasmtime::Result<Result<Option<GatewayErrorResult>, String>> {
        let f = self
            .typed::<(GatewayErrorParam<'_>,), (Result<Option<GatewayErrorResult>, String>,)>(
                store,
                Export::OnError,
            )?;
        Ok(f.call_async(store, (err,)).await?.0)
    }

    /// Calls `cleanup`.
    pub(crate) async fn call_cleanup(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<(), String>> {
        let f = self.typed::<(), (Result<(), String>,)>(store, Export::Cleanup)?;
        Ok(f.call_async(store, ()).await?.0)
    }
}
