//! API keys: off until `[auth]` lists one. A key is sent as `Authorization: Bearer <key>` (or
//! `X-Auth-Token: <key>`, as Judge0 clients do), looked up by its SHA-256 (the configuration
//! holds only hashes), and held to its rate (a token bucket) and its quota of requests in
//! progress. `/health` and `/ready` stay open for probes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_api::ErrorBody;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One configured key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    pub name: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    /// Requests per second, sustained; `burst` at once.
    pub rate_per_sec: f64,
    pub burst: f64,
    /// Requests of this key in progress at once.
    pub max_concurrent: usize,
    /// May purge the cache.
    pub admin: bool,
}

/// The hex SHA-256 of `key`, as `[[auth.keys]] sha256` wants it (`kiln hash-key`).
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct Key {
    spec: KeySpec,
    bucket: Mutex<(f64, Instant)>,
    in_progress: Arc<Semaphore>,
}

/// The configured keys; empty means authentication is off.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: HashMap<String, Key>,
}

impl Keys {
    pub fn new(specs: &[KeySpec]) -> Keys {
        let by_hash = specs
            .iter()
            .map(|s| {
                (
                    s.sha256.to_ascii_lowercase(),
                    Key {
                        spec: s.clone(),
                        bucket: Mutex::new((s.burst, Instant::now())),
                        in_progress: Arc::new(Semaphore::new(s.max_concurrent.max(1))),
                    },
                )
            })
            .collect();
        Keys { by_hash }
    }

    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }
}

impl Key {
    /// Takes a token, or says how long until one is there.
    fn take(&self) -> Result<(), Duration> {
        let mut b = self.bucket.lock().expect("bucket lock");
        let now = Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * self.spec.rate_per_sec;
        b.0 = (b.0 + refill).min(self.spec.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - b.0) / self.spec.rate_per_sec.max(1e-9),
            ))
        }
    }
}

fn refuse(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let mut res = (status, Json(ErrorBody::new(code, message))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(after) = retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits"),
        );
    }
    res
}

fn presented(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim());
    }
    h.get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Routes only an admin key may use.
fn admin_only(req: &Request) -> bool {
    req.method() == Method::DELETE && req.uri().path().starts_with("/api/v1/cache")
}

/// The middleware.
pub(super) async fn check(State(keys): State<Arc<Keys>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !keys.enabled() || path == "/health" || path == "/ready" {
        return next.run(req).await;
    }
    let Some(given) = presented(&req) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key>",
            None,
        );
    };
    let Some(key) = keys.by_hash.get(&hash_key(given)) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API key is not known",
            None,
        );
    };
    if admin_only(&req) && !key.spec.admin {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key may not do that (it is not an admin key)",
            None,
        );
    }
    if let Err(wait) = key.take() {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "key {} is over its rate of {} requests per second",
                key.spec.name, key.spec.rate_per_sec
            ),
            Some(wait),
        );
    }
    let permit: OwnedSemaphorePermit = match key.in_progress.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                &format!(
                    "key {} has {} requests in progress, its quota",
                    key.spec.name, key.spec.max_concurrent
                ),
                Some(Duration::from_secs(1)),
            )
        }
    };
    // A request upgraded to a WebSocket keeps its place in the quota while its session lasts.
    let permit = Arc::new(permit);
    if let Some(holds) = req.extensions().get::<super::Holds>() {
        holds.add(permit.clone());
    }
    let res = next.run(req).await;
    drop(permit);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let keys = Keys::new(&[KeySpec {
            name: "k".into(),
            sha256: hash_key("secret"),
            rate_per_sec: 2.0,
            burst: 3.0,
            max_concurrent: 1,
            admin: false,
        }]);
        let key = &keys.by_hash[&hash_key("secret")];
        for _ in 0..3 {
            assert!(key.take().is_ok());
        }
        let wait = key.take().unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        std::thread::sleep(Duration::from_millis(550));
        assert!(key.take().is_ok(), "a token came back at 2 per second");
        assert_eq!(
            hash_key("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
