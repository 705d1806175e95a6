//! Runs watched as they go.
//!
//! `POST /api/v1/execute/stream`: the same request as `/api/v1/execute`, answered as a stream
//! of server-sent events — `stdout`, `stderr` (and `compile_stdout`, `compile_stderr`) as the
//! program writes, each `{"text": …}`, then one `result` with the same object as
//! `/api/v1/execute` (or one `error` with the same error body). A request that fails
//! validation is answered as `/api/v1/execute` would, before any stream.
//!
//! `GET /api/v1/execute/ws`: the same as a WebSocket that also takes stdin while the program
//! runs. The client's first message is the request; the server then sends
//! `{"type": "stdout", "text": …}` (and `stderr`, `compile_stdout`, `compile_stderr`) as the
//! program writes, and ends with `{"type": "result", "result": {…}}` or
//! `{"type": "error", "error": {…}}` and a normal close. Meanwhile the client may send
//! `{"type": "stdin", "text": …}` (or `"base64": …`, or a binary message of raw bytes),
//! `{"type": "stdin_eof"}` and `{"type": "signal", "signal": "SIGINT"}`. The request's own
//! `stdin` comes first; stdin stays open until `stdin_eof` or until the client goes away. A run
//! whose client goes away goes on to its end, as for `/api/v1/execute`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{self, Stream};
use kiln_api::{ErrorBody, ExecSpec, ExecuteResponse};
use kiln_sandbox::{Input, Live, LiveEvent, StreamKind};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::execute::{decode, read_body};
use super::ws::{self, Dialect, Ending, Holds, Incoming, Socket};
use super::AppState;

type Run = JoinHandle<Result<ExecuteResponse, kiln_sandbox::Error>>;
pub(super) type Output = mpsc::UnboundedReceiver<LiveEvent>;

/// Input messages a session may have waiting before it stops reading the client.
const INPUT_QUEUE: usize = 16;

/// Starts `spec` in a task of its own (a client that goes away never stops a run halfway),
/// with its output sent to the returned receiver as produced. With `interactive`, the
/// returned sender feeds the program's stdin while it runs; dropping it ends stdin.
pub(super) fn start(
    state: &AppState,
    spec: ExecSpec,
    received: Instant,
    interactive: bool,
    holds: Option<Holds>,
) -> (Output, Option<mpsc::Sender<Input>>, Run) {
    let (tap, output) = mpsc::unbounded_channel();
    let (input_tx, input) = if interactive {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        (Some(tx), Some(Arc::new(tokio::sync::Mutex::new(rx))))
    } else {
        (None, None)
    };
    let executor = state.executor().clone();
    let live = Live { tap, input };
    // The run holds its request's connection slot and key quota until it ends.
    let run = tokio::spawn(async move {
        let _holds = holds;
        executor.execute_live(spec, received, Some(live)).await
    });
    (output, input_tx, run)
}

/// The run's answer once it has ended.
pub(super) async fn finish(run: Run) -> Result<ExecuteResponse, ApiError> {
    match run.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("run task failed: {e}"))),
    }
}

enum Phase {
    Output(Output, Run),
    Done,
}

fn name(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
        StreamKind::CompileStdout => "compile_stdout",
        StreamKind::CompileStderr => "compile_stderr",
    }
}

pub(super) async fn execute_stream(
    State(state): State<AppState>,
    holds: Option<Extension<Holds>>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let received = Instant::now();
    let bytes = read_body(body, &state).await?;
    let spec = decode(&bytes)?.validate_with(&state.inner.policy, &state.inner.catalog)?;
    let holds = holds.map(|Extension(h)| h);
    let (rx, _, run) = start(&state, spec, received, false, holds);
    let events = stream::unfold(Phase::Output(rx, run), |phase| async move {
        match phase {
            Phase::Output(mut rx, run) => loop {
                match rx.recv().await {
                    Some(LiveEvent::Output(kind, bytes)) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let ev = Event::default()
                            .event(name(kind))
                            .data(json!({ "text": text }).to_string());
                        break Some((ev, Phase::Output(rx, run)));
                    }
                    Some(LiveEvent::CompileExit(_)) => continue,
                    None => break Some((sse_result(finish(run).await), Phase::Done)),
                }
            },
            Phase::Done => None,
        }
    });
    Ok(Sse::new(ok(events)).keep_alive(KeepAlive::default()))
}

fn ok(s: impl Stream<Item = Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::StreamExt::map(s, Ok)
}

