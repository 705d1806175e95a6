use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use kiln_api::{CacheMode, ExecuteRequest, ValidationError};
use serde_json::{json, Value};

use super::execute::{read_body, run};
use super::{ApiError, AppState};

/// `POST /api/v1/execute/batch` with `{"requests": [...]}`: every item runs concurrently within
/// the server's limits; the answer lists, in order, each item's result or its `error`. One bad
/// item never fails the others. Items with the same cache key and `"cache": "use"` run once.
pub(super) async fn batch(
    State(state): State<AppState>,
    holds: Option<axum::Extension<super::Holds>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let received = Instant::now();
    let bytes = read_body(body, &state).await?;
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let items = doc
        .as_object()
        .and_then(|o| o.get("requests"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            field(
                "requests",
                "the body must be {\"requests\": [ ... ]}".into(),
                None,
            )
        })?;
    let max = state.inner.max_batch;
    if items.len() > max {
        return Err(field(
            "requests",
            format!(
                "{} requests given; at most {max} are allowed in one batch",
                items.len()
            ),
            Some(json!(max)),
        ));
    }

    // Decode and validate each item on its own.
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let spec = serde_path_to_error::deserialize::<_, ExecuteRequest>(item.clone())
            .map_err(|e| {
                field(
                    &format!("requests[{i}].{}", e.path()),
                    e.inner().to_string(),
                    None,
                )
            })
            .and_then(|r| {
                r.validate_with(&state.inner.policy, &state.inner.catalog)
                    .map_err(|mut v| {
                        v.field = format!("requests[{i}].{}", v.field);
                        ApiError::Invalid(v)
                    })
            });
        specs.push(spec);
    }

    // Same key, caching on: only the first of them runs; the others share its answer.
    let backend = state.executor().backend().clone();
    let mut leader_of: Vec<Option<usize>> = vec![None; specs.len()];
    let mut first_with: HashMap<kiln_cache::CacheKey, usize> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let Ok(spec) = spec else { continue };
        // Only items that may be answered from the cache share: a `refresh` item runs.
        if spec.cache != CacheMode::Use {
            continue;
        }
        if let Some(key) = state
            .results()
            .key(backend.as_ref(), spec)
            .await
            .map(|k| k.key)
        {
            match first_with.get(&key) {
                Some(&leader) => leader_of[i] = Some(leader),
                None => {
                    first_with.insert(key, i);
                }
            }
        }
    }

    // Each item answers as a JSON value of its own: its result, or its error's body.
    let holds = holds.map(|axum::Extension(h)| h);
    let runs = specs.into_iter().enumerate().map(|(i, spec)| {
        let state = state.clone();
        let holds = holds.clone();
        let follows = leader_of[i];
        async move {
            let outcome = match (spec, follows) {
                (Ok(_), Some(_)) => return None,
                (Err(e), _) => Err(e),
                (Ok(spec), None) => run(&state, spec, received, holds).await,
            };
            Some(match outcome {
                Ok(res) => serde_json::to_value(res).unwrap_or(Value::Null),
                Err(e) => json!({"error": e.parts().1.error}),
            })
        }
    });
    let outcomes = futures_util::future::join_all(runs).await;
    let mut answers: Vec<Value> = Vec::with_capacity(outcomes.len());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let answer = match (outcome, leader_of[i]) {
            (Some(v), _) => v,
            (None, Some(leader)) => answers[leader].clone(),
            (None, None) => unreachable!("only followers have no answer of their own"),
        };
        answers.push(answer);
    }
    Ok(Json(json!({"results": answers})))
}

fn field(name: &str, message: String, maximum: Option<Value>) -> ApiError {
    ApiError::Invalid(ValidationError {
        code: if maximum.is_some() {
            "limit_exceeded"
        } else {
            "invalid_field"
        },
        field: name.to_owned(),
        message,
        maximum,
    })
}
