//! The warm pool against the real Docker engine.

mod common;

use std::time::{Duration, Instant};

use common::{containers_of, pooled_config, Gateway, BUSYBOX};
use serde_json::{json, Value};

/// Waits until the pool named `busybox` has `n` ready sandboxes; returns the pools document.
async fn wait_ready(gw: &Gateway, n: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let (_, v) = gw.get("/api/v1/pools").await;
        if v["pools"][0]["ready"].as_u64().unwrap_or(0) >= n {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "pool never reached {n} ready: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pool_doc(gw: &Gateway) -> Value {
    gw.get("/api/v1/pools").await.1["pools"][0].clone()
}

/// Ids (12 characters) of the gateway's containers that are running.
fn running_ids(gateway_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=dev.kiln.gateway={gateway_id}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

const ECHO: fn() -> Value = || json!({"image": BUSYBOX, "command": "echo hello"});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_hit_and_ready_after_prewarm() {
    let gw = Gateway::start_with(pooled_config("warm", 2, 4)).await;
    wait_ready(&gw, 2).await;
    let (status, ready) = gw.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["pools"]["ok"], true);

    let v = gw.run(ECHO()).await;
    assert_eq!(v["sandbox"]["start"], "warm", "{v}");
    assert_eq!(v["stdout"], "hello\n");
    assert!(
        v["timings"]["sandbox_ms"].as_f64().unwrap() < 50.0,
        "a warm sandbox is handed out, not made: {v}"
    );
    let p = pool_doc(&gw).await;
    assert_eq!(p["hits"], 1);
    assert_eq!(p["misses"], 0);

    let (_, metrics) = {
        let res = gw
            .http
            .get(format!("{}/metrics", gw.url))
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    };
    for needle in [
        "kiln_pool_ready{pool=\"busybox\"}",
        "kiln_pool_target{pool=\"busybox\"}",
        "kiln_pool_max{pool=\"busybox\"} 4",
        "kiln_pool_hits_total{pool=\"busybox\"} 1",
        "kiln_run_duration_seconds_count{start=\"warm\"} 1",
        "kiln_sandbox_create_duration_seconds_count",
        "kiln_pool_removed_total{pool=\"busybox\",reason=\"dead\"} 0",
        "kiln_runs_total{status=\"ok\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_larger_than_the_pool_is_served_with_misses_counted() {
    let gw = Gateway::start_with(pooled_config("burst", 2, 2)).await;
    wait_ready(&gw, 2).await;
    let runs = (0..8).map(|i| {
        let gw = &gw;
        async move {
            gw.run(json!({"image": BUSYBOX, "command": format!("echo {i}")}))
                .await
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut starts = Vec::new();
    for (i, v) in results.iter().enumerate() {
        assert_eq!(v["stdout"], format!("{i}\n"));
        starts.push(v["sandbox"]["start"].as_str().unwrap().to_owned());
    }
    let warm = starts.iter().filter(|s| *s == "warm").count();
    let p = pool_doc(&gw).await;
    assert_eq!(p["hits"].as_u64().unwrap() as usize, warm, "{p}");
    assert_eq!(
        p["hits"].as_u64().unwrap() + p["misses"].as_u64().unwrap(),
        8,
        "{p}"
    );
    assert!(
        p["misses"].as_u64().unwrap() >= 6,
        "a pool of 2 cannot serve 8 at once: {p}"
    );
    let mut ids: Vec<_> = results
        .iter()
        .map(|v| v["sandbox"]["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "every run had a sandbox of its own");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_container_killed_from_outside_is_replaced_never_handed_out() {
    let gw = Gateway::start_with(pooled_config("killed", 1, 1)).await;
    wait_ready(&gw, 1).await;
    let victim = running_ids(&gw.gateway_id);
    assert_eq!(victim.len(), 1);
    let out = std::process::Command::new("docker")
        .args(["kill", &victim[0]])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Whether the health check or the hand-out notices first, the run gets a live sandbox.
    let v = gw.run(ECHO()).await;
    assert_eq!(v["stdout"], "hello\n", "{v}");
    assert!(
        !victim[0].starts_with(v["sandbox"]["id"].as_str().unwrap()),
        "the dead sandbox was handed out: {v}"
    );
    // The pool is back to its minimum with a new sandbox.
    let t0 = Instant::now();
    loop {
        let ids = running_ids(&gw.gateway_id);
        let p = pool_doc(&gw).await;
        if ids.len() == 1 && ids[0] != victim[0] && p["ready"] == 1 {
            // Whichever check saw it, the dead sandbox was counted as such.
            assert_eq!(p["removed"]["dead"], 1, "{p}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "pool not refilled: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_replaces_a_dead_sandbox_on_its_own() {
    let gw = Gateway::start_with(pooled_config("health", 1, 1)).await;
    wait_ready(&gw, 1).await;
    let victim = running_ids(&gw.gateway_id);
    std::process::Command::new("docker")
        .args(["kill", &victim[0]])
        .output()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let p = pool_doc(&gw).await;
        if p["removed"]["dead"] == 1 && p["ready"] == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "dead sandbox not replaced: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool_doc(&gw).await["hits"], 0, "nobody ran");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_recycles_pooled_sandboxes() {
    let mut config = pooled_config("age", 1, 1);
    config.pool.max_age_ms = 1500;
    let gw = Gateway::start_with(config).await;
    wait_ready(&gw, 1).await;
    let first = running_ids(&gw.gateway_id);
    let t0 = Instant::now();
    loop {
        let p = pool_doc(&gw).await;
        if p["removed"]["max_age"].as_u64().unwrap() >= 1 && p["ready"] == 1 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no recycling: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t0 = Instant::now();
    while running_ids(&gw.gateway_id).contains(&first[0]) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the old sandbox is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_runs_never_share_a_sandbox() {
    let gw = Gateway::start_with(pooled_config("share", 2, 2)).await;
    wait_ready(&gw, 2).await;
    let a = gw.run(json!({"image": BUSYBOX, "command": "echo one > /workspace/mark; echo one > /tmp/mark; ls /workspace"})).await;
    wait_ready(&gw, 2).await;
    let b = gw
        .run(json!({"image": BUSYBOX, "command": "ls -A /workspace /tmp"}))
        .await;
    assert_eq!(
        (
            a["sandbox"]["start"].as_str(),
            b["sandbox"]["start"].as_str()
        ),
        (Some("warm"), Some("warm"))
    );
    assert_eq!(a["stdout"], "mark\n");
    assert_eq!(b["stdout"], "/tmp:\n\n/workspace:\n", "{b}");
    assert_ne!(a["sandbox"]["id"], b["sandbox"]["id"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_every_pooled_sandbox() {
    let gw = Gateway::start_with(pooled_config("shutdown", 3, 3)).await;
    wait_ready(&gw, 3).await;
    let id = gw.gateway_id.clone();
    assert_eq!(containers_of(&id).len(), 3);
    gw.stop().await; // asserts that nothing is left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_pool_for_a_key_seen_at_run_time() {
    let mut config = common::test_config("ondemand");
    config.pool.enabled = true;
    config.pool.pools.clear();
    config.pool.on_demand = true;
    config.pool.shrink_after_ms = 300;
    let gw = Gateway::start_with(config).await;
    let body = json!({"image": BUSYBOX, "command": "echo hi", "limits": {"memory_mb": 200}});
    let first = gw.run(body.clone()).await;
    assert_eq!(first["sandbox"]["start"], "cold");
    // The arrival made a pool for this key; the forecast asks for at least one ready sandbox.
    let t0 = Instant::now();
    loop {
        let (_, v) = gw.get("/api/v1/pools").await;
        if v["pools"][0]["ready"].as_u64().unwrap_or(0) >= 1 {
            assert!(
                v["pools"][0]["name"].as_str().unwrap().contains("mem=200m"),
                "{v}"
            );
            assert_eq!(v["pools"][0]["configured"], false);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no on-demand pool: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = gw.run(body).await;
    assert_eq!(second["sandbox"]["start"], "warm", "{second}");
    // With no more arrivals the forecast falls to nothing and the pool shrinks back.
    let t0 = Instant::now();
    loop {
        let (_, v) = gw.get("/api/v1/pools").await;
        let p = &v["pools"][0];
        if p["ready"] == 0
            && p["creating"] == 0
            && p["removed"]["scale_down"].as_u64().unwrap_or(0) >= 1
        {
            assert_eq!(p["target"], 0, "{v}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "pool never shrank: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_run_in_flight_finish() {
    let gw = Gateway::start_with(pooled_config("graceful", 2, 2)).await;
    wait_ready(&gw, 2).await;
    let url = format!("{}/api/v1/execute", gw.url);
    let http = gw.http.clone();
    let in_flight = tokio::spawn(async move {
        let res = http
            .post(url)
            .body(json!({"image": BUSYBOX, "command": "sleep 1; echo finished"}).to_string())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    let t0 = Instant::now();
    while gw.running.state.executor().running() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Shutting down while the run is in flight: it still gets its answer, then nothing is left.
    gw.stop().await;
    let (status, v) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stdout"], "finished\n");
}
