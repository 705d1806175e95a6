//! Piston's WebSocket, `GET /api/v2/connect`: an interactive run with Piston's messages.
//!
//! The client sends `{"type": "init", …}` (the body of `/api/v2/execute`) within a second; the
//! server answers `{"type": "runtime", "language", "version"}`, then for each stage
//! `{"type": "stage", "stage": "compile" | "run"}`, its output as
//! `{"type": "data", "stream": "stdout" | "stderr", "data"}` and its end as
//! `{"type": "exit", "stage", "code", "signal"}`, and closes with 4999 "Job Completed". While
//! the program runs the client may send `{"type": "data", "stream": "stdin", "data"}` and
//! `{"type": "signal", "signal": "SIGKILL"}`. Mistakes close the socket with Piston's codes:
//! 4000 already initialized, 4001 no init within a second, 4002 after an `error` message,
//! 4003 not yet initialized, 4004 only stdin may be written, 4005 invalid signal.
//!
//! Kiln writes the init's `stdin` first (Piston ignores it on this route), adds `status` and
//! `message` to `exit` as `/api/v2/execute` has them, and ends stdin when the client goes away.

use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use kiln_api::{ExecuteResponse, RunStatus};
use kiln_sandbox::{Input, StreamKind};
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::stream::{finish, start, upgrade};
use super::super::AppState;
use super::{validate, PistonRequest};

/// How long Piston waits for `init`.
const INIT_WITHIN: Duration = Duration::from_secs(1);

type Tx = SplitSink<WebSocket, Message>;

/// `GET /api/v2/connect`.
pub(in crate::http) async fn connect(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = upgrade(ws, &state)?;
    let sessions = state.sessions().clone();
    Ok(ws.on_upgrade(move |socket| sessions.track_future(session(state, socket))))
}

async fn send(tx: &mut Tx, v: Value) -> bool {
    tx.send(Message::text(v.to_string())).await.is_ok()
}

async fn close(tx: &mut Tx, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
}

/// Piston's answer to a message it cannot take: the reason, then 4002.
async fn notify(tx: &mut Tx, message: impl Into<String>) {
    send(tx, json!({"type": "error", "message": message.into()})).await;
    close(tx, 4002, "Notified Error").await;
}

/// What a client message is, read as Piston reads it.
enum Client {
    Init(Box<PistonRequest>),
    Stdin(String),
    OtherStream,
    Signal(Option<i32>),
    /// A type Piston does not know: ignored.
    Ignored,
}

fn parse(text: &str) -> Result<Client, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("init") => Client::Init(Box::new(
            serde_json::from_value(v).map_err(|e| e.to_string())?,
        )),
        Some("data") => match (v.get("stream").and_then(Value::as_str), v.get("data")) {
            (Some("stdin"), Some(Value::String(d))) => Client::Stdin(d.clone()),
            (Some("stdin"), _) => return Err("data is required as a string".into()),
            _ => Client::OtherStream,
        },
        // Piston takes signal names only.
        Some("signal") => Client::Signal(
            v.get("signal")
                .and_then(Value::as_str)
                .filter(|s| s.starts_with("SIG"))
                .and_then(kiln_api::signal_number),
        ),
        _ => Client::Ignored,
    })
}

