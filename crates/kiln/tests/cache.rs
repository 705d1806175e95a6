//! The result cache end to end: a real gateway, the real Docker engine, a real redb file and a
//! real Redis server (started by the test itself from Debian's `redis-server`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{test_config, unique_id, Gateway, BUSYBOX};
use kiln_cache::local_redis::LocalRedis;
use serde_json::{json, Value};

async fn delete(gw: &Gateway, query: &str) -> (u16, Value) {
    let res = gw
        .http
        .delete(format!("{}/api/v1/cache{query}", gw.url))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_from_each_tier_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let redis = LocalRedis::start().unwrap();
    let port = redis.port;
    let mut config = test_config("tiers");
    config.cache.l2_path = Some(dir.path().join("cache.redb"));
    config.cache.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
    config.cache.redis_timeout_ms = 200;
    let gw = Gateway::start_with(config).await;
    let body = json!({"image": BUSYBOX, "command": "echo $((6*7)); cat /proc/sys/kernel/random/uuid", "cache": "use"});

    let first = gw.run(body.clone()).await;
    assert_eq!(first["cache"]["tier"], Value::Null, "{first}");
    let key = first["cache"]["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    // Writes go to every tier in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tier_of = |v: &Value| v["cache"]["tier"].as_str().map(str::to_owned);
    let l1 = gw.run(body.clone()).await;
    assert_eq!(tier_of(&l1).as_deref(), Some("l1"), "{l1}");
    assert_eq!(
        l1["stdout"], first["stdout"],
        "the stored answer, not a new run (a new uuid each run)"
    );
    assert_eq!(l1["cache"]["key"], key.as_str());
    assert_eq!(l1["sandbox"], first["sandbox"]);

    assert_eq!(delete(&gw, "?tier=l1").await.0, 200);
    let l2 = gw.run(body.clone()).await;
    assert_eq!(tier_of(&l2).as_deref(), Some("l2"), "{l2}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        tier_of(&gw.run(body.clone()).await).as_deref(),
        Some("l1"),
        "promoted from L2"
    );

    delete(&gw, "?tier=l1").await;
    delete(&gw, "?tier=l2").await;
    let l3 = gw.run(body.clone()).await;
    assert_eq!(tier_of(&l3).as_deref(), Some("l3"), "{l3}");
    assert_eq!(l3["stdout"], first["stdout"]);

    // Purge: every tier; then the same request runs again.
    assert_eq!(
        delete(&gw, "").await,
        (200, json!({"purged": "all", "failed_tiers": []}))
    );
    let again = gw.run(body.clone()).await;
    assert_eq!(again["cache"]["tier"], Value::Null);
    assert_ne!(again["stdout"], first["stdout"]);

    let (_, metrics) = {
        let r = gw
            .http
            .get(format!("{}/metrics", gw.url))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    for needle in [
        "kiln_cache_hits_total{tier=\"l1\"} 2",
        "kiln_cache_hits_total{tier=\"l2\"} 1",
        "kiln_cache_hits_total{tier=\"l3\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    assert_eq!(delete(&gw, "?key=nothex").await.0, 422);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_and_what_is_stored() {
    let gw = Gateway::start("modes").await;
    // `off` (the default) neither reads nor writes.
    let off = gw
        .run(json!({"image": BUSYBOX, "command": "echo off"}))
        .await;
    assert_eq!(off["cache"], json!({"tier": null, "key": null}));

    // `refresh` writes but never reads.
    let body = |mode: &str| json!({"image": BUSYBOX, "command": "cat /proc/sys/kernel/random/uuid", "cache": mode});
    let r1 = gw.run(body("refresh")).await;
    let r2 = gw.run(body("refresh")).await;
    assert_ne!(r1["stdout"], r2["stdout"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let used = gw.run(body("use")).await;
    assert_eq!(
        (used["cache"]["tier"].as_str(), &used["stdout"]),
        (Some("l1"), &r2["stdout"])
    );

    // Only `ok` runs are stored: a timeout runs again every time.
    let slow = json!({"image": BUSYBOX, "command": "sleep 5", "limits": {"timeout_ms": 200}, "cache": "use"});
    for _ in 0..2 {
        let v = gw.run(slow.clone()).await;
        assert_eq!(
            (v["status"].as_str(), v["cache"]["tier"].as_str()),
            (Some("timeout"), None)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body =
        json!({"image": BUSYBOX, "command": "cat /proc/sys/kernel/random/uuid", "cache": "use"});
    let mut config = test_config("restart");
    config.cache.l2_path = Some(dir.path().join("cache.redb"));
    let gw = Gateway::start_with(config.clone()).await;
    let first = gw.run(body.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop().await;

    config.docker.gateway_id = unique_id("restart");
    let gw = Gateway::start_with(config).await;
    let again = gw.run(body).await;
    assert_eq!(
        (again["cache"]["tier"].as_str(), &again["stdout"]),
        (Some("l2"), &first["stdout"]),
        "{again}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retagged_image_misses() {
    let tag = format!("kiln/retag-{}:1", unique_id("t").replace('-', ""));
    docker(&["tag", BUSYBOX, &tag]);
    let mut config = test_config("retag");
    config.cache.image_id_ttl_ms = 100;
    let gw = Gateway::start_with(config).await;
    let body = json!({"image": tag, "command": "echo same", "cache": "use"});
    let first = gw.run(body.clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.run(body.clone()).await["cache"]["tier"], "l1");

    // The same tag now names another image: the key changes and the run happens again.
    docker(&["tag", common::PYTHON, &tag]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = gw.run(body).await;
    assert_eq!(after["cache"]["tier"], Value::Null, "{after}");
    assert_ne!(after["cache"]["key"], first["cache"]["key"]);
    docker(&["rmi", &tag]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_degrades_to_a_miss() {
    let redis = LocalRedis::start().unwrap();
    let port = redis.port;
    let mut config = test_config("redis-down");
    config.cache.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
    let gw = Gateway::start_with(config).await;
    let body = json!({"image": BUSYBOX, "command": "echo fine", "cache": "use"});
    // Without L3 the same request would be answered from L1, which is purged below.
    let first = gw.run(body.clone()).await;
    // Wait until L3 holds the answer, so that the miss below is Redis being down.
    let key = first["cache"]["key"].as_str().unwrap();
    let t0 = Instant::now();
    loop {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "EXISTS",
                &format!("kiln:result:{key}"),
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "1" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the answer never reached L3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(redis);
    delete(&gw, "?tier=l1").await;
    let t0 = Instant::now();
    let v = gw.run(body).await;
    assert_eq!(
        (v["stdout"].as_str(), v["cache"]["tier"].as_str()),
        (Some("fine\n"), None),
        "{v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let (status, body) = delete(&gw, "").await;
    assert_eq!((status, &body["failed_tiers"]), (200, &json!(["l3"])));
    gw.stop().await;
}
