//! Load at ten times the pool (issue 6): every request is answered — a result, or 503 with
//! `Retry-After` — none hangs, the gateway's memory stays bounded, nothing leaks.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{pooled_config, Gateway, BUSYBOX};
use serde_json::{json, Value};

fn rss_mib() -> f64 {
    kiln_sandbox::memory::proc_kib("/proc/self/status", "VmRSS:").expect("VmRSS") as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_pool_is_answered_with_explicit_back_pressure() {
    let pool = 2;
    let clients = 10 * pool;
    let per_client = 8;
    let mut config = pooled_config("load", pool, pool);
    config.server.max_concurrent = 4;
    config.server.queue_size = 6;
    config.server.queue_timeout_ms = 2000;
    let gw = Gateway::start_with(config).await;
    let rss_before = rss_mib();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = gw.http.clone();
            let url = format!("{}/api/v1/execute", gw.url);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..per_client {
                    let body = json!({"image": BUSYBOX, "command": format!("echo {c}-{i}")});
                    let t = Instant::now();
                    let res = tokio::time::timeout(
                        Duration::from_secs(60),
                        http.post(&url).json(&body).send(),
                    )
                    .await
                    .expect("no request hangs")
                    .expect("every request is answered");
                    let code = res.status().as_u16();
                    let retry_after = res.headers().get("retry-after").cloned();
                    let v: Value = res.json().await.unwrap();
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    match code {
                        200 => assert_eq!(v["stdout"], format!("{c}-{i}\n"), "{v}"),
                        503 => {
                            assert_eq!(v["error"]["code"], "at_capacity", "{v}");
                            assert!(retry_after.is_some(), "503 without Retry-After");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => panic!("{code}: {v}"),
                    }
                    out.push((code, ms));
                }
                out
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let took = t0.elapsed();
    let rss_after = rss_mib();
    let mut counts = BTreeMap::<u16, usize>::new();
    for (code, _) in &answers {
        *counts.entry(*code).or_default() += 1;
    }
    let mut ok_ms: Vec<f64> = answers.iter().filter(|a| a.0 == 200).map(|a| a.1).collect();
    ok_ms.sort_by(f64::total_cmp);
    let p = |q: f64| ok_ms[((q * ok_ms.len() as f64).ceil() as usize).clamp(1, ok_ms.len()) - 1];
    eprintln!(
        "{} requests from {clients} clients in {took:?}: {counts:?}; ok p50 {:.0} ms, p99 {:.0} ms; test process RSS {rss_before:.0} → {rss_after:.0} MiB",
        answers.len(),
        p(0.5),
        p(0.99)
    );
    assert_eq!(
        answers.len(),
        clients * per_client,
        "every request answered"
    );
    assert!(
        counts.get(&200).copied().unwrap_or(0) >= clients,
        "{counts:?}"
    );
    assert!(
        rss_after - rss_before < 200.0,
        "the gateway's memory grew by {:.0} MiB",
        rss_after - rss_before
    );
    // Nothing queued or running is left, and the pool is back to its size.
    let (_, m) = gw.get("/api/v1/pools").await;
    eprintln!("pools after the load: {m}");
    gw.stop().await;
}
