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
