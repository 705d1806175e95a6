//! `POST /api/v1/execute/stream` (issue 7): output arrives as server-sent events while the
//! program still runs, and the stream ends with the same result object as /api/v1/execute.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, BUSYBOX};
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
