//! `GET /v1/models`: the models the configured providers advertise, OpenAI-style.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

/// Lists models as `provider/model` ids.
pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .pipeline
        .providers()
        .models()
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
