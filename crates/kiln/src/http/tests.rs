//! HTTP-level tests with `oneshot`: validation and error mapping. The backend here is a stub
//! because the engine is beside the point; tests/ runs the same routes against real Docker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kiln_api::Policy;
use kiln_sandbox::{Backend, Error, Executor, ExecutorConfig, Sandbox, SandboxSpec};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{app, AppState};

/// An engine that is down, or one whose launches never finish (to fill the run slots).
#[derive(Debug)]
enum Stub {
    Down,
    Stuck,
}

#[async_trait]
impl Backend for Stub {
    fn name(&self) -> &'static str {
        "stub"
    }
    async fn ping(&self) -> kiln_sandbox::Result<()> {
        Err(Error::Unavailable("stub engine is down".into()))
    }
    async fn image_id(&self, _: &str) -> kiln_sandbox::Result<Option<String>> {
        Ok(None)
    }
    async fn has_image(&self, _: &str) -> kiln_sandbox::Result<bool> {
        Ok(false)
    }
    async fn launch(&self, _: &SandboxSpec) -> kiln_sandbox::Result<Box<dyn Sandbox>> {
        match self {
            Stub::Down => Err(Error::Unavailable("connection refused".into())),
            Stub::Stuck => std::future::pending().await,
        }
    }
    async fn remove_orphans(&self) -> kiln_sandbox::Result<usize> {
        Ok(0)
    }
}

fn state(stub: Stub, queue_size: usize) -> AppState {
    let executor = Executor::new(
        Arc::new(stub),
        ExecutorConfig {
            max_concurrent: 1,
            queue_size,
            queue_timeout: Duration::from_millis(200),
        },
        None,
        Default::default(),
    );
    let section = crate::config::CacheSection {
        l2_path: None,
        ..Default::default()
    };
    let results = Arc::new(crate::results::ResultCache::open(
        &section,
        std::path::Path::new("/nonexistent"),
        "65534:65534",
    ));
    AppState::new(
        Arc::new(executor),
        Policy::default(),
        4096,
        vec!["kiln/busybox".into()],
        "/nonexistent".into(),
        results,
        Arc::new(crate::memory::Memory::start(
            &crate::config::MemorySection {
                ksm_host: crate::config::HostPolicy::Leave,
                ..Default::default()
            },
        )),
    )
}

async fn call(
    state: AppState,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value, Option<String>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap();
    let res = app(state).oneshot(req).await.unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, json, retry)
}

async fn post(body: impl Into<Body>) -> (StatusCode, Value) {
    let (s, v, _) = call(state(Stub::Down, 0), "POST", "/api/v1/execute", body).await;
    (s, v)
}

#[tokio::test]
async fn malformed_json_is_400() {
    for body in ["{", "", "{\"image\": }", "nope"] {
        let (status, v) = post(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(v["error"]["code"], "invalid_json");
    }
}

#[tokio::test]
async fn field_errors_are_422_and_name_the_field() {
    let cases = [
        (json!({"command": "echo"}), "missing_field", "image"),
        (json!({"image": "kiln/busybox"}), "missing_field", "command"),
        (
            json!({"image": 5, "command": "x"}),
            "invalid_field",
            "image",
        ),
        (
            json!({"image": "i", "command": "x", "limits": {"timeout_ms": "soon"}}),
            "invalid_field",
            "limits.timeout_ms",
        ),
        (
            json!({"image": "i", "command": "x", "limits": {"memory_mb": 1_000_000}}),
            "limit_exceeded",
            "limits.memory_mb",
        ),
        (
            json!({"image": "i", "command": "x", "files": [{"path": "../x", "content": ""}]}),
            "invalid_field",
            "files[0].path",
        ),
        (
            json!({"image": "i", "command": "x", "files": [{"path": "/etc/x", "content": ""}]}),
            "invalid_field",
            "files[0].path",
        ),
        (
            json!({"image": "i", "command": "x", "network": true}),
            "network_not_allowed",
            "network",
        ),
        (
            json!({"image": "has space", "command": "x"}),
            "invalid_field",
            "image",
        ),
    ];
    for (body, code, field) in cases {
        let (status, v) = post(body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (_, v) =
        post(json!({"image": "i", "command": "x", "limits": {"memory_mb": 1_000_000}}).to_string())
            .await;
    assert_eq!(
        v["error"]["maximum"],
        json!(kiln_api::Limits::MAXIMUM.memory_mb)
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let big = json!({"image": "i", "command": "x", "stdin": "a".repeat(10_000)}).to_string();
    let (status, v) = post(big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn engine_down_is_503_without_the_cause() {
    let (status, v) = post(json!({"image": "i", "command": "x"}).to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "docker_unavailable");
    assert!(!v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
}

#[tokio::test]
async fn full_server_is_503_with_retry_after() {
    let state = state(Stub::Stuck, 0);
    let body = json!({"image": "i", "command": "x"}).to_string();
    // The first run takes the only slot and never finishes; the queue holds nobody.
    let first = tokio::spawn(call(state.clone(), "POST", "/api/v1/execute", body.clone()));
    while state.executor().running() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, v, retry) = call(state, "POST", "/api/v1/execute", body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "at_capacity");
    assert_eq!(retry.as_deref(), Some("1"));
    first.abort();
}

#[tokio::test]
async fn queued_run_that_waits_too_long_is_503() {
    let state = state(Stub::Stuck, 4);
    let body = json!({"image": "i", "command": "x"}).to_string();
    let first = tokio::spawn(call(state.clone(), "POST", "/api/v1/execute", body.clone()));
    while state.executor().running() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, v, retry) = call(state, "POST", "/api/v1/execute", body).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("at_capacity"))
    );
    assert!(retry.is_some());
    first.abort();
}

#[tokio::test]
async fn health_ready_and_unknown_routes() {
    let (status, v, _) = call(state(Stub::Down, 0), "GET", "/health", Body::empty()).await;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, v, _) = call(state(Stub::Down, 0), "GET", "/ready", Body::empty()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["stub"]["ok"], false);
    assert_eq!(v["checks"]["kiln_init"]["ok"], false);
    let (status, v, _) = call(state(Stub::Down, 0), "GET", "/nope", Body::empty()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, v, _) = call(
        state(Stub::Down, 0),
        "GET",
        "/api/v1/execute",
        Body::empty(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}
