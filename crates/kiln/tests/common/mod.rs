//! A real gateway on 127.0.0.1 against the real Docker engine, one per test, each with its own
//! gateway id so that tests can count the containers they made.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln::config::Config;
use kiln::serve::Running;
use serde_json::Value;

pub const BUSYBOX: &str = "kiln/busybox";
pub const PYTHON: &str = "kiln/python";

/// The static kiln-init that `scripts/test.sh` builds. Missing is a failure, never a skip.
pub fn init_path() -> PathBuf {
    let p = std::env::var_os("KILN_INIT_PATH").unwrap_or_else(|| {
        panic!("KILN_INIT_PATH is not set: run the suite with scripts/test.sh, which builds the static kiln-init")
    });
    PathBuf::from(p)
}

pub fn unique_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "kiln-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn test_config(tag: &str) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".into();
    c.docker.init_path = Some(init_path());
    c.docker.gateway_id = unique_id(tag);
    c.images.required = vec![BUSYBOX.into(), PYTHON.into()];
    // Every run cold unless a test asks for pools: the cold path is what these tests pin down.
    c.pool.enabled = false;
    // No shared on-disk cache store between tests; the cache tests give theirs a directory.
    c.cache.l2_path = None;
    c.judge0.store_path = None;
    // The host's KSM is one for all: only the test of it manages it.
    c.memory.ksm_host = kiln::config::HostPolicy::Leave;
    c
}

/// A config with one pre-warmed pool of `min..=max` busybox sandboxes at the default limits.
pub fn pooled_config(tag: &str, min: usize, max: usize) -> Config {
    let mut c = test_config(tag);
    c.pool.enabled = true;
    c.pool.on_demand = false;
    c.pool.pools = vec![kiln::config::PoolEntry {
        name: Some("busybox".into()),
        image: BUSYBOX.into(),
        workdir: None,
        limits: Default::default(),
        network: false,
        min,
        max,
        thp: None,
    }];
    c
}

/// Ids of the containers carrying `gateway_id`, running or not.
pub fn containers_of(gateway_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.kiln.gateway={gateway_id}"),
        ])
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Waits up to `within` for every container of `gateway_id` to be gone.
pub async fn assert_no_containers(gateway_id: &str, within: Duration) {
    let t0 = Instant::now();
    loop {
        let left = containers_of(gateway_id);
        if left.is_empty() {
            return;
        }
        if t0.elapsed() > within {
            panic!("containers of {gateway_id} left behind: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Gateway {
    pub url: String,
    pub gateway_id: String,
    pub http: reqwest::Client,
    pub running: Running,
}

impl Gateway {
    pub async fn start(tag: &str) -> Gateway {
        Self::start_with(test_config(tag)).await
    }

    pub async fn start_with(config: Config) -> Gateway {
        let gateway_id = config.docker.gateway_id.clone();
        let running = kiln::serve::start(config, false)
            .await
            .expect("gateway starts");
        Gateway {
            url: format!("http://{}", running.addr),
            gateway_id,
            http: reqwest::Client::new(),
            running,
        }
    }

    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let res = self
            .http
            .post(format!("{}/api/v1/execute", self.url))
            .body(body)
            .send()
            .await
            .expect("gateway answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v, headers)
    }

    pub async fn post(&self, body: Value) -> (u16, Value) {
        let (s, v, _) = self.post_raw(body.to_string()).await;
        (s, v)
    }

    /// Posts a run that must succeed with HTTP 200, and returns its result.
    pub async fn run(&self, body: Value) -> Value {
        let (s, v) = self.post(body.clone()).await;
        assert_eq!(s, 200, "request {body} answered {v}");
        v
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("gateway answers");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON"))
    }

    /// Shuts the gateway down and checks that nothing it made is left.
    pub async fn stop(self) {
        let id = self.gateway_id.clone();
        self.running.shutdown().await.expect("clean shutdown");
        assert_no_containers(&id, Duration::from_secs(10)).await;
    }
}

/// A WebSocket client of the gateway's (tokio-tungstenite, a client as any other).
pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Seconds since the connection, at each message received.
    t0: Instant,
}

/// What the server sent: a JSON message, or the close (code, reason).
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    Json(Value, f64),
    Closed(Option<u16>, String),
}

impl Ws {
    pub async fn connect(gw: &Gateway, path: &str) -> Ws {
        let url = format!("{}{path}", gw.url.replace("http://", "ws://"));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket handshake");
        Ws {
            stream,
            t0: Instant::now(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
            .await
            .expect("sent");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::binary(
                bytes.to_vec(),
            ))
            .await
            .expect("sent");
    }

    /// The next message, within 30 s.
    pub async fn next(&mut self) -> WsEvent {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.stream.next())
                .await
                .expect("a message within 30 s");
            return match msg {
                Some(Ok(Message::Text(t))) => WsEvent::Json(
                    serde_json::from_str(t.as_str()).expect("JSON"),
                    self.t0.elapsed().as_secs_f64(),
                ),
                Some(Ok(Message::Close(frame))) => WsEvent::Closed(
                    frame.as_ref().map(|f| u16::from(f.code)),
                    frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                ),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => WsEvent::Closed(None, String::new()),
            };
        }
    }

    /// Messages until one whose stdout so far holds `text` (the `data`/`text` fields of the
    /// messages whose `stream` or `type` is stdout); returns all of them.
    pub async fn until_stdout(&mut self, text: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        let mut out = String::new();
        while !out.contains(text) {
            match self.next().await {
                WsEvent::Json(v, _) => {
                    if v["type"] == "stdout" || v["stream"] == "stdout" {
                        out.push_str(v["text"].as_str().or(v["data"].as_str()).unwrap_or(""));
                    }
                    seen.push(v);
                }
                closed => panic!("waiting for {text:?} in {out:?}, got {closed:?} after {seen:?}"),
            }
        }
        seen
    }

    /// Every message to the close, and the close.
    pub async fn rest(&mut self) -> (Vec<Value>, Option<u16>, String) {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                WsEvent::Json(v, _) => seen.push(v),
                WsEvent::Closed(code, reason) => return (seen, code, reason),
            }
        }
    }
}
