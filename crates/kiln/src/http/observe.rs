use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// `GET /metrics`: Prometheus' text format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        kiln_sandbox::metrics::render(state.executor()),
    )
}

/// `GET /api/v1/pools`: the same pool figures as `/metrics`, as JSON.
pub(super) async fn pools(State(state): State<AppState>) -> Json<Value> {
    let Some(pool) = state.executor().pool() else {
        return Json(json!({"enabled": false, "pools": []}));
    };
    let pools: Vec<Value> = pool
        .status()
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name,
                "image": p.image,
                "configured": p.configured,
                "ready": p.ready,
                "creating": p.creating,
                "waiting": p.waiting,
                "target": p.target,
                "min": p.min,
                "max": p.max,
                "hits": p.hits,
                "misses": p.misses,
                "removed": p.removed,
            })
        })
        .collect();
    Json(json!({"enabled": true, "pools": pools}))
}
