//! The admin API: `GET /api/plugins[/{name}]` to watch plugins, and the token-protected
//! mutations `PUT /api/plugins/{name}`, `POST /api/plugins` (upload), `POST
//! /api/plugins/{name}/reload` and `DELETE /api/plugins/{name}`.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::admin::{AdminError, PluginPatch};
use crate::config::Stage;
use crate::error::GatewayError;
use crate::registry::PluginEntry;

impl From<AdminError> for ApiError {
    fn from(err: AdminError) -> Self {
        let (status, kind, code) = match &err {
            AdminError::Disabled => (403, "permission_error", "admin_disabled"),
            AdminError::Unauthorized => (401, "authentication_error", "invalid_admin_token"),
            AdminError::NotFound(_) => (404, "invalid_request_error", "plugin_not_found"),
            AdminError::Invalid(_) => (400, "invalid_request_error", "invalid_request"),
            AdminError::Rejected(_) => (422, "invalid_request_error", "plugin_rejected"),
            AdminError::NoConfigFile => (409, "invalid_request_error", "no_config_file"),
            AdminError::Io(_) => (500, "server_error", "admin_io_error"),
        };
        ApiError(
            GatewayError::new(status, err.to_string())
                .with_kind(kind)
                .with_code(code),
        )
    }
}

/// Checks the bearer token of a mutating request.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    state.admin.authorize(token).map_err(ApiError::from)
}

fn describe(e: &PluginEntry) -> Value {
    let plugin = e.plugin.as_ref();
    json!({
        "name": e.name,
        "file": e.file.display().to_string(),
        "sha256": e.sha256,
        "status": e.status,
        "error": e.error,
        "order": e.order,
        "version": e.version,
        "compiles": e.compiles,
        "busy_instances": plugin.map(|p| p.busy_instances()),
        "policy": e.policy,
        "pipeline": e.pipeline,
        "priority": e.priority,
        "parallel": e.settings.parallel,
        "stages": e.settings.stages.clone().unwrap_or_else(|| {
            vec![Stage::PreRequest, Stage::PostRequest, Stage::Error]
        }),
        "required": e.settings.required,
        // What its instances run under: as configured, or as the plugin declares when the
        // config leaves it unset (known once loaded).
        "isolation": plugin.map(|p| p.isolation()).or(e.settings.isolation),
        "preinitialized": plugin.map(|p| p.preinitialized()),
        "grants": e.settings.grants,
        "limits": {
            "fuel": e.limits.fuel,
            "timeout_ms": e.limits.timeout_ms,
            "memory_mb": e.limits.memory_bytes >> 20,
            "stack_kb": e.limits.stack_bytes >> 10,
            "output_kb": e.limits.output_bytes >> 10,
        },
        "loaded_at_ms": e.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "reported_name": plugin.map(|p| p.reported_name()),
        "hooks": plugin.map(|p| p.hooks()),
        "idle_instances": plugin.map(|p| p.idle_instances()),
        "stats": plugin.map(|p| p.stats()),
        "quarantine": plugin.map(|p| p.quarantine()),
        "quarantine_policy": e.settings.quarantine,
    })
}

/// Every plugin with its status, in pipeline order.
pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    let plugins: Vec<Value> = state.registry.entries().iter().map(describe).collect();
    Json(json!({ "plugins": plugins }))
}

/// One plugin.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .registry
        .entries()
        .iter()
        .find(|e| e.name == name)
        .map(|e| Json(describe(e)))
        .ok_or_else(|| {
            ApiError(GatewayError::not_found(
                format!("no plugin named {name:?}; GET /api/plugins lists them"),
                "plugin_not_found",
            ))
        })
}

/// `PUT /api/plugins/{name}`: change config, enabled, order, limits, policy, version,
/// quarantine, required or grants.
pub(super) async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let bytes = to_bytes(body, 1 << 20).await.map_err(|e| {
        GatewayError::new(
            413,
            format!("the settings body is too large or unreadable: {e}"),
        )
        .with_code("request_too_large")
    })?;
    let patch: PluginPatch = serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::invalid_request(format!(
            "invalid settings: {e}; send a JSON object with any of config, enabled, order, \
             limits, policy, version, quarantine, required, grants"
        ))
    })?;
    let entry = state.admin.update(&name, patch).await?;
    Ok(Json(describe(&entry)))
}

/// Query of `POST /api/plugins`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct UploadQuery {
    name: Option<String>,
}

/// `POST /api/plugins?name=NAME`: upload a component (raw body, or multipart with a `file` part
/// and an optional `name` field).
pub(super) async fn upload(
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let too_large = |e: axum::Error| {
        ApiError(
            GatewayError::new(
                413,
                format!(
                    "the upload exceeds the {} byte limit (upload_limit_bytes) or could not be read: {e}",
                    state.upload_limit
                ),
            )
            .with_code("upload_too_large"),
        )
    };
    let bytes = to_bytes(body, state.upload_limit)
        .await
        .map_err(too_large)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (name, component) = if content_type.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(content_type).map_err(|e| {
            GatewayError::invalid_request(format!("invalid multipart content type: {e}"))
        })?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let (mut name, mut file) = (query.name, None);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| GatewayError::invalid_request(format!("invalid multipart body: {e}")))?
        {
            match field.name() {
                Some("file") => {
                    let data = field.bytes().await.map_err(|e| {
                        GatewayError::invalid_request(format!("invalid multipart file part: {e}"))
                    })?;
                    file = Some(data.to_vec());
                }
                Some("name") => {
                    name = Some(field.text().await.map_err(|e| {
                        GatewayError::invalid_request(format!("invalid multipart name field: {e}"))
                    })?);
                }
                _ => {}
            }
        }
        let file = file.ok_or_else(|| {
            GatewayError::invalid_request("the multipart body has no `file` part")
        })?;
        (name, file)
    } else {
        (query.name, bytes.to_vec())
    };
    let name = name.ok_or_else(|| {
        GatewayError::invalid_request(
            "name the plugin: POST /api/plugins?name=NAME (or a multipart `name` field)",
        )
    })?;
    let entry = state.admin.upload(&name, component).await?;
    Ok((StatusCode::CREATED, Json(describe(&entry))))
}

/// `POST /api/plugins/{name}/reload`: reload from the file even if nothing changed.
pub(super) async fn reload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let entry = state.admin.reload(&name).await?;
    Ok(Json(describe(&entry)))
}

/// `DELETE /api/plugins/{name}`: unload, remove the file and the config entry.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    state.admin.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
