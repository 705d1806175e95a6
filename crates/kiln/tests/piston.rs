//! Piston v2, drop-in (issue 7): its shapes and semantics over raw HTTP, its WebSocket
//! `/api/v2/connect`, then the real client libraries — npm `piston-client` and PyPI `pistonapi`, unmodified (scripts/test.sh installs
//! them under tests/clients) — against a running Kiln.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{assert_no_containers, Gateway, Ws};
use serde_json::{json, Value};

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/clients");

async fn piston(gw: &Gateway, body: Value) -> (u16, Value) {
    let res = gw
        .http
        .post(format!("{}/api/v2/execute", gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piston_shapes_and_semantics() {
    let gw = Gateway::start("piston").await;
    let list: Value = gw
        .http
        .get(format!("{}/api/v2/runtimes/", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let python = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["language"] == "python")
        .unwrap();
    assert!(python["aliases"].as_array().unwrap().contains(&json!("py")));

    // A run by alias and selector; the first file is the program, the others beside it.
    let (code, v) = piston(&gw, json!({"language": "py", "version": "3.x",
        "files": [{"name": "prog.py", "content": "import sys, lib\nprint(lib.X, sys.argv[1:], input())\nsys.exit(2)"},
                  {"name": "lib.py", "content": "X = 'lib'"}],
        "stdin": "in", "args": ["1", "2"], "run_timeout": 3000, "run_memory_limit": -1})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["language"].as_str(), v["version"].as_str()),
        (Some("python"), Some("3.11.2"))
    );
    let run = &v["run"];
    assert_eq!(run["stdout"], "lib ['1', '2'] in\n", "{v}");
    assert_eq!(run["output"], run["stdout"]);
    assert_eq!(
        (run["code"].as_i64(), run["status"].as_str()),
        (Some(2), Some("RE")),
        "{v}"
    );
    assert!(
        run["wall_time"].as_u64().is_some() && run["memory"].as_u64() > Some(0),
        "{v}"
    );
    assert!(
        v.get("compile").is_none(),
        "an interpreted language has no compile stage"
    );

    // A compiled language: compile then run; a failed compile is copied into run.
    let (_, v) = piston(
        &gw,
        json!({"language": "c++", "version": "*",
        "files": [{"content": "#include <cstdio>\nint main() { std::puts(\"ok\"); }"}]}),
    )
    .await;
    assert_eq!(
        (v["compile"]["code"].as_i64(), v["run"]["stdout"].as_str()),
        (Some(0), Some("ok\n")),
        "{v}"
    );
    let (_, v) = piston(
        &gw,
        json!({"language": "c", "version": "12.2.0",
        "files": [{"content": "int main(void) { return nope; }"}]}),
    )
    .await;
    assert_eq!(v["compile"]["status"], "RE", "{v}");
    assert_eq!(v["run"], v["compile"], "{v}");
    assert!(v["run"]["stderr"].as_str().unwrap().contains("nope"), "{v}");

    // Time out, output limit, signal.
    let (_, v) = piston(
        &gw,
        json!({"language": "bash", "version": "5", "run_timeout": 300,
        "files": [{"content": "sleep 5"}]}),
    )
    .await;
    assert_eq!(
        (v["run"]["status"].as_str(), v["run"]["signal"].as_str()),
        (Some("TO"), Some("SIGKILL")),
        "{v}"
    );
    let (_, v) = piston(
        &gw,
        json!({"language": "bash", "version": "5",
        "files": [{"content": "kill -SEGV $$"}]}),
    )
    .await;
    assert_eq!(
        (v["run"]["status"].as_str(), v["run"]["signal"].as_str()),
        (Some("SG"), Some("SIGSEGV")),
        "{v}"
    );

    // Errors in Piston's style: 400 with a message.
    for (body, message) in [
        (
            json!({"language": "python", "version": "9.x", "files": [{"content": "x"}]}),
            "python-9.x runtime is unknown",
        ),
        (
            json!({"version": "*", "files": [{"content": "x"}]}),
            "language is required as a string",
        ),
        (
            json!({"language": "python", "files": [{"content": "x"}]}),
            "version is required as a string",
        ),
        (
            json!({"language": "python", "version": "*", "files": []}),
            "files is required as an array",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"name": "a"}]}),
            "files[0].content is required as a string",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": 99_999_999}),
            "run_timeout cannot exceed the configured limit of 300000",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": "x"}], "run_memory_limit": 1_i64 << 40}),
            "run_memory_limit cannot exceed the configured limit of 4294967296",
        ),
    ] {
        let (code, v) = piston(&gw, body.clone()).await;
        assert_eq!(
            (code, v["message"].as_str()),
            (400, Some(message)),
            "{body}"
        );
    }

    // Lenient as clients need: no Content-Type, text/plain, a trailing slash.
    for (path, ctype) in [
        ("/api/v2/execute", None),
        ("/api/v2/execute/", Some("text/plain")),
    ] {
        let mut req = gw.http.post(format!("{}{path}", gw.url)).body(
            r#"{"language": "js", "version": "*", "files": [{"content": "console.log(7)"}]}"#,
        );
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert_eq!(v["run"]["stdout"], "7\n", "{path} {ctype:?}: {v}");
    }
    gw.stop().await;
}

