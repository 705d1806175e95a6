//! Interactive and streamed runs, side by side with the plain request and with the engine's own
//! attach: what a run over the WebSocket (or as server-sent events) costs on top of
//! `POST /api/v1/execute` (all three warm, one at a time, interleaved), and how long a line of
//! stdin takes to come back from a running program through Kiln's WebSocket against a
//! `docker run -i`-style attach to a container running the same loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use kiln_sandbox::docker::{baseline, DockerBackend};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::stats::ms_since as ms;
use super::{BenchArgs, Samples};
use crate::config::Config;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ECHO_LOOP: &str = "while read l; do echo \"$l\"; done";

/// The next JSON message of a session; an error or an early close fails the bench.
async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match ws.next().await.context("the session ended")?? {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str())?),
            Message::Close(c) => bail!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Messages until the result; fails on an error message.
async fn until_result(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let v = next_json(ws).await?;
        match v["type"].as_str() {
            Some("result") => return Ok(v),
            Some("error") => bail!("session error: {v}"),
            _ => {}
        }
    }
}

async fn ws_connect(base: &str) -> anyhow::Result<Ws> {
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{base}/api/v1/execute/ws")).await?;
    Ok(ws)
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let gw = super::gateway(args, "interactive", Some(2)).await?;
    let base = gw.addr.to_string();
    let http = reqwest::Client::new();
    let request = json!({"image": args.image, "command": "echo hi"});

    // Whole runs: the same request three ways, interleaved so that drift hits all alike.
    let (mut post, mut sse, mut ws_run) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..args.warmup + args.iterations {
        super::settle(&gw, 2).await?;
        let t0 = Instant::now();
        let res = http
            .post(format!("http://{base}/api/v1/execute"))
            .json(&request)
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "execute: {}", res.status());
        res.bytes().await?;
        let post_ms = ms(t0);

        super::settle(&gw, 2).await?;
        let t0 = Instant::now();
        let res = http
            .post(format!("http://{base}/api/v1/execute/stream"))
            .json(&request)
            .send()
            .await?;
        let body = res.text().await?;
        anyhow::ensure!(body.contains("event: result"), "stream: {body}");
        let sse_ms = ms(t0);

        super::settle(&gw, 2).await?;
        let t0 = Instant::now();
        let mut ws = ws_connect(&base).await?;
        ws.send(Message::text(request.to_string())).await?;
        until_result(&mut ws).await?;
        let ws_ms = ms(t0);
        drop(ws);

        if i >= args.warmup {
            post.push(post_ms);
            sse.push(sse_ms);
            ws_run.push(ws_ms);
        }
    }

    // A line of stdin there and back, through a running program: Kiln's WebSocket against the
    // engine's attach.
    let rounds = args.iterations.max(20) * 5;
    super::settle(&gw, 2).await?;
    let mut ws = ws_connect(&base).await?;
    ws.send(Message::text(
        json!({"image": args.image, "command": ECHO_LOOP, "limits": {"timeout_ms": 120_000}})
            .to_string(),
    ))
    .await?;
    let mut kiln_echo = Samples::default();
    for i in 0..rounds {
        let line = format!("line {i}\n");
        let t0 = Instant::now();
        ws.send(Message::text(
            json!({"type": "stdin", "text": line}).to_string(),
        ))
        .await?;
        let mut got = String::new();
        while got != line {
            let v = next_json(&mut ws).await?;
            if v["type"] == "stdout" {
                got.push_str(v["text"].as_str().unwrap_or(""));
            }
        }
        kiln_echo.push(ms(t0));
    }
    ws.send(Message::text(r#"{"type":"stdin_eof"}"#)).await?;
    until_result(&mut ws).await?;

    let mut probe = Config::default();
    probe.docker.host = args.docker_host.clone();
    let mut probe_config = probe.docker.to_backend_config();
    probe_config.channel_dir = None;
    let backend = Arc::new(DockerBackend::connect(probe_config).await?);
    let mut attached =
        baseline::start_attached(&backend, &args.image, &["sh", "-c", ECHO_LOOP]).await?;
    let mut docker_echo = Samples::default();
    let echoed = async {
        for i in 0..rounds {
            let line = format!("line {i}\n");
            let t0 = Instant::now();
            attached.input.write_all(line.as_bytes()).await?;
            attached.input.flush().await?;
            let mut got = Vec::new();
            while got != line.as_bytes() {
                let item = tokio::time::timeout(Duration::from_secs(10), attached.output.next())
                    .await
                    .context("no echo in 10 s")?
                    .context("the attach ended")??;
                got.extend_from_slice(&item.into_bytes());
            }
            docker_echo.push(ms(t0));
        }
        anyhow::Ok(())
    }
    .await;
    baseline::remove(&backend, &attached.id).await?;
    echoed?;

    let row = |name: &str, s: &Samples, base: &Samples| {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2}× |",
            s.p(50.0),
            s.p(90.0),
            s.p(99.0),
            s.p(50.0) / base.p(50.0)
        );
    };
    println!(
        "\nwhole runs of `echo hi`, warm pool, {} each, interleaved\n",
        post.len()
    );
    println!("| path | p50 ms | p90 ms | p99 ms | p50 vs POST |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    row("POST /api/v1/execute", &post, &post);
    row("POST /api/v1/execute/stream (SSE)", &sse, &post);
    row(
        "GET /api/v1/execute/ws (connect, request, result)",
        &ws_run,
        &post,
    );
    println!("\na line of stdin there and back through a running `{ECHO_LOOP}`, {rounds} lines\n");
    println!("| path | p50 ms | p90 ms | p99 ms | p50 vs docker attach |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    row(
        "docker attach (engine API, `docker run -i`)",
        &docker_echo,
        &docker_echo,
    );
    row("Kiln WebSocket", &kiln_echo, &docker_echo);
    gw.shutdown().await?;
    Ok(())
}
