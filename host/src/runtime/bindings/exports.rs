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
pub(crate) struct ExportIndices([Option<ComponentExportIndex>; NAMES.len()]);

impl ExportIndices {
    /// Finds and type-checks the world's exports in `pre`; fails naming the first one missing
    /// or mistyped.
    pub(crate) fn new(pre: &InstancePre<HostState>) -> wasmtime::Result<Self> {
        // The generated indices check that each export is there, a function, and of the
        // world's signature: the same signatures `Exports` calls with below.
        PluginIndices::new(pre)?;
        let component = pre.component();
        Ok(Self(
            NAMES.map(|name| component.get_export_index(None, name)),
        ))
    }

    /// The exports of `instance`, an instance of the component these indices were made for.
    pub(crate) fn load(&self, store: &mut Store<HostState>, instance: &Instance) -> Exports {
        Exports(
            self.0
                .map(|index| index.and_then(|index| instance.get_func(&mut *store, index))),
        )
    }
}

/// One instance's exports, callable with the world's signatures. (All are there: the link
/// checked them; a missing one would fail its call.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exports([Option<Func>; NAMES.len()]);

impl Exports {
    /// Calls `which` with its signature `P -> (R)`. Debug builds check the signature on every
    /// call; release builds rely on [`ExportIndices::new`] having checked it for this
    /// component.
    #[expect(
        unsafe_code,
        reason = "an export's type is checked once per linked component, not per instance"
    )]
    async fn call<P, R>(
        &self,
        store: &mut Store<HostState>,
        which: Export,
        params: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        (R,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let func = self.0[which as usize].ok_or_else(|| {
            wasmtime::format_err!("the plugin has no export `{}`", NAMES[which as usize])
        })?;
        let typed = if cfg!(debug_assertions) {
            func.typed::<P, (R,)>(&*store)?
        } else {
            // SAFETY: `ExportIndices::new` checked this export of this component against the
            // world's signature (the generated `PluginIndices::new`), and each call below
            // names that same signature, which debug builds (the test suite) check every time.
            unsafe { TypedFunc::new_unchecked(func) }
        };
        Ok(typed.call_async(store, params).await?.0)
    }

    /// Calls `get-name`.
    pub(crate) async fn call_get_name(&self, s: &mut Store<HostState>) -> wasmtime::Result<String> {
        self.call::<(), String>(s, Export::GetName, ()).await
    }

    /// Calls `hooks`.
    pub(crate) async fn call_hooks(&self, s: &mut Store<HostState>) -> wasmtime::Result<Hooks> {
        self.call::<(), Hooks>(s, Export::Hooks, ()).await
    }

    /// Calls `init(config)`.
    pub(crate) async fn call_init(&self, s: &mut Store<HostState>, config: &str) -> Guest<()> {
        self.call::<(&str,), Result<(), String>>(s, Export::Init, (config,))
            .await
    }

    /// Calls `transport-interceptor(req)`.
    pub(crate) async fn call_transport_interceptor(
        &self,
        s: &mut Store<HostState>,
        req: HttpRequest<'_>,
    ) -> Guest<TransportOutcome> {
        self.call::<(HttpRequest<'_>,), Result<TransportOutcome, String>>(
            s,
            Export::TransportInterceptor,
            (req,),
        )
        .await
    }

    /// Calls `pre-hook(req)`.
    pub(crate) async fn call_pre_hook(
        &self,
        s: &mut Store<HostState>,
        req: Resource<Request>,
    ) -> Guest<PreOutcome> {
        self.call::<(Resource<Request>,), Result<PreOutcome, String>>(s, Export::PreHook, (req,))
            .await
    }

    /// Calls `post-hook(outcome)`.
    pub(crate) async fn call_post_hook(
        &self,
        s: &mut Store<HostState>,
        outcome: Resource<Outcome>,
    ) -> Guest<Option<PostOutcome>> {
        self.call::<(Resource<Outcome>,), Result<Option<PostOutcome>, String>>(
            s,
            Export::PostHook,
            (outcome,),
        )
        .await
    }

    /// Calls `stream-chunk(chunk)`.
    pub(crate) async fn call_stream_chunk(
        &self,
        s: &mut Store<HostState>,
        chunk: StreamChunk<'_>,
    ) -> Guest<ChunkOutcome> {
        self.call::<(StreamChunk<'_>,), Result<ChunkOutcome, String>>(
            s,
            Export::StreamChunk,
            (chunk,),
        )
        .await
    }

    /// Calls `on-error(err)`.
    pub(crate) async fn call_on_error(
        &self,
        s: &mut Store<HostState>,
        err: GatewayErrorParam<'_>,
    ) -> Guest<Option<GatewayErrorResult>> {
        self.call::<(GatewayErrorParam<'_>,), Result<Option<GatewayErrorResult>, String>>(
            s,
            Export::OnError,
            (err,),
        )
        .await
    }

    /// Calls `cleanup`.
    pub(crate) async fn call_cleanup(&self, s: &mut Store<HostState>) -> Guest<()> {
        self.call::<(), Result<(), String>>(s, Export::Cleanup, ())
            .await
    }
}

/// What a hook answers: a trap or limit (`Err`), or the guest's own result, whose `Err` is the
/// plugin's error message.
type Guest<T> = wasmtime::Result<Result<T, String>>;
