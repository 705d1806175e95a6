//! `POST /api/v1/execute/stream` and `GET /api/v1/execute/ws` (issue 7): output arrives while
//! the program still runs (server-sent events; WebSocket messages, which also take stdin while
//! it runs), and ends with the same result object as /api/v1/execute.

mod common;

use std::time::{Duration, Instant};

use common::{assert_no_containers, test_config, Gateway, Ws, WsEvent, BUSYBOX};
use serde_json::{json, Value};

/// The events of one stream: (name, data, seconds since the request).
async fn events(gw: &Gateway, body: Value) -> (u16, Vec<(String, Value, f64)>) {
    let t0 = Instant::now();
    let mut res = gw
        .http
        .post(format!("{}/api/v1/execute/stream", gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    if code != 200 {
        return (code, vec![("error".into(), res.json().await.unwrap(), 0.0)]);
    }
    let mut out = Vec::new();
    let mut buf = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut name, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                out.push((
                    name,
                    serde_json::from_str(&data).unwrap(),
                    t0.elapsed().as_secs_f64(),
                ));
            }
        }
    }
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_before_the_program_ends() {
    let gw = Gateway::start("stream").await;
    let (code, ev) = events(
        &gw,
        json!({"image": BUSYBOX, "command": "echo first; sleep 2; echo second >&2; echo third"}),
    )
    .await;
    assert_eq!(code, 200);
    let mut names: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
    // Two pipes: lines written to both at once may arrive in either order.
    names[1..3].sort();
    assert_eq!(names, ["stdout", "stderr", "stdout", "result"], "{ev:?}");
    assert_eq!(ev[0].1["text"], "first\n");
    let (first_at, result_at) = (ev[0].2, ev[3].2);
    assert!(
        result_at - first_at > 1.5,
        "the first line came {first_at:.2} s in, the result {result_at:.2} s: streamed, not at the end"
    );
    let result = &ev[3].1;
    assert_eq!(
        (result["stdout"].as_str(), result["stderr"].as_str()),
        (Some("first\nthird\n"), Some("second\n")),
        "{result}"
    );
    assert_eq!(result["status"], "ok");

    // A compiled language streams its compiler's output too; a failed compile ends the stream.
    let (_, ev) = events(
        &gw,
        json!({"language": "c", "code": "int main(void) { return nope; }"}),
    )
    .await;
    let names: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.last(), Some(&"result"), "{ev:?}");
    assert!(names.contains(&"compile_stderr"), "{ev:?}");
    assert_eq!(ev.last().unwrap().1["status"], "compile_error");

    // Bad requests are answered before any stream, as /api/v1/execute answers them.
    let (code, ev) = events(&gw, json!({"image": BUSYBOX})).await;
    assert_eq!(
        (code, ev[0].1["error"]["code"].as_str()),
        (422, Some("missing_field"))
    );
    let (_, ev) = events(
        &gw,
        json!({"image": "kiln/none-such-image", "command": "true"}),
    )
    .await;
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("error"), "{ev:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.stop().await;
}

