use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::{Extension, Json};
use kiln_api::{CacheMode, ExecSpec, ExecuteRequest, ExecuteResponse, ValidationError};
use tracing::Instrument;

use super::{ApiError, AppState, Holds};

/// `POST /api/v1/execute`. The body is read here rather than by an extractor so that every
/// failure (size, syntax, a field) gets Kiln's JSON error, and so that any Content-Type is taken.
pub(super) async fn execute(
    State(state): State<AppState>,
    holds: Option<Extension<Holds>>,
    body: Body,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let received = Instant::now();
    let bytes = read_body(body, &state).await?;
    let request = decode(&bytes)?;
    let spec = request.validate_with(&state.inner.policy, &state.inner.catalog)?;
    let holds = holds.map(|Extension(h)| h);
    Ok(Json(run(&state, spec, received, holds).await?))
}

/// Answers `spec` from the cache or by running it, as its cache mode says. The run holds
/// `holds` (its request's connection slot and key quota) until it ends, also when its client
/// has gone away meanwhile.
pub(super) async fn run(
    state: &AppState,
    spec: ExecSpec,
    received: Instant,
    holds: Option<Holds>,
) -> Result<ExecuteResponse, ApiError> {
    let results = state.results().clone();
    let key = match spec.cache {
        CacheMode::Off => None,
        CacheMode::Use | CacheMode::Refresh => {
            results
                .key(state.executor().backend().as_ref(), &spec)
                .await
        }
    };
    if let (CacheMode::Use, Some(keyed)) = (spec.cache, &key) {
        if let Some(mut hit) = results.lookup(&keyed.key).await {
            hit.duration_ms = (received.elapsed().as_secs_f64() * 1e6).round() / 1e3;
            return Ok(hit);
        }
    }
    // The run goes on in its own task: a client that disconnects drops this future, never the
    // run halfway through creating its container. The sandbox is removed either way.
    let executor = state.executor().clone();
    let task = tokio::spawn(
        async move {
            let _holds = holds;
            executor.execute(spec, received).await
        }
        .instrument(tracing::Span::current()),
    );
    let mut response = task
        .await
        .map_err(|e| ApiError::Internal(format!("run task failed: {e}")))??;
    if let Some(keyed) = key {
        results.store(&keyed, &response);
        response.cache.key = Some(keyed.key.hex());
    }
    Ok(response)
}

/// The whole body, within the size limit and the time limit: a client that sends it slowly
/// (slowloris) is answered 408 rather than holding the connection and its buffer open.
pub(super) async fn read_body(body: Body, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let (limit, within) = (state.inner.max_body_bytes, state.inner.body_timeout);
    let read = tokio::time::timeout(within, to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::BodyTimeout(within))?;
    read.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BodyRead(e.to_string())
        }
    })
}

pub(super) fn decode(bytes: &[u8]) -> Result<ExecuteRequest, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ValidationError {
                code: "invalid_field",
                message: format!("{path}: {inner}"),
                field: path,
                maximum: None,
            }
            .into(),
            _ => ApiError::BadJson(inner.to_string()),
        }
    })
}
