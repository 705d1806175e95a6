//! The execution path end to end: a real gateway, the real Docker engine, real kiln-init.

mod common;

use std::time::{Duration, Instant};

use common::{assert_no_containers, Gateway, BUSYBOX, PYTHON};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_request_works_unchanged_and_leaves_nothing() {
    let gw = Gateway::start("seed").await;
    let v = gw
        .run(json!({"command": "echo hello", "image": BUSYBOX}))
        .await;
    assert_eq!(v["stdout"], "hello\n");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["signal"], json!(null));
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    for t in ["queue_ms", "sandbox_ms", "run_ms"] {
        assert!(v["timings"][t].as_f64().is_some(), "timings.{t} in {v}");
    }
    assert!(v["timings"]["sandbox_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["sandbox"]["start"], "cold");
    assert_eq!(v["sandbox"]["id"].as_str().unwrap().len(), 12);
    assert_eq!(v["truncated"], json!({"stdout": false, "stderr": false}));
    assert!(v["usage"]["memory_peak_bytes"].as_u64().unwrap() > 0);
    // The sandbox is removed in the background while the gateway keeps running.
    assert_no_containers(&gw.gateway_id, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_stdin_env_files_and_exit_code() {
    let gw = Gateway::start("inputs").await;
    let v = gw
        .run(json!({
            "image": BUSYBOX,
            "argv": ["sh", "-c", "cat; echo \"$GREETING\"; cat src/a.txt; stat -c %a src/run.sh; ./src/run.sh; pwd; exit 7", "ignored-arg0"],
            "stdin": "from stdin\n",
            "env": {"GREETING": "hi there"},
            "files": [
                {"path": "src/a.txt", "content": "plain\n"},
                {"path": "src/run.sh", "content": "IyEvYmluL3NoCmVjaG8gZnJvbSBzY3JpcHQK", "encoding": "base64", "mode": "0755"}
            ]
        }))
        .await;
    assert_eq!(
        v["stdout"],
        "from stdin\nhi there\nplain\n755\nfrom script\n/workspace\n"
    );
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["status"], "ok");

    // An exact argv is not word-split or expanded by a shell.
    let v = gw
        .run(json!({"image": BUSYBOX, "argv": ["echo", "$HOME", "a  b"]}))
        .await;
    assert_eq!(v["stdout"], "$HOME a  b\n");

    // A custom working directory is a fresh, writable tmpfs too.
    let v = gw
        .run(json!({"image": PYTHON, "workdir": "/home/runner", "files": [{"path": "m.py", "content": "import os; print(os.getcwd())"}], "argv": ["python3", "m.py"]}))
        .await;
    assert_eq!(v["stdout"], "/home/runner\n");

    // A program that does not exist is the program's failure (127), not the server's.
    let v = gw
        .run(json!({"image": BUSYBOX, "argv": ["no-such-program"]}))
        .await;
    assert_eq!(v["exit_code"], 127);
    assert!(
        v["stderr"].as_str().unwrap().contains("no-such-program"),
        "{v}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_run_within_about_a_second() {
    let gw = Gateway::start("timeout").await;
    let t0 = Instant::now();
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "echo started; sleep 60", "limits": {"timeout_ms": 500}}))
        .await;
    let took = t0.elapsed();
    assert_eq!(v["status"], "timeout");
    assert_eq!(v["exit_code"], json!(null));
    assert_eq!(v["signal"], "SIGKILL");
    assert_eq!(v["stdout"], "started\n");
    // Bounded, not a benchmark: the point is that the 60 s sleep did not run out.
    assert!(
        took < Duration::from_secs(10),
        "timeout answered after {took:?}"
    );
    let run_ms = v["timings"]["run_ms"].as_f64().unwrap();
    // "Within about a second": kiln-init kills at 500 ms; the rest is reporting.
    assert!((450.0..1500.0).contains(&run_ms), "run_ms {run_ms}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_ends_as_oom() {
    let gw = Gateway::start("oom").await;
    let v = gw
        .run(json!({
            "image": PYTHON,
            "argv": ["python3", "-c", "x = bytearray(400 * 1024 * 1024); print('survived')"],
            "limits": {"memory_mb": 64}
        }))
        .await;
    assert_eq!(v["status"], "oom", "{v}");
    assert_eq!(v["stdout"], "");
    assert_eq!(v["exit_code"], json!(null));
    assert_eq!(v["signal"], "SIGKILL");
    // The same program fits in a larger limit.
    let v = gw
        .run(json!({
            "image": PYTHON,
            "argv": ["python3", "-c", "x = bytearray(16 * 1024 * 1024); print('survived')"],
            "limits": {"memory_mb": 128}
        }))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["stdout"].as_str()),
        (Some("ok"), Some("survived\n")),
        "{v}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_is_truncated_and_killed() {
    let gw = Gateway::start("flood").await;
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "yes kiln", "limits": {"output_bytes": 10000, "timeout_ms": 20000}}))
        .await;
    assert_eq!(v["status"], "output_limit");
    assert_eq!(v["stdout"].as_str().unwrap().len(), 10000);
    assert!(v["stdout"].as_str().unwrap().starts_with("kiln\nkiln\n"));
    assert_eq!(v["truncated"]["stdout"], true);
    assert_eq!(v["exit_code"], json!(null));

    // Both streams count together, also without newlines.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "while :; do printf xxxxxxxx; printf yyyyyyyy >&2; done", "limits": {"output_bytes": 5000}}))
        .await;
    assert_eq!(v["status"], "output_limit");
    let total = v["stdout"].as_str().unwrap().len() + v["stderr"].as_str().unwrap().len();
    assert_eq!(total, 5000, "{v}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_returned_safely_and_flagged() {
    let gw = Gateway::start("utf8").await;
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "printf 'ok\\377\\376'; printf 'fine' >&2"}))
        .await;
    assert_eq!(v["stdout"], "ok\u{fffd}\u{fffd}");
    assert_eq!(v["stdout_base64"], "b2v//g==");
    assert_eq!(v["invalid_utf8"], json!({"stdout": true, "stderr": false}));
    assert_eq!(v["stderr"], "fine");
    assert!(v.get("stderr_base64").is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_is_locked_down() {
    let gw = Gateway::start("lockdown").await;
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "id -u; id -g; ls /sys/class/net; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; touch /etc/kiln 2>&1; touch /bin/kiln 2>&1; echo ok > /workspace/w && echo ok > /tmp/t && echo writable"}))
        .await;
    let out = v["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..3],
        ["65534", "65534", "lo"],
        "non-root, and the only network device is loopback: {out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(out.ends_with("writable\n"), "{out}");

    // Limits reach the container: pids, memory (no swap), tmpfs size.
    let v = gw
        .run(json!({"image": BUSYBOX, "limits": {"pids": 16, "memory_mb": 96, "tmp_mb": 2},
            "command": "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null; df -k /tmp | tail -1; dd if=/dev/zero of=/tmp/big bs=1M count=4 2>&1 | grep -o 'No space left on device' | head -1"}))
        .await;
    let out = v["stdout"].as_str().unwrap();
    // memory.memsw equal to memory: no swap.
    assert!(out.starts_with("16\n100663296\n100663296\n"), "{out}");
    assert!(out.contains(" 2048 "), "tmpfs of 2 MiB: {out}");
    assert!(out.contains("No space left on device"), "{out}");

    // Seccomp stays on (Docker's default profile): mode 2 is "filter".
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "grep Seccomp: /proc/self/status"}))
        .await;
    assert_eq!(v["stdout"], "Seccomp:\t2\n");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_never_see_each_other() {
    let gw = Gateway::start("fresh").await;
    let a = gw.run(json!({"image": BUSYBOX, "command": "echo secret > /workspace/left; echo secret > /tmp/left; ls /workspace"})).await;
    assert_eq!(a["stdout"], "left\n");
    let b = gw
        .run(json!({"image": BUSYBOX, "command": "ls -A /workspace /tmp"}))
        .await;
    assert_eq!(b["stdout"], "/tmp:\n\n/workspace:\n", "{b}");
    assert_ne!(a["sandbox"]["id"], b["sandbox"]["id"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_children_die_with_the_run() {
    let gw = Gateway::start("bg").await;
    let t0 = Instant::now();
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "sleep 30 & echo parent done"}))
        .await;
    assert_eq!(v["stdout"], "parent done\n");
    assert_eq!(v["status"], "ok");
    assert!(t0.elapsed() < Duration::from_secs(10));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_only_where_the_server_allows_it() {
    let mut config = common::test_config("network");
    config.network.allow = true;
    let gw = Gateway::start_with(config).await;
    // Only the devices are listed: nothing is sent anywhere.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "ls /sys/class/net", "network": true}))
        .await;
    assert!(v["stdout"].as_str().unwrap().contains("eth0"), "{v}");
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "ls /sys/class/net"}))
        .await;
    assert_eq!(v["stdout"], "lo\n", "no network unless asked for");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_channel_works_like_the_socket() {
    let mut config = common::test_config("attach");
    config.docker.channel = kiln::config::ChannelKind::Attach;
    let gw = Gateway::start_with(config).await;
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "cat; echo err >&2; exit 3", "stdin": "in\n"}))
        .await;
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["stderr"].as_str(),
            v["exit_code"].as_i64()
        ),
        (Some("in\n"), Some("err\n"), Some(3)),
        "{v}"
    );
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "sleep 30", "limits": {"timeout_ms": 300}}))
        .await;
    assert_eq!(v["status"], "timeout");
    gw.stop().await;
}
