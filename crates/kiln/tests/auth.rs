//! API keys, rate limits and quotas (issue 7), against a real gateway.

mod common;

use std::time::Duration;

use common::{test_config, Gateway, BUSYBOX};
use kiln::config::KeyEntry;
use kiln::http::hash_key;
use serde_json::{json, Value};

fn key(
    name: &str,
    secret: &str,
    rate: f64,
    burst: f64,
    concurrent: usize,
    admin: bool,
) -> KeyEntry {
    KeyEntry {
        name: name.into(),
        sha256: hash_key(secret),
        rate_per_sec: rate,
        burst,
        max_concurrent: concurrent,
        admin,
    }
}

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let url = format!("{}{path}", gw.url);
    let mut req = match method {
        "GET" => gw.http.get(url),
        "DELETE" => gw.http.delete(url),
        _ => gw.http.post(url),
    };
    if let Some((h, v)) = auth {
        req = req.header(h, v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let code = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (code, retry, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rates_and_quotas() {
    let mut config = test_config("auth");
    config.auth.keys = vec![
        key("user", "user-secret", 1.0, 3.0, 1, false),
        key("admin", "admin-secret", 100.0, 100.0, 8, true),
        key("solo", "solo-secret", 100.0, 100.0, 1, false),
    ];
    let gw = Gateway::start_with(config).await;
    let user = Some(("authorization", "Bearer user-secret"));
    let admin = Some(("x-auth-token", "admin-secret"));

    // Probes stay open; everything else wants a known key.
    assert_eq!(call(&gw, "GET", "/health", None, None).await.0, 200);
    let (code, _, v) = call(&gw, "GET", "/api/v1/runtimes", None, None).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (code, _, _) = call(
        &gw,
        "GET",
        "/api/v1/runtimes",
        Some(("authorization", "Bearer nope")),
        None,
    )
    .await;
    assert_eq!(code, 401);

    // A user key runs; it may not purge the cache, an admin key may.
    let (code, _, v) = call(
        &gw,
        "POST",
        "/api/v1/execute",
        user,
        Some(json!({"image": BUSYBOX, "command": "echo hi"})),
    )
    .await;
    assert_eq!((code, v["stdout"].as_str()), (200, Some("hi\n")), "{v}");
    let (code, _, v) = call(&gw, "DELETE", "/api/v1/cache", user, None).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    assert_eq!(
        call(&gw, "DELETE", "/api/v1/cache", admin, None).await.0,
        200
    );

    // Over the rate (burst 3, 1 per second): 429 with Retry-After.
    let mut limited = None;
    for _ in 0..4 {
        let (code, retry, v) = call(&gw, "GET", "/api/v1/runtimes", user, None).await;
        if code == 429 {
            limited = Some((retry, v));
            break;
        }
    }
    let (retry, v) = limited.expect("the burst runs out");
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    assert_eq!(retry.as_deref(), Some("1"));

    // Over the quota of requests in progress (1): 429 while one runs.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let slow = call(
        &gw,
        "POST",
        "/api/v1/execute",
        user,
        Some(json!({"image": BUSYBOX, "command": "sleep 1; echo done"})),
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        call(&gw, "GET", "/api/v1/runtimes", user, None).await
    };
    let ((code, _, v), (code2, retry2, v2)) = tokio::join!(slow, second);
    assert_eq!((code, v["stdout"].as_str()), (200, Some("done\n")), "{v}");
    assert_eq!(
        (code2, v2["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v2}"
    );
    assert!(retry2.is_some());

    // A run whose client went away still counts until it ends: a client cannot disconnect its
    // way past the quota.
    let solo = Some(("authorization", "Bearer solo-secret"));
    let abandoned = call(
        &gw,
        "POST",
        "/api/v1/execute",
        solo,
        Some(json!({"image": BUSYBOX, "command": "sleep 2"})),
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), abandoned).await;
    let (code, _, v) = call(&gw, "GET", "/api/v1/runtimes", solo, None).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, _, _) = call(&gw, "GET", "/api/v1/runtimes", solo, None).await;
    assert_eq!(code, 200, "the place is back once the run has ended");
    gw.stop().await;
}
