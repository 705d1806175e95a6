//! The Docker engine restarted in the middle of a load (issue 6). Alone in its test binary:
//! it stops the engine that every other test uses, and cargo runs test binaries one by one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pooled_config, Gateway, BUSYBOX};
use serde_json::{json, Value};

const ENSURE_DOCKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/ensure-docker.sh"
);

fn dockerd_pid() -> i32 {
    std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd writes its pid")
        .trim()
        .parse()
        .unwrap()
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// How a request ended: `ok`, or the status and the error code.
fn outcome(code: u16, v: &Value) -> String {
    if code == 200 {
        v["status"].as_str().unwrap_or("?").to_owned()
    } else {
        format!("{code} {}", v["error"]["code"].as_str().unwrap_or("?"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_restart_under_load_ends_runs_clearly_and_recovers_alone() {
    // The gateway's warnings (a run that failed says why) go to the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
    let mut config = pooled_config("restart", 2, 2);
    config.server.max_concurrent = 4;
    let gw = Arc::new(Gateway::start_with(config).await);
    let ready = |gw: Arc<Gateway>| async move { gw.get("/ready").await.0 };
    let t0 = Instant::now();
    while ready(gw.clone()).await != 200 {
        assert!(t0.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Four clients, one run after another each, until told to stop; every answer recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop, seen) = (gw.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let body = json!({"image": BUSYBOX, "command": "sleep 0.3; echo x"});
                    let answer = tokio::time::timeout(Duration::from_secs(90), gw.post(body))
                        .await
                        .expect("every request is answered");
                    let o = outcome(answer.0, &answer.1);
                    seen.lock().unwrap().push((Instant::now(), o));
                    if answer.0 != 200 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Stop the engine (its containers stop with it).
    let pid = dockerd_pid();
    let down_at = Instant::now();
    // SAFETY: kill(2) with a pid read from dockerd's own pid file.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            down_at.elapsed() < Duration::from_secs(60),
            "dockerd did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While it is down: a new run is answered 503 at once, and the gateway is not ready.
    let t = Instant::now();
    let (code, v) = gw
        .post(json!({"image": BUSYBOX, "command": "echo x"}))
        .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (503, Some("docker_unavailable")),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(v["error"]["message"].as_str().is_some());
    assert_eq!(ready(gw.clone()).await, 503);

    // Start it again; the gateway recovers by itself: ready, with its pool full again.
    let out = std::process::Command::new("bash")
        .arg(ENSURE_DOCKER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up_at = Instant::now();
    while ready(gw.clone()).await != 200 {
        assert!(
            up_at.elapsed() < Duration::from_secs(60),
            "the gateway never got ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = up_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "echo again"}))
        .await;
    assert_eq!(v["stdout"], "again\n", "{v}");

    let seen = seen.lock().unwrap().clone();
    let mut counts = BTreeMap::<&str, usize>::new();
    for (_, o) in &seen {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    eprintln!("outcomes: {counts:?}; ready again {recovered:?} after the engine came back");
    let allowed = [
        "ok",
        "503 docker_unavailable",
        "503 sandbox_lost",
        "503 at_capacity",
    ];
    for (o, n) in &counts {
        assert!(
            allowed.contains(o),
            "{n} × {o}: not a clear answer ({counts:?})"
        );
    }
    let before = seen
        .iter()
        .filter(|(t, o)| *t < down_at && o == "ok")
        .count();
    let after = seen.iter().filter(|(t, o)| *t > up_at && o == "ok").count();
    assert!(
        before > 0 && after > 0,
        "runs served before and after: {counts:?}"
    );
    let gw = Arc::into_inner(gw).expect("clients done");
    gw.stop().await;
}
