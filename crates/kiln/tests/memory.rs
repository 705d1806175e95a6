//! KSM end to end: sandboxes holding the same memory share it only when kiln-init marks them
//! mergeable. The host's KSM daemon is global, so both halves live in one test, and each
//! gateway puts the host's settings back when it stops.

mod common;

use std::time::{Duration, Instant};

use common::{test_config, Gateway, PYTHON};
use kiln::config::{HostPolicy, Switch};
use serde_json::json;

/// Six sandboxes each holding the same 24 MiB for a few seconds; the highest `pages_sharing`
/// seen meanwhile.
async fn sharing_with(ksm: Switch) -> u64 {
    let mut config = test_config("ksm");
    config.memory.ksm = ksm;
    config.memory.ksm_host = HostPolicy::Manage;
    config.memory.ksm_pages_to_scan = 4000;
    config.memory.ksm_sleep_ms = 10;
    let gw = Gateway::start_with(config).await;
    let (_, mem) = gw.get("/api/v1/system/memory").await;
    assert_eq!(mem["ksm"]["host_managed"], true, "{mem}");
    assert_eq!(mem["ksm"]["run"], 1);
    let hold = "x = bytearray(b'kiln' * (6 << 20)); import time; time.sleep(7); print(len(x))";
    let runs = (0..6).map(|_| gw.run(json!({"image": PYTHON, "argv": ["python3", "-c", hold], "limits": {"timeout_ms": 30000}})));
    let watch = async {
        let t0 = Instant::now();
        let mut most = 0;
        while t0.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (_, mem) = gw.get("/api/v1/system/memory").await;
            most = most.max(mem["ksm"]["pages_sharing"].as_u64().unwrap());
        }
        most
    };
    let (results, most) = tokio::join!(futures_util::future::join_all(runs), watch);
    for v in results {
        assert_eq!(v["stdout"], "25165824\n", "{v}");
    }
    gw.stop().await;
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_memory_is_shared_only_when_runs_are_mergeable() {
    let before = std::fs::read_to_string("/sys/kernel/mm/ksm/run").expect("this kernel has KSM");
    let off = sharing_with(Switch::Off).await;
    let on = sharing_with(Switch::On).await;
    eprintln!("pages_sharing seen: {off} without the mark, {on} with it");
    // 6 × 24 MiB = 36,864 pages of which all but one copy could be shared.
    assert!(on > 10_000, "with KSM on, pages_sharing reached only {on}");
    assert!(
        off < on / 10,
        "without the mark nothing should merge: {off} against {on}"
    );
    assert_eq!(
        std::fs::read_to_string("/sys/kernel/mm/ksm/run").unwrap(),
        before,
        "the host's setting is back"
    );
}
