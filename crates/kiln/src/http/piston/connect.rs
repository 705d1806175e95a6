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
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use kiln_api::ExecuteResponse;
use kiln_sandbox::{Input, LiveEvent, StreamKind};
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::ws::{self, Dialect, Ending, Holds, Incoming, Socket};
use super::super::AppState;
use super::{validate, PistonRequest};

/// How long Piston waits for `init`.
const INIT_WITHIN: Duration = Duration::from_secs(1);

/// `GET /api/v2/connect`.
pub(in crate::http) async fn connect(
    State(state): State<AppState>,
    holds: Option<Extension<Holds>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    ws::upgrade(upgrade, state, holds, session)
}

fn close(code: u16, reason: &'static str) -> Ending {
    Ending {
        messages: Vec::new(),
        code,
        reason,
    }
}

/// Piston's answer to a message it cannot take: the reason, then 4002.
fn notify(message: impl Into<String>) -> Ending {
    Ending {
        messages: vec![json!({"type": "error", "message": message.into()})],
        code: 4002,
        reason: "Notified Error",
    }
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

fn parse(msg: Incoming) -> Result<Client, String> {
    let v: Value = match msg {
        Incoming::Text(t) => serde_json::from_str(&t),
        Incoming::Binary(b) => serde_json::from_slice(&b),
    }
    .map_err(|e| e.to_string())?;
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

/// Piston's messages while the job runs.
struct Piston {
    /// Whether the run stage has been announced (at once when nothing is compiled, else when
    /// the compile succeeded).
    running: bool,
}

impl Dialect for Piston {
    fn event(&mut self, event: LiveEvent) -> Vec<Value> {
        match event {
            LiveEvent::Output(kind, bytes) => {
                let stream = match kind {
                    StreamKind::Stdout | StreamKind::CompileStdout => "stdout",
                    StreamKind::Stderr | StreamKind::CompileStderr => "stderr",
                };
                let data = String::from_utf8_lossy(&bytes);
                vec![json!({"type": "data", "stream": stream, "data": data})]
            }
            // A failed compile ends the job: its exit, with its status, comes from the result.
            LiveEvent::CompileExit(exit) if !exit.succeeded() => Vec::new(),
            LiveEvent::CompileExit(_) => {
                self.running = true;
                vec![
                    json!({"type": "exit", "stage": "compile", "code": 0, "signal": null,
                        "status": null, "message": null}),
                    json!({"type": "stage", "stage": "run"}),
                ]
            }
        }
    }

    fn input(&mut self, msg: Incoming) -> Result<Option<Input>, Ending> {
        match parse(msg) {
            Ok(Client::Stdin(d)) => Ok(Some(Input::Stdin(d.into_bytes()))),
            Ok(Client::Signal(Some(sig))) => Ok(Some(Input::Signal(sig))),
            Ok(Client::Signal(None)) => Err(close(4005, "Invalid signal")),
            Ok(Client::OtherStream) => Err(close(4004, "Can only write to stdin")),
            Ok(Client::Init(_)) => Err(close(4000, "Already Initialized")),
            Ok(Client::Ignored) => Ok(None),
            Err(e) => Err(notify(e)),
        }
    }

    fn refuse(&mut self, _code: &'static str, message: String) -> Ending {
        notify(message)
    }
}

async fn session(state: AppState, mut socket: Socket, holds: Option<Holds>) {
    let deadline = tokio::time::Instant::now() + INIT_WITHIN;
    // Until `init`: only it is taken.
    let req = loop {
        let msg = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return socket.end(close(4001, "Initialization Timeout")).await,
            Ok(None) => return,
            Ok(Some(m)) => m,
        };
        match parse(msg) {
            Ok(Client::Init(req)) => break req,
            Ok(Client::Stdin(_) | Client::OtherStream | Client::Signal(_)) => {
                return socket.end(close(4003, "Not yet initialized")).await
            }
            Ok(Client::Ignored) => continue,
            Err(e) => return socket.end(notify(e)).await,
        }
    };
    let received = Instant::now();
    let (spec, language, version) = match validate(&state, &req) {
        Ok(v) => v,
        Err(e) => return socket.end(notify(e.1)).await,
    };
    let compiled = spec.compile.is_some();
    let opening = [
        json!({"type": "runtime", "language": language, "version": version}),
        json!({"type": "stage", "stage": if compiled { "compile" } else { "run" }}),
    ];
    let mut piston = Piston { running: !compiled };
    let ran = ws::run(
        &mut socket,
        &mut piston,
        &state,
        spec,
        received,
        holds,
        &opening,
    );
    let Some(result) = ran.await else {
        return;
    };
    let ending = match result {
        Ok(res) => Ending {
            messages: exits(&res, piston.running),
            code: 4999,
            reason: "Job Completed",
        },
        Err(e) => notify(e.parts().1.error.message),
    };
    socket.end(ending).await;
}

/// The message that ends the job: the run's exit; or, when the run stage never began, the
/// compile's (it failed, or the backstop cut it short).
fn exits(res: &ExecuteResponse, running: bool) -> Vec<Value> {
    if running {
        return vec![exit("run", &super::ran(res))];
    }
    let compile = res
        .compile
        .as_ref()
        .map_or_else(|| super::ran(res), super::compiled);
    vec![exit("compile", &compile)]
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
