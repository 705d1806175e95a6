//! Memory density end to end. KSM: sandboxes holding the same memory share it only when
//! kiln-init marks them mergeable (the host's KSM daemon is global, so both halves live in one
//! test). THP: the host's policy and the sandboxes' choice. zram: idle pooled sandboxes paged
//! out, job limits unchanged. Each gateway puts the host's settings back when it stops.

mod common;

use std::time::{Duration, Instant};

use common::{test_config, Gateway, BUSYBOX, PYTHON};
use kiln::config::{HostPolicy, SandboxThp, Switch, ThpHost};
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

fn thp_policy() -> String {
    let list = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .expect("this kernel has THP");
    list.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .expect("a selected policy")
        .to_owned()
}

/// The host's policy is set while the gateway runs and put back when it stops; inside the
/// sandboxes huge pages follow `sandbox_thp`, and a pool's own choice wins for its image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thp_policy_is_applied_and_restored_and_sandboxes_follow_their_choice() {
    let before = thp_policy();
    // Should an assertion fail with the gateway still up, the host gets its policy back.
    struct PutBack(String);
    impl Drop for PutBack {
        fn drop(&mut self) {
            let _ = std::fs::write("/sys/kernel/mm/transparent_hugepage/enabled", &self.0);
        }
    }
    let _put_back = PutBack(before.clone());
    let wanted = if before == "never" { "always" } else { "never" };
    let mut config = test_config("thp");
    config.memory.thp = if wanted == "never" {
        ThpHost::Never
    } else {
        ThpHost::Always
    };
    config.memory.sandbox_thp = SandboxThp::Disable;
    let mut python = common::pooled_config("unused", 0, 1).pool.pools.remove(0);
    python.image = PYTHON.into();
    python.thp = Some(SandboxThp::Allow);
    config.pool.pools = vec![python];
    let gw = Gateway::start_with(config).await;
    assert_eq!(thp_policy(), wanted, "set while the gateway runs");
    let (_, mem) = gw.get("/api/v1/system/memory").await;
    assert_eq!(mem["thp"]["enabled"], wanted, "{mem}");
    assert_eq!(mem["thp"]["host_managed"], true, "{mem}");
    assert_eq!(mem["thp"]["sandboxes"], "disable");

    let thp_enabled = |image: &str| {
        gw.run(json!({"image": image, "argv": ["grep", "THP_enabled", "/proc/self/status"]}))
    };
    let busybox = thp_enabled(BUSYBOX).await;
    assert_eq!(busybox["stdout"], "THP_enabled:\t0\n", "{busybox}");
    let python = thp_enabled(PYTHON).await;
    assert_eq!(python["stdout"], "THP_enabled:\t1\n", "{python}");
    gw.stop().await;
    assert_eq!(thp_policy(), before, "the host's policy is back");
}

fn swaps() -> String {
    std::fs::read_to_string("/proc/swaps").unwrap()
}

/// zram: a swap device made at start, idle pooled sandboxes (and their shims) paged out into
/// it, warm runs unaffected, a job's memory limit unchanged (its `oom` fires as without swap),
/// and the device gone after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zram_takes_idle_sandboxes_and_leaves_job_limits_alone() {
    let mut config = common::pooled_config("zram", 2, 2);
    config.pool.pools[0].image = PYTHON.into();
    config.memory.zram = Switch::On;
    config.memory.zram_size_mb = 256;
    config.memory.page_out_after_ms = 300;
    let gw = Gateway::start_with(config).await;
    let (_, mem) = gw.get("/api/v1/system/memory").await;
    let device = mem["zram"]["device"]
        .as_str()
        .unwrap_or_else(|| panic!("{mem}"))
        .to_owned();
    assert_eq!(mem["zram"]["made_here"], true, "{mem}");
    assert_eq!(mem["zram"]["algorithm"], "lz4");
    assert_eq!(mem["zram"]["disksize_bytes"], 256u64 << 20);
    assert!(swaps().contains(&device), "{device} is swap: {}", swaps());

    // Both pooled sandboxes paged out: their processes' memory sits in zram.
    let t0 = Instant::now();
    let mem = loop {
        let (_, mem) = gw.get("/api/v1/system/memory").await;
        if mem["zram"]["sandboxes_paged_out"].as_u64() >= Some(2)
            && mem["idle_pooled_sandbox"]["count"] == 2
            && mem["idle_pooled_sandbox"]["swapped_bytes"].as_u64() > Some(256 << 10)
        {
            break mem;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never paged out: {mem}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("after page-out: {}", mem["idle_pooled_sandbox"]);
    assert!(mem["zram"]["orig_data_bytes"].as_u64() > Some(0), "{mem}");
    assert_eq!(mem["zram"]["page_out_errors"], 0, "{mem}");

    // A paged-out sandbox serves its run as any other.
    let v = gw
        .run(json!({"image": PYTHON, "argv": ["python3", "-c", "print(6 * 7)"]}))
        .await;
    assert_eq!(
        (v["stdout"].as_str(), v["sandbox"]["start"].as_str()),
        (Some("42\n"), Some("warm")),
        "{v}"
    );

    // 200 MiB of compressible pages under a 64 MiB limit: swap must not let it through.
    let grow = "b = [bytearray(b'x' * (1 << 20)) for _ in range(200)]; print('survived')";
    let v = gw
        .run(json!({"image": PYTHON, "argv": ["python3", "-c", grow], "limits": {"memory_mb": 64}}))
        .await;
    assert_eq!(v["status"], "oom", "{v}");
    assert!(
        v["usage"]["memory_peak_bytes"].as_u64() <= Some(64 << 20),
        "{v}"
    );
    let fits = "b = [bytearray(b'x' * (1 << 20)) for _ in range(30)]; print('fits')";
    let v = gw
        .run(json!({"image": PYTHON, "argv": ["python3", "-c", fits], "limits": {"memory_mb": 64}}))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["stdout"].as_str()),
        (Some("ok"), Some("fits\n")),
        "{v}"
    );

    gw.stop().await;
    assert!(
        !swaps().contains(&device),
        "{device} still swap: {}",
        swaps()
    );
    let index = device.trim_start_matches("/dev/zram");
    assert!(
        !std::path::Path::new(&format!("/sys/block/zram{index}")).exists(),
        "zram{index} removed"
    );
}
