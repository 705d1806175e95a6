//! Hostile requests at the socket level (issue 6): headers sent slowly (slowloris), bodies
//! sent slowly or cut off, huge heads, too many connections. Each is bounded by a timeout or
//! a limit, and the gateway serves normally afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{test_config, Gateway, BUSYBOX};
use serde_json::json;

fn connect(gw: &Gateway) -> TcpStream {
    let addr = gw.url.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection (or the read timeout): what it sent.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

async fn config_with_short_timeouts(tag: &str, header_timeout_ms: u64) -> Gateway {
    let mut config = test_config(tag);
    config.server.header_timeout_ms = header_timeout_ms;
    config.server.body_timeout_ms = 1000;
    config.server.max_connections = 8;
    Gateway::start_with(config).await
}

async fn serves_normally(gw: &Gateway) {
    let v = gw
        .run(json!({"image": BUSYBOX, "command": "echo fine"}))
        .await;
    assert_eq!(v["stdout"], "fine\n", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_bodies_are_cut_off() {
    let gw = config_with_short_timeouts("slowloris", 1000).await;

    // Headers dribbled a byte at a time: the connection is closed at the header deadline.
    let dribble = {
        let mut s = connect(&gw);
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            s.write_all(b"POST /api/v1/execute HTTP/1.1\r\nHost: k\r\n")
                .unwrap();
            while t0.elapsed() < Duration::from_secs(10) {
                if s.write_all(b"X").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
                let mut byte = [0u8; 1];
                s.set_nonblocking(true).unwrap();
                // Anything but "nothing yet" means the server ended it: EOF, an answer, a reset.
                let closed = !matches!(s.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                s.set_nonblocking(false).unwrap();
                if closed {
                    break;
                }
            }
            t0.elapsed()
        })
    };
    // A body promised and never finished: 408 with a stable code at the body deadline.
    let slow_body = {
        let mut s = connect(&gw);
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            s.write_all(b"POST /api/v1/execute HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"image\":")
                .unwrap();
            let answer = read_to_close(&mut s);
            (answer, t0.elapsed())
        })
    };
    let took = dribble.await.unwrap();
    assert!(
        took < Duration::from_secs(5),
        "the dribbling connection lived {took:?}"
    );
    let (answer, took) = slow_body.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // An idle connection that never sends a request is closed too.
    let mut idle = connect(&gw);
    let t0 = Instant::now();
    let _ = read_to_close(&mut idle);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    serves_normally(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_heads_cut_bodies_and_connection_floods_are_bounded() {
    // Held connections must outlive the checks below even on a loaded machine.
    let gw = config_with_short_timeouts("heads", 8000).await;

    // A 200 KiB header: refused without reading it all into memory.
    let mut s = connect(&gw);
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: k\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 << 10)
    );
    let _ = s.write_all(head.as_bytes());
    let answer = read_to_close(&mut s);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // A body cut off half way by the client: nothing runs, nothing is left.
    for _ in 0..5 {
        let mut s = connect(&gw);
        s.write_all(b"POST /api/v1/execute HTTP/1.1\r\nHost: k\r\nContent-Length: 100\r\n\r\n{\"image\": \"kiln/busybox\", ")
            .unwrap();
        drop(s);
    }

    // Let the cut-off requests end (answered 400) and free their connections.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // More connections than allowed: the extra ones are closed at once, the others served.
    let held: Vec<TcpStream> = (0..8).map(|_| connect(&gw)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &held {
        // Each one holds its place: open, nothing sent either way.
        s.set_nonblocking(true).unwrap();
        let open = matches!((&*s).read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        assert!(open, "a held connection was closed");
    }
    let mut extra = connect(&gw);
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: k\r\n\r\n");
    let answer = read_to_close(&mut extra);
    assert!(
        answer.is_empty(),
        "over the cap, closed unanswered: {answer}"
    );
    drop(held);
    // The held ones close at the header deadline or now that they are dropped; the gateway
    // takes connections again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    serves_normally(&gw).await;
    common::assert_no_containers(&gw.gateway_id, Duration::from_secs(10)).await;
    gw.stop().await;
}
