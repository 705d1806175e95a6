//! Hostile code (issue 6), against the real engine: every case ends with an explicit status,
//! the gateway stays healthy (`/health`, and a plain run right after), and nothing is left
//! behind. docs/SECURITY.md lists each case with its outcome and the test that pins it.

mod common;

use std::time::{Duration, Instant};

use common::{assert_no_containers, Gateway, BUSYBOX, PYTHON};
use serde_json::{json, Value};

/// After a hostile case: the gateway answers, runs the next job normally, and the hostile
/// run's container is gone.
async fn still_healthy(gw: &Gateway) {
    let (code, _) = gw.get("/health").await;
    assert_eq!(code, 200);
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "echo fine"}))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["stdout"].as_str()),
        (Some("ok"), Some("fine\n")),
        "{v}"
    );
    assert_no_containers(&gw.gateway_id, Duration::from_secs(15)).await;
}

fn python(code: &str) -> Value {
    json!({"image": PYTHON, "argv": ["python3", "-c", code]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_and_busy_loop_are_contained() {
    let gw = Gateway::start("bomb").await;
    // Every process forks forever: the pids limit stops it, the timeout ends it, and a run
    // beside it in another sandbox is served meanwhile.
    let mut bomb = python(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    );
    bomb["limits"] = json!({"timeout_ms": 3000, "pids": 32});
    let t0 = Instant::now();
    let (bomb, beside) = tokio::join!(gw.run(bomb), async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let t = Instant::now();
        let v = gw
            .run(json!({"image": BUSYBOX, "command": "echo beside"}))
            .await;
        (v, t.elapsed())
    });
    assert_eq!(bomb["status"], "timeout", "{bomb}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert_eq!(beside.0["stdout"], "beside\n", "{}", beside.0);
    eprintln!("a run beside the fork bomb took {:?}", beside.1);

    // A shell fork bomb too.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "b() { b | b & }; b; sleep 5", "limits": {"timeout_ms": 2000, "pids": 32}}))
        .await;
    assert!(
        matches!(v["status"].as_str(), Some("timeout" | "ok")),
        "an explicit status: {v}"
    );

    // A busy loop on the CPU ends at its timeout.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "while :; do :; done", "limits": {"timeout_ms": 1000}}))
        .await;
    assert_eq!(v["status"], "timeout", "{v}");
    assert!(v["usage"]["cpu_ms"].as_u64().is_some(), "{v}");
    still_healthy(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_disk_bombs_are_contained() {
    let gw = Gateway::start("membomb").await;
    let mut bomb = python("a = []\nwhile True:\n    a.append(b'x' * (8 << 20))");
    bomb["limits"] = json!({"memory_mb": 64, "timeout_ms": 20000});
    let v = gw.run(bomb).await;
    assert_eq!(v["status"], "oom", "{v}");

    // tmpfs /tmp and the working directory are bounded by tmp_mb; the root is read-only.
    let v = gw
        .run(json!({"image": BUSYBOX, "limits": {"tmp_mb": 4},
            "command": "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'; dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'; for d in / /etc /bin; do touch $d/kiln 2>&1; done; exit 9"}))
        .await;
    let out = v["stdout"].as_str().unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["exit_code"], 9, "{v}");
    assert_eq!(out.matches("No space left on device").count(), 2, "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 3, "{out}");
    still_healthy(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_is_bounded_and_safe() {
    let gw = Gateway::start("output").await;
    // Binary noise, no newlines, invalid UTF-8, on both streams at once.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "head -c 60000 /dev/urandom; cat /dev/urandom >&2", "limits": {"output_bytes": 100000, "timeout_ms": 10000}}))
        .await;
    assert_eq!(v["status"], "output_limit", "{v}");
    assert_eq!(v["invalid_utf8"]["stdout"], true);
    use base64::Engine as _;
    let raw = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v[k].as_str().unwrap_or(""))
            .unwrap()
            .len()
    };
    assert_eq!(
        raw("stdout_base64") + raw("stderr_base64"),
        100000,
        "exact bytes, both streams"
    );

    // Closing its own stdout and stderr early, or sending them elsewhere, changes nothing for
    // the gateway: the run ends when the program does.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "exec 1>&- 2>&-; sleep 1; exit 3"}))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("ok"), Some(3)),
        "{v}"
    );
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "exec >/dev/null; echo hidden; echo shown >&2"}))
        .await;
    assert_eq!(
        (v["stdout"].as_str(), v["stderr"].as_str()),
        (Some(""), Some("shown\n")),
        "{v}"
    );
    still_healthy(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_no_privileges_no_host() {
    let gw = Gateway::start("escape").await;
    let probe = r#"
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(name, f):
    try:
        r = f()
        e = ctypes.get_errno() if r == -1 else 0
        print(name, "refused" if r == -1 else "ALLOWED", errno.errorcode.get(e, e))
    except OSError as x:
        print(name, "refused", type(x).__name__)
call("connect-ip", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2) and 0)
call("resolve-name", lambda: socket.getaddrinfo("example.com", 80) and 0)
call("raw-socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) and 0)
call("packet-socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW) and 0)
call("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
call("chroot", lambda: libc.chroot(b"/tmp"))
call("ptrace-init", lambda: libc.ptrace(16, 1, 0, 0))
call("unshare-user", lambda: libc.unshare(0x10000000))
call("init-module", lambda: libc.init_module(None, 0, b""))
call("setuid-0", lambda: libc.setuid(0))
call("kexec", lambda: libc.syscall(246, 0, 0, 0, 0))
call("open-init-environ", lambda: open("/proc/1/environ").read() and 0)
call("write-proc-sys", lambda: open("/proc/sys/kernel/hostname", "w").write("x") and 0)
"#;
    let v = gw.run(python(probe)).await;
    let out = v["stdout"].as_str().unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    for line in out.lines() {
        assert!(line.contains(" refused"), "{line}\n{out}");
    }
    assert_eq!(out.lines().count(), 13, "{out}\n{}", v["stderr"]);

    // A setuid binary gives nothing: no-new-privileges.
    let v = gw
        .run(json!({"image": PYTHON, "command": "ls -l /usr/bin/su | cut -c1-10; su -c id root </dev/null 2>&1; id -u"}))
        .await;
    let out = v["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("-rwsr-xr-x\n"),
        "su is setuid in the image: {out}"
    );
    assert!(out.ends_with("65534\n"), "{out}");
    assert!(!out.contains("uid=0"), "{out}");

    // The host is not visible: only the sandbox's processes, masked kernel files, no firmware.
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "ls /proc | grep -c '^[0-9]'; cat /proc/kcore 2>/dev/null | head -c 64 | wc -c; ls /sys/firmware | wc -l; cat /proc/keys 2>&1 | wc -c; hostname | wc -c"}))
        .await;
    let nums: Vec<u64> = v["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(nums[0] <= 6, "only the sandbox's own processes: {v}");
    assert_eq!(
        &nums[1..4],
        [0, 0, 0],
        "kcore, firmware and keys masked: {v}"
    );
    still_healthy(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_crooked_requests_are_refused_or_run() {
    let gw = Gateway::start("crooked").await;
    // Paths that leave the working directory, or carry a NUL: refused before any sandbox.
    for path in [
        "../x",
        "/etc/passwd",
        "a/../../x",
        "a\u{0}b",
        "",
        "a//b/../../../c",
    ] {
        let (code, v) = gw
            .post(json!({"image": BUSYBOX, "command": "true", "files": [{"path": path, "content": "x"}]}))
            .await;
        assert_eq!(code, 422, "{path:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{path:?}: {v}");
    }
    // Counts over the limits: refused, the field and the maximum named.
    let argv: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let env: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("V{i}"), json!("x"))).collect();
    let files: Vec<Value> = (0..1001)
        .map(|i| json!({"path": format!("f{i}"), "content": ""}))
        .collect();
    for (field, body) in [
        ("argv", json!({"image": BUSYBOX, "argv": argv})),
        (
            "env",
            json!({"image": BUSYBOX, "command": "true", "env": env}),
        ),
        (
            "files",
            json!({"image": BUSYBOX, "command": "true", "files": files}),
        ),
    ] {
        let (code, v) = gw.post(body).await;
        assert_eq!(
            (code, v["error"]["field"].as_str()),
            (422, Some(field)),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("at most"),
            "{v}"
        );
    }

    // Within the limits but past the kernel's: argv of 10,000 × 500 bytes is over ARG_MAX;
    // the run ends with an explicit error, not a hang.
    let argv: Vec<String> = std::iter::once("echo".to_owned())
        .chain((0..9_999).map(|_| "y".repeat(500)))
        .collect();
    let v = gw.run(json!({"image": BUSYBOX, "argv": argv})).await;
    assert_eq!(v["exit_code"], 126, "exec refused (E2BIG): {}", v["stderr"]);
    // 1000 files in nested directories are all written.
    let files: Vec<Value> = (0..1000)
        .map(|i| json!({"path": format!("d{}/e{}/f{i}", i % 10, i % 7), "content": "k"}))
        .collect();
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "find . -type f | wc -l", "files": files}))
        .await;
    assert_eq!(v["stdout"].as_str().map(str::trim), Some("1000"), "{v}");
    still_healthy(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cannot_reach_the_next_one_even_warm() {
    let gw = Gateway::start_with(common::pooled_config("leftover", 2, 2)).await;
    // Everything writable, and a symlink planted where the next run's files will be written.
    let plant = "for d in /tmp /workspace /dev/shm; do echo planted > $d/left 2>/dev/null; done; \
                 ln -s /etc /workspace/input; ln -s /etc/passwd /workspace/main.py; echo done";
    let v = gw.run(json!({"image": BUSYBOX, "command": plant})).await;
    assert_eq!(v["stdout"], "done\n", "{v}");
    for _ in 0..3 {
        let v = gw
            .run(json!({"image": BUSYBOX,
                "command": "cat /tmp/left /workspace/left /dev/shm/left 2>&1 | grep -c planted; ls -l /workspace; cat main.py input/x",
                "files": [{"path": "main.py", "content": "mine\n"}, {"path": "input/x", "content": "data\n"}]}))
            .await;
        let out = v["stdout"].as_str().unwrap();
        assert!(out.starts_with("0\n"), "nothing planted is seen: {out}");
        assert!(
            !out.contains("->"),
            "no symlink in the working directory: {out}"
        );
        assert!(out.ends_with("mine\ndata\n"), "{out}");
    }
    gw.stop().await;
}