/// The stdout of a session's messages, in order.
fn stdout_of(messages: &[Value]) -> String {
    messages
        .iter()
        .filter(|m| m["type"] == "stdout")
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_streams_output_and_takes_stdin_while_the_program_runs() {
    let gw = Gateway::start("ws").await;
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX, "stdin": "first\n",
        "command": "echo ready; read a; echo got $a; read b; echo got $b >&2; cat; echo done"}))
        .await;
    // The request's own stdin first; the program then waits for more, which is only sent
    // after its answer has arrived: output streams while the program runs.
    let mut seen = ws.until_stdout("got first\n").await;
    assert_eq!(stdout_of(&seen), "ready\ngot first\n", "{seen:?}");
    ws.send(json!({"type": "stdin", "text": "sec"})).await;
    ws.send(json!({"type": "stdin", "base64": "b25kCg=="}))
        .await;
    loop {
        match ws.next().await {
            WsEvent::Json(v, _) if v["type"] == "stderr" => {
                assert_eq!(v["text"], "got second\n");
                break;
            }
            WsEvent::Json(v, _) => seen.push(v),
            closed => panic!("{closed:?}"),
        }
    }
    ws.send_binary(b"raw bytes\n").await;
    ws.send(json!({"type": "stdin_eof"})).await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(code, Some(1000), "a normal close: {rest:?}");
    let result = &rest.last().unwrap();
    assert_eq!(result["type"], "result", "{rest:?}");
    let result = &result["result"];
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "ready\ngot first\nraw bytes\ndone\n");
    assert_eq!(result["stderr"], "got second\n");
    assert_eq!(
        stdout_of(&seen) + &stdout_of(&rest),
        "ready\ngot first\nraw bytes\ndone\n",
        "every piece of output streamed, once"
    );

    // A signal from the client reaches the program, also after the end of stdin.
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX,
        "command": "trap 'echo interrupted; exit 7' INT; cat; echo ready; while true; do sleep 0.1; done"}))
        .await;
    ws.send(json!({"type": "stdin_eof"})).await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "signal", "signal": "SIGINT"})).await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(code, Some(1000));
    let result = &rest.last().unwrap()["result"];
    assert_eq!(
        (result["exit_code"].as_i64(), result["stdout"].as_str()),
        (Some(7), Some("ready\ninterrupted\n")),
        "{rest:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mistakes_get_errors_and_leave_nothing_behind() {
    let gw = Gateway::start("wserr").await;
    // Not a WebSocket handshake: Kiln's JSON error.
    let (code, v) = gw.get("/api/v1/execute/ws").await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (426, Some("websocket_required"))
    );

    // A request that fails validation: its error, as /api/v1/execute gives it, then a close.
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX})).await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(code, Some(1000));
    assert_eq!(
        (rest[0]["type"].as_str(), rest[0]["error"]["code"].as_str()),
        (Some("error"), Some("missing_field")),
        "{rest:?}"
    );
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send_binary(b"{not json").await;
    let (rest, _, _) = ws.rest().await;
    assert_eq!(rest[0]["error"]["code"], "invalid_json", "{rest:?}");

    // A message the session does not take, mid-run: an error and a close; the run, its stdin
    // ended, finishes by itself and its sandbox goes.
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX, "command": "echo ready; cat"}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "stdin", "txt": "typo"})).await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(code, Some(1000));
    assert_eq!(
        rest.last().unwrap()["error"]["code"],
        "invalid_message",
        "{rest:?}"
    );

    // Stdin after its end.
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX, "command": "echo ready; sleep 5"}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "stdin_eof"})).await;
    ws.send(json!({"type": "stdin", "text": "late"})).await;
    let (rest, _, _) = ws.rest().await;
    assert_eq!(
        rest.last().unwrap()["error"]["code"],
        "invalid_message",
        "{rest:?}"
    );

    // A client that goes away mid-run: its stdin ends, the run ends, nothing is left.
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX, "command": "echo ready; cat; echo never seen"}))
        .await;
    ws.until_stdout("ready\n").await;
    drop(ws);
    assert_no_containers(&gw.gateway_id, Duration::from_secs(20)).await;

    // A signal that is no signal.
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX, "command": "echo ready; cat"}))
        .await;
    ws.until_stdout("ready\n").await;
    ws.send(json!({"type": "signal", "signal": "SIGNOPE"}))
        .await;
    let (rest, _, _) = ws.rest().await;
    let last = rest.last().unwrap();
    assert_eq!(last["error"]["code"], "invalid_message", "{rest:?}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIGNOPE"),
        "{last}"
    );
    assert_no_containers(&gw.gateway_id, Duration::from_secs(20)).await;
    gw.stop().await;
}

/// A WebSocket session keeps its connection's place under `server.max_connections` for as long
/// as it lasts: sessions cannot multiply past the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_counts_as_a_connection_while_it_lasts() {
    let mut config = test_config("wscap");
    config.server.max_connections = 1;
    let gw = Gateway::start_with(config).await;
    let mut ws = Ws::connect(&gw, "/api/v1/execute/ws").await;
    ws.send(json!({"image": BUSYBOX, "command": "echo ready; cat"}))
        .await;
    ws.until_stdout("ready\n").await;
    // A second connection is closed at once while the session holds the only place.
    let other = reqwest::Client::new()
        .get(format!("{}/health", gw.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(other.is_err(), "served past the cap: {other:?}");
    ws.send(json!({"type": "stdin_eof"})).await;
    let (rest, code, _) = ws.rest().await;
    assert_eq!(
        (code, rest.last().unwrap()["type"].as_str()),
        (Some(1000), Some("result"))
    );
    drop(ws);
    // The place is free again once the session is over.
    let t0 = std::time::Instant::now();
    loop {
        let res = reqwest::Client::new()
            .get(format!("{}/health", gw.url))
            .send()
            .await;
        if res.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}