async fn session(state: AppState, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let received = Instant::now();
    let deadline = tokio::time::Instant::now() + INIT_WITHIN;
    // Until `init`: only it is taken.
    let req = loop {
        let msg = match tokio::time::timeout_at(deadline, rx.next()).await {
            Err(_) => return close(&mut tx, 4001, "Initialization Timeout").await,
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match parse(&text) {
            Ok(Client::Init(req)) => break req,
            Ok(Client::Stdin(_) | Client::OtherStream | Client::Signal(_)) => {
                return close(&mut tx, 4003, "Not yet initialized").await
            }
            Ok(Client::Ignored) => continue,
            Err(e) => return notify(&mut tx, e).await,
        }
    };
    let (spec, language, version) = match validate(&state, &req) {
        Ok(v) => v,
        Err(e) => return notify(&mut tx, e.1).await,
    };
    let compiled = spec.compile.is_some();
    let (mut output, input, run) = start(&state, spec, received, true);
    let mut input = input;
    send(
        &mut tx,
        json!({"type": "runtime", "language": language, "version": version}),
    )
    .await;
    send(
        &mut tx,
        json!({"type": "stage", "stage": if compiled { "compile" } else { "run" }}),
    )
    .await;
    // Whether the run stage has been announced (at once when nothing is compiled).
    let mut running = !compiled;
    let max_stdin = state.inner.max_body_bytes;
    let mut stdin_sent = 0usize;
    loop {
        tokio::select! {
            chunk = output.recv() => {
                let Some((kind, bytes)) = chunk else { break };
                let stream = match kind {
                    StreamKind::Stdout | StreamKind::CompileStdout => "stdout",
                    StreamKind::Stderr | StreamKind::CompileStderr => "stderr",
                };
                if matches!(kind, StreamKind::Stdout | StreamKind::Stderr) && !running {
                    // Output of the run means the compile succeeded.
                    running = true;
                    send(&mut tx, compile_passed()).await;
                    send(&mut tx, json!({"type": "stage", "stage": "run"})).await;
                }
                let data = String::from_utf8_lossy(&bytes);
                if !send(&mut tx, json!({"type": "data", "stream": stream, "data": data})).await {
                    // The client is gone; the run goes on to its end without it.
                    return;
                }
            }
            msg = rx.next(), if input.is_some() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        input = None;
                        continue;
                    }
                };
                let item = match parse(&text) {
                    Ok(Client::Stdin(d)) => {
                        stdin_sent += d.len();
                        if stdin_sent > max_stdin {
                            let msg = format!("stdin cannot exceed {max_stdin} bytes");
                            return notify(&mut tx, msg).await;
                        }
                        Input::Stdin(d.into_bytes())
                    }
                    Ok(Client::Signal(Some(sig))) => Input::Signal(sig),
                    Ok(Client::Signal(None)) => return close(&mut tx, 4005, "Invalid signal").await,
                    Ok(Client::OtherStream) => {
                        return close(&mut tx, 4004, "Can only write to stdin").await
                    }
                    Ok(Client::Init(_)) => return close(&mut tx, 4000, "Already Initialized").await,
                    Ok(Client::Ignored) => continue,
                    Err(e) => return notify(&mut tx, e).await,
                };
                let sender = input.as_ref().expect("checked by the branch");
                if sender.send(item).await.is_err() {
                    input = None;
                }
            }
        }
    }
    drop(input);
    let res = match finish(run).await {
        Ok(res) => res,
        Err(e) => return notify(&mut tx, bad_message(e)).await,
    };
    for message in exits(&res, running) {
        send(&mut tx, message).await;
    }
    close(&mut tx, 4999, "Job Completed").await;
}

fn bad_message(e: ApiError) -> String {
    e.parts().1.error.message
}

fn compile_passed() -> Value {
    json!({"type": "exit", "stage": "compile", "code": 0, "signal": null})
}

/// The messages that end the job: the compile's exit if it was not announced yet (and the run
/// stage if the compile let it start), then the run's exit.
fn exits(res: &ExecuteResponse, running: bool) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(c) = &res.compile {
        if res.status == RunStatus::CompileError {
            let stage = super::compiled(c);
            out.push(exit("compile", &stage));
            return out;
        }
        if !running {
            out.push(compile_passed());
            out.push(json!({"type": "stage", "stage": "run"}));
        }
    }
    let run = super::answer("", "", res);
    out.push(exit("run", &run["run"]));
    out
}

fn exit(stage: &str, result: &Value) -> Value {
    json!({
        "type": "exit",
        "stage": stage,
        "code": result["code"],
        "signal": result["signal"],
        "status": result["status"],
        "message": result["message"],
    })
}
