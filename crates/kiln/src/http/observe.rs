use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// `GET /metrics`: Prometheus' text format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = kiln_sandbox::metrics::render(state.executor());
    render_cache(&mut out, state.results().cache());
    state.memory().render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// A per-tier figure: metric type, name, help text, and how to read it.
type Figure = (
    &'static str,
    &'static str,
    &'static str,
    fn(&kiln_cache::TierStats, &kiln_cache::TierCounters) -> u64,
);

fn render_cache(out: &mut String, cache: &kiln_cache::Cache) {
    use kiln_sandbox::metrics::header;
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let tiers: Vec<_> = cache.tiers().collect();
    let figures: [Figure; 7] = [
        (
            "counter",
            "kiln_cache_hits_total",
            "Cache reads answered by the tier.",
            |_, c| c.hits.load(Relaxed),
        ),
        (
            "counter",
            "kiln_cache_misses_total",
            "Cache reads the tier could not answer.",
            |_, c| c.misses.load(Relaxed),
        ),
        (
            "counter",
            "kiln_cache_errors_total",
            "Reads and writes skipped because the tier failed (down, slow, full).",
            |_, c| c.errors.load(Relaxed),
        ),
        (
            "counter",
            "kiln_cache_corrupt_total",
            "Entries that did not check out, deleted.",
            |_, c| c.corrupt.load(Relaxed),
        ),
        (
            "gauge",
            "kiln_cache_entries",
            "Entries held by the tier (0 where it cannot tell).",
            |s, _| s.entries,
        ),
        (
            "gauge",
            "kiln_cache_bytes",
            "Bytes held by the tier (0 where it cannot tell).",
            |s, _| s.bytes,
        ),
        (
            "counter",
            "kiln_cache_evictions_total",
            "Entries the tier evicted for room or age.",
            |s, _| s.evictions,
        ),
    ];
    for (kind, name, help, get) in figures {
        header(out, name, kind, help);
        for (tier, stats, counters) in &tiers {
            let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {}", get(stats, counters));
        }
    }
    header(
        out,
        "kiln_cache_writes_dropped_total",
        "counter",
        "Background cache writes dropped because too many were in flight.",
    );
    let _ = writeln!(
        out,
        "kiln_cache_writes_dropped_total {}",
        cache.dropped_writes()
    );
}

/// `GET /api/v1/system/memory`: KSM counters and savings, THP policy, zram, and why a
/// mechanism is off where it is.
pub(super) async fn memory(State(state): State<AppState>) -> Json<Value> {
    Json(state.memory().report())
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

#[derive(Debug, serde::Deserialize)]
pub(super) struct PurgeQuery {
    key: Option<String>,
    tier: Option<String>,
}

/// `DELETE /api/v1/cache[?key=…][&tier=l1|l2|l3]`: empties every tier, or removes one key from
/// every tier, or empties one tier.
pub(super) async fn purge_cache(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PurgeQuery>,
) -> Result<Json<Value>, super::ApiError> {
    let cache = state.results().cache();
    if let Some(tier) = &q.tier {
        let done = cache.purge_tier(tier).await.ok_or_else(|| {
            super::ApiError::Invalid(kiln_api::ValidationError {
                code: "invalid_field",
                field: "tier".into(),
                message: format!(
                    "no cache tier {tier:?}; the tiers are l1, l2 and l3 (where configured)"
                ),
                maximum: None,
            })
        })?;
        let failed: Vec<&str> = if done.is_err() {
            vec![tier.as_str()]
        } else {
            vec![]
        };
        return Ok(Json(json!({"purged": tier, "failed_tiers": failed})));
    }
    let failed = match &q.key {
        Some(hex) => {
            let key = kiln_cache::CacheKey::parse(hex).ok_or_else(|| {
                super::ApiError::Invalid(kiln_api::ValidationError {
                    code: "invalid_field",
                    field: "key".into(),
                    message: "key must be the 64 hex digits of a cache key".into(),
                    maximum: None,
                })
            })?;
            cache.delete(&key).await
        }
        None => cache.purge().await,
    };
    Ok(Json(
        json!({"purged": q.key.as_deref().unwrap_or("all"), "failed_tiers": failed}),
    ))
}

/// `GET /api/v1/runtimes`: the catalog's languages.
pub(super) async fn runtimes(State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .inner
        .catalog
        .runtimes
        .iter()
        .map(|r| {
            json!({
                "language": r.name,
                "version": r.version,
                "aliases": r.aliases,
                "image": r.image,
                "source_file": r.source_file,
                "compiled": r.compile.is_some(),
            })
        })
        .collect();
    Json(json!({ "runtimes": list }))
}
