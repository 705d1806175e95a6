//! The `kiln` binary itself: `kiln serve` as a process (config from flags and environment,
//! SIGTERM shutdown) and `kiln run` as its client.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{containers_of, init_path, unique_id};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
    gateway_id: String,
}

impl Server {
    fn start() -> Server {
        Server::start_as(&unique_id("cli"), &[])
    }

    /// `kiln serve` as gateway `gateway_id`, with more `--set` overrides.
    fn start_as(gateway_id: &str, sets: &[&str]) -> Server {
        let port = free_port();
        let gateway_id = gateway_id.to_owned();
        let child = Command::new(KILN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(sets.iter().flat_map(|s| ["--set", s]))
            .args(["--set", &format!("docker.gateway_id={gateway_id}")])
            .env("KILN_INIT_PATH", init_path())
            .env("KILN__LIMITS__MAX__TIMEOUT_MS", "20000")
            // The host's KSM is global: only the KSM test manages it.
            .env("KILN__MEMORY__KSM_HOST", "leave")
            // Each server its own state: no shared on-disk cache store.
            .env("KILN__CACHE__L2_PATH", "")
            .env("KILN__JUDGE0__STORE_PATH", "")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kiln serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "kiln serve did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            url,
            gateway_id,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(KILN)
            .arg("run")
            .args(["--url", &self.url])
            .args(args)
            .output()
            .unwrap()
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "kiln serve ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// A test that fails half-way still stops its server (and so removes its sandboxes).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            unsafe { libc_kill(self.child.id() as i32, 15) };
            let t0 = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if t0.elapsed() > Duration::from_secs(20) {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn serve_and_run_end_to_end() {
    let server = Server::start();

    let out = server.run(&["--image", "kiln/python", "--", "python3", "-c", "print(1)"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    assert_eq!(out.status.code(), Some(0));

    let out = server.run(&["--image", "kiln/busybox", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));

    // Killed by the timeout: 128 + SIGKILL, and the status on stderr.
    let out = server.run(&[
        "--image",
        "kiln/busybox",
        "--timeout-ms",
        "300",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(137));
    assert!(String::from_utf8_lossy(&out.stderr).contains("status timeout"));

    // The limit set through the environment is in force.
    let out = server.run(&[
        "--image",
        "kiln/busybox",
        "--timeout-ms",
        "30000",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("limit_exceeded"),
        "{out:?}"
    );

    let health = server.run(&["--image", "kiln/busybox", "--json", "--", "echo", "j"]);
    let v: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(v["stdout"], "j\n");

    // By language, the argv after `--` as the program's arguments.
    let code = "import sys; print(sys.argv[1:]); sys.exit(3)";
    let out = server.run(&["-l", "python", "--code", code, "--", "a", "b"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "['a', 'b']\n",
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(3));

    // Interactive: the program's output arrives while it waits for the input that this side
    // sends only then; the end of this side's stdin is the program's.
    let code = "print('ready', flush=True)\nprint(input()[::-1], flush=True)\nimport sys\nprint(len(sys.stdin.read()))";
    let mut child = Command::new(KILN)
        .args([
            "run",
            "--url",
            &server.url,
            "-I",
            "-l",
            "python",
            "--code",
            code,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"kiln\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "nlik\n");
    std::io::Write::write_all(&mut stdin, b"more").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "4\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let id = server.gateway_id.clone();
    let status = server.terminate();
    assert!(status.success(), "kiln serve exited with {status}");
    assert!(containers_of(&id).is_empty());
}

#[test]
fn run_without_a_gateway_fails_clearly() {
    let port = free_port();
    let out = Command::new(KILN)
        .args([
            "run",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--image",
            "kiln/busybox",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[test]
fn serve_help_documents_the_configuration() {
    let out = Command::new(KILN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--config",
        "--port",
        "--docker-host",
        "--max-concurrent",
        "--allow-network",
        "limits.max",
        "KILN__",
    ] {
        assert!(help.contains(needle), "help lacks {needle}: {help}");
    }
    // Every section of the configuration file.
    for section in [
        "server", "docker", "limits", "network", "images", "pool", "cache", "auth", "runtimes",
        "memory", "judge0",
    ] {
        assert!(
            help.contains(&format!("[{section}]")),
            "help lacks [{section}]: {help}"
        );
    }
}

/// Killed with SIGKILL, a gateway cleans nothing up; started again under the same id, it
/// removes every container its dead instance left (pooled and running ones alike).
#[test]
fn a_gateway_killed_hard_is_cleaned_up_by_its_next_start() {
    let id = unique_id("sigkill");
    let pool = [
        "pool.enabled=true",
        "pool.on_demand=false",
        r#"pool.pools=[{image = "kiln/busybox", min = 3, max = 3}]"#,
    ];
    let mut first = Server::start_as(&id, &pool);
    let t0 = Instant::now();
    while containers_of(&id).len() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(30), "pool never filled");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And one run in flight when the gateway dies.
    let url = first.url.clone();
    let in_flight = std::thread::spawn(move || {
        Command::new(KILN)
            .args([
                "run",
                "--url",
                &url,
                "--image",
                "kiln/busybox",
                "--",
                "sleep",
                "30",
            ])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let before = containers_of(&id);
    assert!(before.len() >= 3, "{before:?}");
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let out = in_flight.join().unwrap();
    assert!(
        !out.status.success(),
        "the run in flight fails with its gateway"
    );
    assert_eq!(
        containers_of(&id).len(),
        before.len(),
        "nothing removed by a dead gateway"
    );

    let second = Server::start_as(&id, &["pool.enabled=false"]);
    let t0 = Instant::now();
    while !containers_of(&id).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "left after the restart: {:?}",
            containers_of(&id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(second.terminate().success());
}

/// Judge0 submissions made without `wait` are kept in the embedded store: a gateway stopped
/// while they run does not lose them; the next one (same store) runs them to the end.
#[test]
fn judge0_submissions_survive_a_restart() {
    let id = unique_id("judge0restart");
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "judge0.store_path={}",
        dir.path().join("judge0.redb").display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let first = Server::start_as(&id, &[&store]);
    let tokens: Vec<String> = rt.block_on(async {
        let mut tokens = Vec::new();
        for i in 0..3 {
            let v: serde_json::Value = http
                .post(format!("{}/submissions", first.url))
                .json(&serde_json::json!({"source_code": format!("sleep 3; echo done {i}"), "language_id": 46}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            tokens.push(v["token"].as_str().unwrap().to_owned());
        }
        tokens
    });
    // Stopped while they run.
    assert!(first.terminate().success());

    let second = Server::start_as(&id, &[&store]);
    rt.block_on(async {
        for (i, token) in tokens.iter().enumerate() {
            let t0 = Instant::now();
            loop {
                let v: serde_json::Value = http
                    .get(format!("{}/submissions/{token}", second.url))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["status"]["id"].as_u64() > Some(2) {
                    assert_eq!(v["status"]["id"], 3, "{v}");
                    assert_eq!(v["stdout"], format!("done {i}\n"), "{v}");
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "never finished: {v}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    assert!(second.terminate().success());
}
