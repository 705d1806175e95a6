//! The OpenAPI document of the v1 API, `GET /api/v1/openapi.json`, generated from the wire types
//! the handlers decode and encode (`kiln-api`); the operations are described here, next to the
//! router, and checked against a running server by a contract fuzzer (scripts/contract.sh).

use axum::Json;
use kiln_api::{ErrorBody, ExecuteRequest, ExecuteResponse};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// `POST /api/v1/execute/batch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchRequest {
    /// At most `server.max_batch` (32) items, each an execute request (`ExecuteRequest`). An
    /// item that is not a valid one is answered with its own error in its place, so any JSON
    /// value is accepted here.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub requests: Vec<serde_json::Value>,
}

/// One item of a batch's answer: its result, or its error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    Result(Box<ExecuteResponse>),
    Error(ErrorBody),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItem>,
}

/// One runtime of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeEntry {
    pub language: String,
    pub version: String,
    pub aliases: Vec<String>,
    pub image: String,
    pub source_file: String,
    pub compiled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeList {
    pub runtimes: Vec<RuntimeEntry>,
}

/// One server-sent event of `/api/v1/execute/stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamEvent {
    /// `stdout`, `stderr`, `compile_stdout`, `compile_stderr`, `result` or `error`.
    #[schema(pattern = "^(stdout|stderr|compile_stdout|compile_stderr|result|error)$")]
    pub event: String,
    /// JSON: `{"text": …}` for output, an `ExecuteResponse` for `result`, an `ErrorBody` for
    /// `error`.
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Runs a command or a program in a fresh sandbox and answers with its result.
#[utoipa::path(
    post,
    path = "/api/v1/execute",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The program ran (whatever its exit code)", body = ExecuteResponse),
        (status = 400, description = "The body is not JSON, or could not be read", body = ErrorBody),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 404, description = "The image is not present and could not be pulled", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A field is missing, wrong, or above the server's limits", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
        (status = 500, description = "The run failed inside the server", body = ErrorBody),
        (status = 503, description = "The engine is unavailable, the server is at capacity, or the sandbox was lost", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn execute() {}

/// Runs several requests concurrently; answers in order, each a result or an error.
#[utoipa::path(
    post,
    path = "/api/v1/execute/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Every item's result or error, in order", body = BatchResponse),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "The batch itself is wrong (not a list, too many items)", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn batch() {}

/// The runtime catalog (`language` values).
#[utoipa::path(
    get,
    path = "/api/v1/runtimes",
    responses(
        (status = 200, description = "The catalog", body = RuntimeList),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn runtimes() {}

/// The same request as `/api/v1/execute`, answered as server-sent events: `stdout`, `stderr`
/// (`compile_stdout`, `compile_stderr`) as `{"text": …}` while the program runs, then one
/// `result` (an `ExecuteResponse`) or one `error` (an `ErrorBody`).
#[utoipa::path(
    post,
    path = "/api/v1/execute/stream",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "The body is not JSON, or could not be read", body = ErrorBody),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A field is missing, wrong, or above the server's limits", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn execute_stream() {}

/// Readiness: the engine answers, kiln-init is usable, the images are there, the pools are at
/// their minimum; each check with its reason.
#[utoipa::path(
    get,
    path = "/ready",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Not ready; the failing checks say why", body = Object),
    )
)]
#[allow(dead_code)]
fn ready() {}

/// The warm pools: per pool its key, sizes, target, hits and misses, removals by reason.
#[utoipa::path(
    get,
    path = "/api/v1/pools",
    responses(
        (status = 200, description = "The pools", body = Object),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn pools() {}

/// Memory density: KSM, THP, zram, idle pooled sandboxes.
#[utoipa::path(
    get,
    path = "/api/v1/system/memory",
    responses(
        (status = 200, description = "The mechanisms, their counters, and why any is off", body = Object),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn system_memory() {}

/// Empties the result cache: every tier, one key (`key`) or one tier (`tier`).
#[utoipa::path(
    delete,
    path = "/api/v1/cache",
    params(
        ("key" = Option<String>, Query, description = "The 64 hex digits of one cache key"),
        ("tier" = Option<String>, Query, description = "l1, l2 or l3"),
    ),
    responses(
        (status = 200, description = "What was purged and which tiers failed", body = Object),
        (status = 401, description = "API keys are on and the key is missing or unknown", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 422, description = "No such tier, or not a key", body = ErrorBody),
        (status = 429, description = "The key is over its rate or quota", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn purge_cache() {}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "Alive", body = Health)))]
#[allow(dead_code)]
fn health() {}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Kiln",
        description = "Runs untrusted commands and code in fresh, locked-down sandboxes.",
        version = "1"
    ),
    paths(
        execute,
        execute_stream,
        batch,
        runtimes,
        pools,
        system_memory,
        purge_cache,
        health,
        ready
    ),
    components(schemas(
        ExecuteRequest,
        ExecuteResponse,
        ErrorBody,
        BatchRequest,
        BatchResponse,
        RuntimeList
    ))
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_the_wire_types() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["paths"]["/api/v1/execute"]["post"]["responses"]["422"].is_object());
        let req = &doc["components"]["schemas"]["ExecuteRequest"];
        for field in [
            "image", "command", "argv", "language", "code", "limits", "cache",
        ] {
            assert!(req["properties"][field].is_object(), "{field}: {req}");
        }
        let res = &doc["components"]["schemas"]["ExecuteResponse"];
        for field in [
            "stdout",
            "exit_code",
            "status",
            "timings",
            "usage",
            "compile",
        ] {
            assert!(res["properties"][field].is_object(), "{field}: {res}");
        }
    }
}
