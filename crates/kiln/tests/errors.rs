//! Every error code of the API, against the real engine, and nothing leaked on any of them.

mod common;

use std::time::{Duration, Instant};

use common::{assert_no_containers, test_config, Gateway, BUSYBOX};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_have_stable_codes() {
    let mut config = test_config("errors");
    config.server.max_body_bytes = 64 * 1024;
    let gw = Gateway::start_with(config).await;

    let (s, v, _) = gw.post_raw("{\"image\": ").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let (s, v) = gw.post(json!({"image": BUSYBOX})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (422, Some("missing_field"), Some("command"))
    );

    let (s, v) = gw
        .post(json!({"image": BUSYBOX, "command": "true", "limits": {"timeout_ms": 999_999_999}}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("limit_exceeded"))
    );
    assert_eq!(v["error"]["field"], "limits.timeout_ms");
    assert_eq!(v["error"]["maximum"], 300_000);

    for path in ["../escape", "/etc/passwd", "a/../../b", "ok/\u{0}"] {
        let (s, v) = gw.post(json!({"image": BUSYBOX, "command": "true", "files": [{"path": path, "content": "x"}]})).await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (422, Some("files[0].path")),
            "{path:?}: {v}"
        );
    }

    let big =
        json!({"image": BUSYBOX, "command": "true", "stdin": "x".repeat(100 * 1024)}).to_string();
    let (s, v, _) = gw.post_raw(big).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // No registry is reachable here: an unknown image answers 404 with the pull error, quickly.
    let t0 = Instant::now();
    let (s, v) = gw
        .post(json!({"image": "kiln/does-not-exist:1", "command": "true"}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("image_not_found")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("kiln/does-not-exist:1"));
    assert!(t0.elapsed() < Duration::from_secs(90));

    let (s, v) = gw
        .post(json!({"image": "UPPER/Case", "command": "true"}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (422, Some("invalid_field"), Some("image")),
        "{v}"
    );

    assert_no_containers(&gw.gateway_id, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unreachable_is_503_and_not_ready() {
    let mut config = test_config("nodocker");
    config.docker.host = "unix:///nonexistent/docker.sock".into();
    let gw = Gateway::start_with(config).await;
    let (s, v) = gw.post(json!({"image": BUSYBOX, "command": "true"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("docker_unavailable")),
        "{v}"
    );
    let (s, v) = gw.get("/ready").await;
    assert_eq!(s, 503);
    assert_eq!(v["checks"]["docker"]["ok"], false, "{v}");
    let (s, _) = gw.get("/health").await;
    assert_eq!(s, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_is_503_with_retry_after() {
    let mut config = test_config("capacity");
    config.server.max_concurrent = 1;
    config.server.queue_size = 0;
    let gw = Gateway::start_with(config).await;
    let url = format!("{}/api/v1/execute", gw.url);
    let http = gw.http.clone();
    let busy = tokio::spawn(async move {
        http.post(url)
            .body(json!({"image": BUSYBOX, "command": "sleep 3"}).to_string())
            .send()
            .await
    });
    // Wait until the slow run holds the only slot.
    let t0 = Instant::now();
    while gw.running.state.executor().running() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "slow run never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v, headers) = gw
        .post_raw(json!({"image": BUSYBOX, "command": "true"}).to_string())
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("at_capacity")),
        "{v}"
    );
    assert!(headers.get("retry-after").is_some());
    let first = busy.await.unwrap().unwrap();
    assert_eq!(first.status().as_u16(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_init_is_500_without_leaking_the_cause() {
    let mut config = test_config("broken-init");
    // A dynamically linked binary cannot start in a busybox image: no exit frame ever comes.
    config.docker.init_path = Some("/usr/bin/env".into());
    let gw = Gateway::start_with(config).await;
    let (s, v) = gw.post(json!({"image": BUSYBOX, "command": "true"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (500, Some("internal")),
        "{v}"
    );
    assert!(!v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exit frame"));
    let (s, v) = gw.get("/ready").await;
    assert_eq!(s, 503);
    assert_eq!(v["checks"]["kiln_init"]["ok"], false);
    assert_no_containers(&gw.gateway_id, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_still_removes_the_sandbox() {
    let gw = Gateway::start("disconnect").await;
    let req = gw
        .http
        .post(format!("{}/api/v1/execute", gw.url))
        .body(
            json!({"image": BUSYBOX, "command": "sleep 2", "limits": {"timeout_ms": 5000}})
                .to_string(),
        )
        .send();
    // Give up on the request while the run is in progress.
    let _ = tokio::time::timeout(Duration::from_millis(700), req).await;
    assert_no_containers(&gw.gateway_id, Duration::from_secs(15)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_crashed_gateway_are_removed_at_start() {
    let config = test_config("orphans");
    let id = config.docker.gateway_id.clone();
    let out = std::process::Command::new("docker")
        .args([
            "create",
            "--label",
            "dev.kiln.managed=true",
            "--label",
            &format!("dev.kiln.gateway={id}"),
            BUSYBOX,
            "sleep",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(common::containers_of(&id).len(), 1);
    let gw = Gateway::start_with(config).await;
    assert!(common::containers_of(&id).is_empty());
    gw.stop().await;
}
