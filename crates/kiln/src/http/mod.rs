//! The gateway's HTTP surface: `fn app(state) -> Router`, its handlers and its error type.

mod auth;
mod batch;
mod error;
mod execute;
mod health;
pub mod judge0;
mod observe;
pub mod openapi;
mod piston;
mod stream;
mod ws;

pub(crate) use health::check_init;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use kiln_api::{Catalog, Policy};
use kiln_sandbox::Executor;

use crate::memory::Memory;
use crate::results::ResultCache;
use tracing::{info, info_span, Instrument};

pub use error::ApiError;
pub(crate) use ws::Holds;

/// The most requests a batch may carry unless the config says otherwise.
pub use auth::{hash_key, KeySpec};

pub const DEFAULT_MAX_BATCH: usize = 32;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    executor: Arc<Executor>,
    policy: Policy,
    max_body_bytes: usize,
    body_timeout: Duration,
    max_batch: usize,
    required_images: Vec<String>,
    init_path: PathBuf,
    results: Arc<ResultCache>,
    memory: Arc<Memory>,
    catalog: Arc<Catalog>,
    keys: Arc<auth::Keys>,
    judge0: Arc<judge0::Store>,
    /// Whether Judge0 submissions may name a `callback_url`.
    judge0_callbacks: bool,
    /// WebSocket sessions in progress, which a graceful stop waits for.
    sessions: tokio_util::task::TaskTracker,
}

impl AppState {
    pub fn new(
        executor: Arc<Executor>,
        policy: Policy,
        max_body_bytes: usize,
        required_images: Vec<String>,
        init_path: PathBuf,
        results: Arc<ResultCache>,
        memory: Arc<Memory>,
    ) -> Self {
        AppState {
            inner: Arc::new(Shared {
                executor,
                policy,
                max_body_bytes,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                max_batch: DEFAULT_MAX_BATCH,
                required_images,
                init_path,
                results,
                memory,
                catalog: Arc::new(Catalog::default()),
                keys: Arc::default(),
                judge0: Arc::new(judge0::Store::open(None)),
                judge0_callbacks: true,
                sessions: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    /// The API keys requests must carry (none: no authentication).
    pub fn with_keys(mut self, keys: &[KeySpec]) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the state is shared")
            .keys = Arc::new(auth::Keys::new(keys));
        self
    }

    /// Where Judge0 submissions are kept (`None`: in memory only).
    pub fn with_judge0_store(mut self, path: Option<&std::path::Path>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the state is shared")
            .judge0 = Arc::new(judge0::Store::open(path));
        self
    }

    /// Whether Judge0 submissions may name a `callback_url` (SSRF: the gateway makes the
    /// request, from inside the network it lives in).
    pub fn with_judge0_callbacks(mut self, allowed: bool) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the state is shared")
            .judge0_callbacks = allowed;
        self
    }

    /// The runtimes requests may name by `language`.
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the state is shared")
            .catalog = Arc::new(catalog);
        self
    }

    /// How long a request's body may take to arrive.
    pub fn with_body_timeout(mut self, within: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the state is shared")
            .body_timeout = within;
        self
    }

    /// The most requests one batch may carry.
    pub fn with_max_batch(mut self, max: usize) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the state is shared")
            .max_batch = max;
        self
    }

    pub fn memory(&self) -> &Arc<Memory> {
        &self.inner.memory
    }

    pub fn results(&self) -> &Arc<ResultCache> {
        &self.inner.results
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.inner.executor
    }

    /// WebSocket sessions in progress; the server waits for them when it stops.
    pub fn sessions(&self) -> &tokio_util::task::TaskTracker {
        &self.inner.sessions
    }
}

/// The gateway's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(observe::metrics))
        .route("/api/v1/pools", get(observe::pools))
        .route("/api/v1/execute/stream", post(stream::execute_stream))
        .route("/api/v1/execute/ws", get(stream::execute_ws))
        .route("/api/v1/runtimes", get(observe::runtimes))
        .route("/api/v1/openapi.json", get(openapi::document))
        // Piston v2, drop-in; clients add a trailing slash now and then.
        .route("/api/v2/runtimes", get(piston::runtimes))
        .route("/api/v2/runtimes/", get(piston::runtimes))
        .route("/api/v2/execute", post(piston::execute))
        .route("/api/v2/execute/", post(piston::execute))
        .route("/api/v2/connect", get(piston::connect))
        // Judge0 CE 1.13.1, drop-in, at the root as Judge0 serves it.
        .route("/submissions", post(judge0::create))
        .route("/submissions/", post(judge0::create))
        .route(
            "/submissions/batch",
            post(judge0::create_batch).get(judge0::show_batch),
        )
        .route("/submissions/{token}", get(judge0::show))
        .route("/languages", get(judge0::languages))
        .route("/languages/{id}", get(judge0::language))
        .route("/statuses", get(judge0::statuses))
        .route("/about", get(judge0::about))
        .route("/config_info", get(judge0::config_info))
        .route("/system_info", get(judge0::system_info))
        .route("/api/v1/system/memory", get(observe::memory))
        .route("/api/v1/execute", post(execute::execute))
        .route("/api/v1/execute/batch", post(batch::batch))
        .route("/api/v1/cache", axum::routing::delete(observe::purge_cache))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.inner.keys.clone(),
            auth::check,
        ))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// One span per request, carrying the method and the matched route; one line when it ends.
async fn trace_request(req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let span = info_span!("request", method = %req.method(), path = %path);
    let t0 = Instant::now();
    async move {
        let res = next.run(req).await;
        info!(
            status = res.status().as_u16(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "answered"
        );
        res
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests;