/// Runs a client script and returns its JSON lines by name.
fn client(
    program: &str,
    script: &str,
    url: &str,
    env: &[(&str, String)],
) -> HashMap<String, Value> {
    let out = Command::new(program)
        .arg(format!("{CLIENTS}/{script}"))
        .arg(url)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(CLIENTS)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed (are the clients installed? scripts/test.sh installs them):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["what"].as_str().unwrap().to_owned(), v["v"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_piston_clients_work_unmodified() {
    let gw = Gateway::start("pistonclients").await;

    let r = tokio::task::spawn_blocking({
        let url = gw.url.clone();
        move || client("node", "piston-client.mjs", &url, &[])
    })
    .await
    .unwrap();
    assert!(r["runtimes"].as_array().unwrap().len() >= 5, "{r:?}");
    assert_eq!(
        r["python"]["run"]["stdout"], "hi ['1', '2', '3'] kiln\n",
        "{r:?}"
    );
    assert_eq!(r["c"]["run"]["stdout"], "hi from c\n", "{r:?}");
    assert_eq!(r["c"]["run"]["code"], 3, "{r:?}");
    assert_eq!(r["c-broken"]["compile"]["status"], "RE", "{r:?}");
    assert_eq!(r["timeout"]["run"]["status"], "TO", "{r:?}");
    assert!(
        r["too-long"]["message"]
            .as_str()
            .unwrap()
            .contains("run_timeout cannot exceed"),
        "{r:?}"
    );
    assert_eq!(
        r["unknown"]["message"], "cobol-1.0.0 runtime is unknown",
        "{r:?}"
    );

    let r = tokio::task::spawn_blocking({
        let url = gw.url.clone();
        move || {
            client(
                "python3",
                "pistonapi_client.py",
                &url,
                &[("PYTHONPATH", format!("{CLIENTS}/py"))],
            )
        }
    })
    .await
    .unwrap();
    let languages = r["languages"].as_array().unwrap();
    assert!(
        languages.contains(&json!("python")) && languages.contains(&json!("c++")),
        "{r:?}"
    );
    assert_eq!(r["python"], "hi from pistonapi\n", "{r:?}");
    assert_eq!(r["args"], "['a', 'b']\n", "{r:?}");
    assert_eq!(r["unknown"], "cobol-1.0 runtime is unknown", "{r:?}");
    gw.stop().await;
}

/// The types of a Piston session's messages, `data` ones as `data:<stream>`.
fn kinds(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m["type"].as_str().unwrap() {
            "data" => format!("data:{}", m["stream"].as_str().unwrap()),
            "stage" | "exit" => format!(
                "{}:{}",
                m["type"].as_str().unwrap(),
                m["stage"].as_str().unwrap()
            ),
            other => other.to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piston_websocket_connect() {
    let gw = Gateway::start("pistonws").await;

    // Interactive Python: output arrives while it waits for stdin, which the client sends then.
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(
        json!({"type": "init", "language": "python", "version": "3.x",
        "files": [{"content": "print('ready', flush=True)\nx = input()\nprint('got', x)"}]}),
    )
    .await;
    let seen = ws.until_stdout("ready\n").await;
    assert_eq!(
        seen[0],
        json!({"type": "runtime", "language": "python", "version": "3.11.2"})
    );
    assert_eq!(kinds(&seen), ["runtime", "stage:run", "data:stdout"]);
    ws.send(json!({"type": "data", "stream": "stdin", "data": "abc\n"}))
        .await;
    let (rest, code, reason) = ws.rest().await;
    assert_eq!(
        (code, reason.as_str()),
        (Some(4999), "Job Completed"),
        "{rest:?}"
    );
    let exit = rest.last().unwrap();
    assert_eq!(
        (
            exit["type"].as_str(),
            exit["stage"].as_str(),
            exit["code"].as_i64()
        ),
        (Some("exit"), Some("run"), Some(0)),
        "{rest:?}"
    );
    let out: String = rest
        .iter()
        .filter(|m| m["stream"] == "stdout")
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(out, "got abc\n");

    // A compiled language: the compile stage, its exit, then the run stage.
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "c", "version": "*",
        "files": [{"name": "main.c", "content": "#include <stdio.h>\nint main(void) { puts(\"hi from c\"); return 3; }"}]}))
        .await;
    let (all, code, _) = ws.rest().await;
    assert_eq!(code, Some(4999), "{all:?}");
    assert_eq!(
        kinds(&all),
        [
            "runtime",
            "stage:compile",
            "exit:compile",
            "stage:run",
            "data:stdout",
            "exit:run"
        ],
        "{all:?}"
    );
    assert_eq!(all[2]["code"], 0);
    assert_eq!(all[4]["data"], "hi from c\n");
    assert_eq!(
        (all[5]["code"].as_i64(), all[5]["status"].as_str()),
        (Some(3), Some("RE"))
    );

    // A compiled program that reads before it writes: the run stage is announced when the
    // compile ends, so the client knows to send its input.
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "c", "version": "*",
        "files": [{"content": "#include <stdio.h>\nint main(void) { int n; if (scanf(\"%d\", &n) != 1) return 1; printf(\"%d\\n\", n * 2); return 0; }"}]}))
        .await;
    let mut seen = Vec::new();
    while seen.last() != Some(&json!({"type": "stage", "stage": "run"})) {
        match ws.next().await {
            common::WsEvent::Json(v, _) => seen.push(v),
            closed => panic!("{closed:?} after {seen:?}"),
        }
    }
    assert_eq!(
        kinds(&seen),
        ["runtime", "stage:compile", "exit:compile", "stage:run"],
        "{seen:?}"
    );
    ws.send(json!({"type": "data", "stream": "stdin", "data": "21\n"}))
        .await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(code, Some(4999));
    assert_eq!(kinds(&rest), ["data:stdout", "exit:run"], "{rest:?}");
    assert_eq!(rest[0]["data"], "42\n");

    // A failed compile ends after its exit; nothing runs.
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "c", "version": "*",
        "files": [{"content": "int main(void) { return nope; }"}]}))
        .await;
    let (all, code, _) = ws.rest().await;
    assert_eq!(code, Some(4999));
    let k = kinds(&all);
    assert_eq!(
        (k.first().map(String::as_str), k.last().map(String::as_str)),
        (Some("runtime"), Some("exit:compile")),
        "{all:?}"
    );
    assert!(
        k.contains(&"data:stderr".to_owned()) && !k.contains(&"stage:run".to_owned()),
        "{all:?}"
    );
    assert_ne!(all.last().unwrap()["code"], 0);

    // A signal ends the program.
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "bash", "version": "*",
        "files": [{"content": "echo ready; while true; do sleep 0.1; done"}]}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "signal", "signal": "SIGKILL"}))
        .await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(code, Some(4999));
    let exit = rest.last().unwrap();
    assert_eq!(
        (exit["signal"].as_str(), exit["status"].as_str()),
        (Some("SIGKILL"), Some("SG")),
        "{rest:?}"
    );

    // Piston's close codes for mistakes.
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    let (_, code, reason) = ws.rest().await;
    assert_eq!(
        (code, reason.as_str()),
        (Some(4001), "Initialization Timeout")
    );
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "data", "stream": "stdin", "data": "early"}))
        .await;
    assert_eq!(ws.rest().await.1, Some(4003));
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(
        json!({"type": "init", "language": "cobol", "version": "*", "files": [{"content": ""}]}),
    )
    .await;
    let (msgs, code, _) = ws.rest().await;
    assert_eq!(code, Some(4002));
    assert_eq!(
        msgs,
        [json!({"type": "error", "message": "cobol-* runtime is unknown"})]
    );
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "bash", "version": "*",
        "files": [{"content": "echo ready; cat"}]}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "signal", "signal": "SIGNOPE"}))
        .await;
    assert_eq!(ws.rest().await.1, Some(4005));
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "bash", "version": "*",
        "files": [{"content": "echo ready; cat"}]}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "data", "stream": "stdout", "data": "x"}))
        .await;
    assert_eq!(ws.rest().await.1, Some(4004));
    let mut ws = Ws::connect(&gw, "/api/v2/connect").await;
    ws.send(json!({"type": "init", "language": "bash", "version": "*",
        "files": [{"content": "echo ready; cat"}]}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(
        json!({"type": "init", "language": "bash", "version": "*", "files": [{"content": ""}]}),
    )
    .await;
    assert_eq!(ws.rest().await.1, Some(4000));
    // The runs left without a client ended with their stdin; nothing is left.
    assert_no_containers(&gw.gateway_id, Duration::from_secs(20)).await;
    gw.stop().await;
}
