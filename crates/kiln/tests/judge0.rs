//! Judge0 CE 1.13.1, drop-in (issue 7): its shapes, units and statuses over raw HTTP, then the
//! official Judge0 Python SDK (PyPI `judge0`, unmodified; scripts/test.sh installs it) against a
//! running Kiln.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Gateway;
use serde_json::{json, Value};

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/clients");

async fn post(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let res = gw
        .http
        .post(format!("{}{path}", gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    let res = gw
        .http
        .get(format!("{}{path}", gw.url))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge0_shapes_units_and_statuses() {
    let gw = Gateway::start("judge0").await;
    let (_, langs) = get(&gw, "/languages").await;
    let ids: Vec<u64> = langs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    for id in [46, 50, 54, 63, 71] {
        assert!(ids.contains(&id), "{id} in {langs}");
    }
    let (_, l) = get(&gw, "/languages/54").await;
    assert_eq!(l["name"], "C++ (GCC 12.2.0)", "{l}");
    let (_, st) = get(&gw, "/statuses").await;
    assert_eq!(st[2], json!({"id": 3, "description": "Accepted"}));
    assert_eq!(st.as_array().unwrap().len(), 14);
    assert_eq!(get(&gw, "/about").await.1["version"], "1.13.1");
    assert_eq!(
        get(&gw, "/config_info").await.1["max_submission_batch_size"],
        20
    );
    assert_eq!(get(&gw, "/system_info").await.0, 200);

    // wait=true: the default fields, time as a string in seconds, memory in KB.
    let (code, v) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": "print(input()[::-1])", "language_id": 71, "stdin": "kiln"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "compile_output",
            "memory",
            "message",
            "status",
            "stderr",
            "stdout",
            "time",
            "token"
        ]
    );
    assert_eq!(
        (v["stdout"].as_str(), v["status"]["id"].as_u64()),
        (Some("nlik\n"), Some(3)),
        "{v}"
    );
    assert!(
        v["time"].as_str().unwrap().parse::<f64>().is_ok() && v["memory"].as_u64() > Some(100),
        "{v}"
    );
    assert_eq!(
        (v["stderr"].clone(), v["compile_output"].clone()),
        (Value::Null, Value::Null),
        "empty is null"
    );
    assert_eq!(v["token"].as_str().unwrap().len(), 36);

    // base64 both ways; expected_output compared as Judge0 does (trailing whitespace).
    let (_, v) = post(&gw, "/submissions?wait=true&base64_encoded=true", json!({"source_code": b64("echo 42"), "language_id": 46, "expected_output": b64("42   \n\n")})).await;
    assert_eq!(
        (v["stdout"].as_str(), v["status"]["id"].as_u64()),
        (Some(b64("42\n").as_str()), Some(3)),
        "{v}"
    );
    let (_, v) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": "echo 41", "language_id": 46, "expected_output": "42"}),
    )
    .await;
    assert_eq!(
        v["status"],
        json!({"id": 4, "description": "Wrong Answer"}),
        "{v}"
    );

    // Compilation error, NZEC, time limit, SIGSEGV.
    let (_, v) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": "int main(void) { return nope; }", "language_id": 50}),
    )
    .await;
    assert_eq!(v["status"]["id"], 6, "{v}");
    assert!(
        v["compile_output"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    let (_, v) = post(
        &gw,
        "/submissions?wait=true&fields=status,exit_code,message",
        json!({"source_code": "process.exit(3)", "language_id": 63}),
    )
    .await;
    assert_eq!(
        v,
        json!({"status": {"id": 11, "description": "Runtime Error (NZEC)"}, "exit_code": 3, "message": "Exited with error status 3"})
    );
    let (_, v) = post(&gw, "/submissions?wait=true", json!({"source_code": "while True: pass", "language_id": 71, "cpu_time_limit": 0.5, "wall_time_limit": 1})).await;
    assert_eq!(v["status"]["id"], 5, "{v}");
    let (_, v) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": "int main(void) { return *(volatile int *)0; }", "language_id": 50}),
    )
    .await;
    assert_eq!(v["status"]["id"], 7, "{v}");

    // Rails-style 422s; 404 for an unknown token.
    let (code, v) = post(&gw, "/submissions", json!({"language_id": 71})).await;
    assert_eq!(
        (code, v.clone()),
        (422, json!({"source_code": ["can't be blank"]}))
    );
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "x", "language_id": 9999}),
    )
    .await;
    assert_eq!(
        (code, v["language_id"][0].as_str()),
        (422, Some("language with id 9999 doesn't exist"))
    );
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "x", "language_id": 71, "memory_limit": 1_u64 << 40}),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(
        get(&gw, "/submissions/00000000-0000-4000-8000-000000000000")
            .await
            .0,
        404
    );

    // Without wait: a token at once, the result later; batches of at most 20.
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "sleep 1; echo later", "language_id": 46}),
    )
    .await;
    assert_eq!(code, 201);
    let token = v["token"].as_str().unwrap().to_owned();
    let (_, first) = get(&gw, &format!("/submissions/{token}?fields=status")).await;
    assert!(
        first["status"]["id"].as_u64() <= Some(2),
        "queued or processing at first: {first}"
    );
    let t0 = Instant::now();
    let done = loop {
        let (_, v) = get(&gw, &format!("/submissions/{token}?fields=*")).await;
        if v["status"]["id"].as_u64() > Some(2) {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (done["stdout"].as_str(), done["language_id"].as_u64()),
        (Some("later\n"), Some(46)),
        "{done}"
    );
    assert!(
        done["created_at"].as_str().unwrap().ends_with('Z') && done["finished_at"].is_string(),
        "{done}"
    );
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"source_code": format!("echo {i}"), "language_id": 46}))
        .collect();
    let (code, tokens) = post(&gw, "/submissions/batch", json!({"submissions": items})).await;
    assert_eq!(code, 201, "{tokens}");
    let list: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    let t0 = Instant::now();
    loop {
        let (_, v) = get(
            &gw,
            &format!(
                "/submissions/batch?tokens={}&fields=stdout,status_id",
                list.join(",")
            ),
        )
        .await;
        let subs = v["submissions"].as_array().unwrap();
        if subs.iter().all(|s| s["status_id"] == 3) {
            let outs: Vec<&str> = subs.iter().map(|s| s["stdout"].as_str().unwrap()).collect();
            assert_eq!(outs, ["0\n", "1\n", "2\n"]);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"source_code": "true", "language_id": 46}))
        .collect();
    assert_eq!(
        post(&gw, "/submissions/batch", json!({"submissions": many}))
            .await
            .0,
        400
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_judge0_sdk_works_unmodified() {
    let gw = Gateway::start("judge0sdk").await;
    let url = gw.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(format!("{CLIENTS}/judge0_client.py"))
            .arg(&url)
            .env("PYTHONPATH", format!("{CLIENTS}/py"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "judge0_client.py failed (scripts/test.sh installs the SDK):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: HashMap<String, Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["what"].as_str().unwrap().to_owned(), v["v"].clone())
        })
        .collect();
    assert_eq!(
        (
            r["python"]["stdout"].as_str(),
            r["python"]["status"].as_u64()
        ),
        (Some("nlik\n"), Some(3)),
        "{r:?}"
    );
    assert_eq!(r["cpp"]["stdout"], "42\n", "{r:?}");
    assert_eq!(r["c-error"]["status"], 6, "{r:?}");
    assert!(
        r["c-error"]["compile_output"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{r:?}"
    );
    assert_eq!(r["js-exit"]["status"], 11, "{r:?}");
    let statuses: Vec<u64> = (0..3)
        .map(|i| r[&format!("case{i}")]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [3, 3, 4],
        "Accepted, Accepted (trailing newline ignored), Wrong Answer: {r:?}"
    );
    gw.stop().await;
}

/// A zip of `(path, content, unix mode)` entries.
fn zip_of(entries: &[(&str, &str, u32)]) -> String {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, content, mode) in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        w.start_file(*path, opts).unwrap();
        w.write_all(content.as_bytes()).unwrap();
    }
    let bytes = w.finish().unwrap().into_inner();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One HTTP request received by a test's own listener: (method, path, JSON body).
async fn receive_one(listener: &tokio::net::TcpListener) -> (String, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("a callback within 60 s")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body_start) = loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the request ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
        }
    };
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    while buf.len() < body_start + length {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = head.lines().next().unwrap().split(' ');
    let (method, path) = (
        first.next().unwrap().to_owned(),
        first.next().unwrap().to_owned(),
    );
    let body = serde_json::from_slice(&buf[body_start..body_start + length]).unwrap();
    (method, path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge0_compiler_options_additional_files_and_callbacks() {
    let gw = Gateway::start("judge0extra").await;
    let (_, info) = get(&gw, "/config_info").await;
    assert_eq!(
        (
            &info["enable_compiler_options"],
            &info["enable_callbacks"],
            &info["enable_additional_files"]
        ),
        (&json!(true), &json!(true), &json!(true))
    );

    // Compiler options reach the compiler, after the runtime's own flags.
    let c = "#include <stdio.h>\nint main(void) {\n#ifdef KILN_FLAG\n puts(\"flag\");\n#endif\n return 0; }";
    let (code, v) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": c, "language_id": 50,
        "compiler_options": "-DKILN_FLAG -O0"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(
        (v["status"]["id"].as_u64(), v["stdout"].as_str()),
        (Some(3), Some("flag\n")),
        "{v}"
    );
    let (code, v) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": c, "language_id": 50,
        "compiler_options": "-Werror=nonexistent-warning-kiln"}),
    )
    .await;
    assert_eq!(
        (code, v["status"]["id"].as_u64()),
        (201, Some(6)),
        "a bad option fails the compile: {v}"
    );
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "print(1)", "language_id": 71,
        "compiler_options": "-O2"}),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        v["compiler_options"][0]
            .as_str()
            .unwrap()
            .contains("only allowed for compiled languages"),
        "{v}"
    );

    // Additional files: beside the source, in directories, executable where the zip says so;
    // a `main.py` in the zip does not overwrite the source.
    let zip = zip_of(&[
        ("helper.py", "X = 'from helper'", 0o644),
        ("data/in.txt", "data file", 0o644),
        ("tool.sh", "#!/bin/sh\necho tool ran", 0o755),
        ("main.py", "print('overwritten')", 0o644),
    ]);
    let src = "import helper, subprocess\nprint(helper.X, open('data/in.txt').read())\nprint(subprocess.run(['./tool.sh'], capture_output=True, text=True).stdout, end='')";
    let (code, v) = post(
        &gw,
        "/submissions?base64_encoded=true&wait=true&fields=*",
        json!({
        "source_code": b64(src), "language_id": 71, "additional_files": zip}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let out = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v["stdout"].as_str().unwrap_or(""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (v["status"]["id"].as_u64(), out.as_str()),
        (Some(3), "from helper data file\ntool ran\n"),
        "{v}"
    );
    assert_eq!(v["additional_files"], zip, "shown as sent");
    // Not a zip; a path out of the working directory: Judge0's 422.
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "print(1)", "language_id": 71,
        "additional_files": b64("not a zip")}),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        v["additional_files"][0]
            .as_str()
            .unwrap()
            .starts_with("is not a zip archive"),
        "{v}"
    );
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "print(1)", "language_id": 71,
        "additional_files": zip_of(&[("../escape.py", "x", 0o644)])}),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        v["additional_files"][0]
            .as_str()
            .unwrap()
            .contains("outside"),
        "{v}"
    );

    // Callbacks: the finished submission PUT to the URL, default fields, base64-encoded; from a
    // background run and from a waited one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/judged", listener.local_addr().unwrap());
    let (code, v) = post(
        &gw,
        "/submissions",
        json!({"source_code": "echo called back", "language_id": 46,
        "callback_url": url}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (method, path, body) = receive_one(&listener).await;
    assert_eq!((method.as_str(), path.as_str()), ("PUT", "/judged"));
    assert_eq!(body["token"], v["token"]);
    assert_eq!(body["status"]["id"], 3, "{body}");
    assert_eq!(body["stdout"], b64("called back\n"), "{body}");
    let (code, _) = post(
        &gw,
        "/submissions?wait=true",
        json!({"source_code": "exit 4", "language_id": 46,
        "callback_url": url}),
    )
    .await;
    assert_eq!(code, 201);
    let (_, _, body) = receive_one(&listener).await;
    assert_eq!(body["status"]["id"], 11, "{body}");
    for (bad, why) in [
        ("https://example.com/cb", "https is not supported"),
        ("not a url", "is not a valid URL"),
    ] {
        let (code, v) = post(
            &gw,
            "/submissions",
            json!({"source_code": "true", "language_id": 46,
            "callback_url": bad}),
        )
        .await;
        assert_eq!(code, 422);
        assert!(v["callback_url"][0].as_str().unwrap().contains(why), "{v}");
    }
    gw.stop().await;
}
