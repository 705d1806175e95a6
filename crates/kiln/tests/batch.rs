//! `POST /api/v1/execute/batch` against the real Docker engine.

mod common;

use common::{test_config, Gateway, BUSYBOX};
use serde_json::{json, Value};

async fn batch(gw: &Gateway, body: &Value) -> (u16, Value) {
    let res = gw
        .http
        .post(format!("{}/api/v1/execute/batch", gw.url))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_answer_in_order_and_a_bad_one_fails_alone() {
    let gw = Gateway::start("batch").await;
    let (status, v) = batch(
        &gw,
        &json!({"requests": [
            {"image": BUSYBOX, "command": "sleep 0.3; echo first"},
            {"image": BUSYBOX},
            {"image": BUSYBOX, "command": "echo third; exit 3"},
            {"image": "kiln/no-such-image:1", "command": "true"},
            {"image": BUSYBOX, "argv": ["echo", "fifth"], "limits": {"memory_mb": 999999}},
            {"image": BUSYBOX, "command": "echo sixth", "bogus": 1}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert_eq!(
        r[0]["stdout"], "first\n",
        "order kept although the first item is the slowest"
    );
    assert_eq!(
        (
            r[1]["error"]["code"].as_str(),
            r[1]["error"]["field"].as_str()
        ),
        (Some("missing_field"), Some("requests[1].command"))
    );
    assert_eq!(
        (r[2]["stdout"].as_str(), r[2]["exit_code"].as_i64()),
        (Some("third\n"), Some(3))
    );
    assert_eq!(r[3]["error"]["code"], "image_not_found");
    assert_eq!(
        (
            r[4]["error"]["code"].as_str(),
            r[4]["error"]["field"].as_str()
        ),
        (Some("limit_exceeded"), Some("requests[4].limits.memory_mb"))
    );
    assert_eq!(r[5]["error"]["code"], "invalid_field", "{}", r[5]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_itself_is_checked() {
    let mut config = test_config("batch-limits");
    config.server.max_batch = 2;
    let gw = Gateway::start_with(config).await;
    let item = json!({"image": BUSYBOX, "command": "true"});
    let (status, v) = batch(&gw, &json!({"requests": [item, item, item]})).await;
    assert_eq!(
        (
            status,
            v["error"]["code"].as_str(),
            v["error"]["maximum"].as_u64()
        ),
        (422, Some("limit_exceeded"), Some(2))
    );
    let (status, v) = batch(&gw, &json!([item])).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("requests"))
    );
    let res = gw
        .http
        .post(format!("{}/api/v1/execute/batch", gw.url))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let (status, v) = batch(&gw, &json!({"requests": []})).await;
    assert_eq!((status, v), (200, json!({"results": []})));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_with_the_same_key_run_once_when_caching() {
    let gw = Gateway::start("batch-dedupe").await;
    let cached =
        json!({"image": BUSYBOX, "command": "cat /proc/sys/kernel/random/uuid", "cache": "use"});
    let uncached = json!({"image": BUSYBOX, "command": "cat /proc/sys/kernel/random/uuid"});
    let (status, v) = batch(
        &gw,
        &json!({"requests": [cached, uncached, cached, cached]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["stdout"], r[2]["stdout"]);
    assert_eq!(r[0]["stdout"], r[3]["stdout"]);
    assert_eq!(
        r[0]["sandbox"]["id"], r[3]["sandbox"]["id"],
        "one run served all three"
    );
    assert_ne!(r[0]["stdout"], r[1]["stdout"], "caching off: its own run");
    let metrics = gw
        .http
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kiln_runs_total{status=\"ok\"} 2\n"),
        "two runs for four items:\n{metrics}"
    );
    gw.stop().await;
}
