//! The `#[plugin]` attribute of `wasmgate-sdk`. Use it as `wasmgate_sdk::plugin`; see the
//! documentation there.
//!
//! The attribute reads the method names of an `impl Plugin for T` block to learn which hooks the
//! plugin implements, emits the impl unchanged, and generates the component's exports.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// Registers an `impl wasmgate_sdk::Plugin for T` block as the component's plugin; see
/// `wasmgate_sdk::plugin`.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let msg = "#[plugin] takes no arguments";
        let err = syn::Error::new(
            TokenStream2::from(attr)
                .into_iter()
                .next()
                .map_or(Span::call_site(), |t| t.span()),
            msg,
        );
        return err.to_compile_error().into();
    }
    let item = parse_macro_input!(item as ItemImpl);
    match expand(&item) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#item #err).into()
        }
    }
}

/// The impl unchanged, followed by the export glue for its self type.
fn expand(item: &ItemImpl) -> syn::Result<TokenStream2> {
    let Some((trait_path, _)) = &item.trait_ else {
        return Err(syn::Error::new_spanned(
            &item.self_ty,
            "#[plugin] goes on an `impl Plugin for YourType { ... }` block",
        ));
    };
    if trait_path
        .segments
        .last()
        .is_none_or(|s| s.ident != "Plugin")
    {
        return Err(syn::Error::new_spanned(
            trait_path,
            "#[plugin] goes on an impl of `wasmgate_sdk::Plugin`",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "#[plugin] needs a concrete type: a component exports exactly one plugin",
        ));
    }

    let defines = |name: &str| {
        item.items
            .iter()
            .any(|i| matches!(i, ImplItem::Fn(f) if f.sig.ident == name))
    };
    let transport = defines("transport_interceptor");
    let pre = defines("pre_hook");
    let post = defines("post_hook");
    let stream_chunk = defines("stream_chunk");
    let on_error = defines("on_error");
    let cleanup = defines("cleanup");

    let ty = &item.self_ty;
    let sdk = quote!(::wasmgate_sdk::export);
    Ok(quote! {
        #item

        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::core::cell::RefCell<::core::option::Option<#ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct Export;

            impl #sdk::Guest for Export {
                fn get_name() -> ::std::string::String {
                    <#ty as ::wasmgate_sdk::Plugin>::name()
                }
                fn hooks() -> ::wasmgate_sdk::Hooks {
                    #sdk::hooks(#sdk::Defined {
                        transport: #transport,
                        pre: #pre,
                        post: #post,
                        stream_chunk: #stream_chunk,
                        on_error: #on_error,
                        cleanup: #cleanup,
                    }, <#ty as ::wasmgate_sdk::Plugin>::SHARED_INSTANCES)
                }
                fn init(config: ::std::string::String) -> ::wasmgate_sdk::Result<()> {
                    #sdk::init(&PLUGIN, config)
                }
                fn transport_interceptor(
                    req: ::wasmgate_sdk::HttpRequest,
                ) -> ::wasmgate_sdk::Result<::wasmgate_sdk::TransportOutcome> {
                    #sdk::transport_interceptor(&PLUGIN, req)
                }
                fn pre_hook(
                    req: &::wasmgate_sdk::bindings::wasmgate::plugin::exchange::Request,
                ) -> ::wasmgate_sdk::Result<::wasmgate_sdk::PreOutcome> {
                    #sdk::pre_hook(&PLUGIN, req)
                }
                fn post_hook(
                    outcome: &::wasmgate_sdk::bindings::wasmgate::plugin::exchange::Outcome,
                ) -> ::wasmgate_sdk::Result<::core::option::Option<::wasmgate_sdk::PostOutcome>> {
                    #sdk::post_hook(&PLUGIN, outcome)
                }
                fn stream_chunk(
                    chunk: ::wasmgate_sdk::StreamChunk,
                ) -> ::wasmgate_sdk::Result<::wasmgate_sdk::ChunkOutcome> {
                    #sdk::stream_chunk(&PLUGIN, chunk)
                }
                fn on_error(
                    error: ::wasmgate_sdk::GatewayError,
                ) -> ::wasmgate_sdk::Result<::core::option::Option<::wasmgate_sdk::GatewayError>> {
                    #sdk::on_error(&PLUGIN, error)
                }
                fn cleanup() -> ::wasmgate_sdk::Result<()> {
                    #sdk::cleanup(&PLUGIN)
                }
            }

            #sdk::export!(Export with_types_in ::wasmgate_sdk::bindings);
        };
    })
}