fn sse_result(result: Result<ExecuteResponse, ApiError>) -> Event {
    match result {
        Ok(res) => Event::default()
            .event("result")
            .data(serde_json::to_string(&res).expect("serialisable")),
        Err(e) => {
            let (_, body, _) = e.parts();
            Event::default()
                .event("error")
                .data(serde_json::to_string(&body).expect("serialisable"))
        }
    }
}

/// `GET /api/v1/execute/ws`.
pub(super) async fn execute_ws(
    State(state): State<AppState>,
    holds: Option<Extension<Holds>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    ws::upgrade(upgrade, state, holds, session)
}

/// What a client may send once its run has started.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Stdin {
        text: Option<String>,
        base64: Option<String>,
    },
    StdinEof,
    Signal {
        signal: Value,
    },
}

fn error_json(body: ErrorBody) -> Value {
    let mut v = serde_json::to_value(body).expect("serialisable");
    v["type"] = json!("error");
    v
}

/// A session's end with Kiln's error body, then a normal close.
fn ending(body: ErrorBody) -> Ending {
    Ending {
        messages: vec![error_json(body)],
        code: axum::extract::ws::close_code::NORMAL,
        reason: "",
    }
}

/// Kiln's own messages.
struct Kiln;

impl Dialect for Kiln {
    fn event(&mut self, event: LiveEvent) -> Vec<Value> {
        match event {
            LiveEvent::Output(kind, bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                vec![json!({"type": name(kind), "text": text})]
            }
            LiveEvent::CompileExit(_) => Vec::new(),
        }
    }

    fn input(&mut self, msg: Incoming) -> Result<Option<Input>, Ending> {
        let m = match msg {
            Incoming::Binary(b) => return Ok(Some(Input::Stdin(b))),
            Incoming::Text(t) => serde_json::from_str(&t).map_err(|e| {
                self.refuse(
                    "invalid_message",
                    format!("not a message this session takes: {e}"),
                )
            })?,
        };
        client_input(m)
            .map(Some)
            .map_err(|e| self.refuse("invalid_message", e))
    }

    fn refuse(&mut self, code: &'static str, message: String) -> Ending {
        ending(ErrorBody::new(code, message))
    }
}

/// One WebSocket run: the request, output and input while it runs, the result.
async fn session(state: AppState, mut socket: Socket, holds: Option<Holds>) {
    let within = state.inner.body_timeout;
    // The request: the first message, within the time a request body has.
    let first = match tokio::time::timeout(within, socket.next()).await {
        Ok(Some(Incoming::Text(t))) => t.into_bytes(),
        Ok(Some(Incoming::Binary(b))) => b,
        Ok(None) => return,
        Err(_) => {
            return socket
                .end(ending(ApiError::BodyTimeout(within).parts().1))
                .await
        }
    };
    let received = Instant::now();
    let spec = match decode(&first)
        .and_then(|r| Ok(r.validate_with(&state.inner.policy, &state.inner.catalog)?))
    {
        Ok(spec) => spec,
        Err(e) => return socket.end(ending(e.parts().1)).await,
    };
    let Some(result) = ws::run(&mut socket, &mut Kiln, &state, spec, received, holds, &[]).await
    else {
        return;
    };
    let last = match result {
        Ok(res) => json!({"type": "result", "result": res}),
        Err(e) => error_json(e.parts().1),
    };
    socket
        .end(Ending {
            messages: vec![last],
            code: axum::extract::ws::close_code::NORMAL,
            reason: "",
        })
        .await;
}

/// The input a client message asks for.
fn client_input(m: ClientMessage) -> Result<Input, String> {
    use base64::Engine as _;
    Ok(match m {
        ClientMessage::Stdin {
            text: Some(t),
            base64: None,
        } => Input::Stdin(t.into_bytes()),
        ClientMessage::Stdin {
            text: None,
            base64: Some(b),
        } => Input::Stdin(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("stdin.base64 is not base64: {e}"))?,
        ),
        ClientMessage::Stdin { .. } => return Err("stdin needs one of text and base64".into()),
        ClientMessage::StdinEof => Input::StdinEof,
        ClientMessage::Signal { signal } => {
            let n = match &signal {
                Value::String(s) => kiln_api::signal_number(s),
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|n| (1..=64).contains(n)),
                _ => None,
            };
            Input::Signal(n.ok_or_else(|| format!("{signal} is not a signal"))?)
        }
    })
}
