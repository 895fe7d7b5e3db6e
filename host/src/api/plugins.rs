//! The admin API's read side: `GET /api/plugins` and `GET /api/plugins/{name}`.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::error::GatewayError;
use crate::registry::PluginEntry;

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
        "limits": {
            "fuel": e.limits.fuel,
            "timeout_ms": e.limits.timeout_ms,
            "memory_mb": e.limits.memory_bytes >> 20,
            "stack_kb": e.limits.stack_bytes >> 10,
        },
        "loaded_at_ms": e.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "reported_name": plugin.map(|p| p.reported_name()),
        "hooks": plugin.map(|p| p.hooks()),
        "idle_instances": plugin.map(|p| p.idle_instances()),
        "stats": plugin.map(|p| p.stats()),
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
