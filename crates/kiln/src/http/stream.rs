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
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use futures_util::{SinkExt, StreamExt};
use kiln_api::{ErrorBody, ExecSpec, ExecuteResponse};
use kiln_sandbox::{Input, Live, StreamKind};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::execute::{decode, read_body};
use super::AppState;

pub(super) type Run = JoinHandle<Result<ExecuteResponse, kiln_sandbox::Error>>;
pub(super) type Output = mpsc::UnboundedReceiver<(StreamKind, Vec<u8>)>;

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
    let run = tokio::spawn(async move { executor.execute_live(spec, received, Some(live)).await });
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

pub(super) fn name(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
        StreamKind::CompileStdout => "compile_stdout",
        StreamKind::CompileStderr => "compile_stderr",
    }
}

pub(super) async fn execute_stream(
    State(state): State<AppState>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let received = Instant::now();
    let bytes = read_body(body, &state).await?;
    let spec = decode(&bytes)?.validate_with(&state.inner.policy, &state.inner.catalog)?;
    let (rx, _, run) = start(&state, spec, received, false);
    let events = stream::unfold(Phase::Output(rx, run), |phase| async move {
        match phase {
            Phase::Output(mut rx, run) => match rx.recv().await {
                Some((kind, bytes)) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let ev = Event::default()
                        .event(name(kind))
                        .data(json!({ "text": text }).to_string());
                    Some((ev, Phase::Output(rx, run)))
                }
                None => Some((sse_result(finish(run).await), Phase::Done)),
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

/// The upgrade, or Kiln's JSON error for a request that is not a WebSocket handshake.
pub(super) fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    state: &AppState,
) -> Result<WebSocketUpgrade, ApiError> {
    let ws = ws.map_err(|e| ApiError::NotWebSocket(e.body_text()))?;
    // A message is at most a request body (plus its JSON envelope).
    let max = state.inner.max_body_bytes.saturating_mul(2).max(1 << 16);
    Ok(ws.max_message_size(max).max_frame_size(max))
}

/// `GET /api/v1/execute/ws`.
pub(super) async fn execute_ws(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = upgrade(ws, &state)?;
    let sessions = state.sessions().clone();
    Ok(ws.on_upgrade(move |socket| sessions.track_future(session(state, socket))))
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

fn error_message(code: &str, message: impl Into<String>) -> Message {
    error_body(ErrorBody::new(code, message))
}

fn error_body(body: ErrorBody) -> Message {
    let mut v = serde_json::to_value(body).expect("serialisable");
    v["type"] = json!("error");
    Message::text(v.to_string())
}

/// One WebSocket run: the request, output and input while it runs, the result.
async fn session(state: AppState, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let within = state.inner.body_timeout;
    let received = Instant::now();
    // The request: the first message, within the time a request body has.
    let first = match tokio::time::timeout(within, rx.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.as_bytes().to_vec(),
        Ok(Some(Ok(Message::Binary(b)))) => b.to_vec(),
        Ok(Some(Ok(_))) => {
            let msg = error_message("invalid_message", "the first message must be the request");
            return end(&mut tx, msg).await;
        }
        Ok(_) => return,
        Err(_) => {
            let e = ApiError::BodyTimeout(within);
            return end(&mut tx, error_body(e.parts().1)).await;
        }
    };
    let spec = match decode(&first)
        .and_then(|r| Ok(r.validate_with(&state.inner.policy, &state.inner.catalog)?))
    {
        Ok(spec) => spec,
        Err(e) => return end(&mut tx, error_body(e.parts().1)).await,
    };
    let (mut output, input, run) = start(&state, spec, received, true);
    let mut input = input;
    let max_stdin = state.inner.max_body_bytes;
    let mut stdin_sent = 0usize;
    loop {
        tokio::select! {
            chunk = output.recv() => {
                let Some((kind, bytes)) = chunk else { break };
                let text = String::from_utf8_lossy(&bytes);
                let msg = json!({"type": name(kind), "text": text}).to_string();
                if tx.send(Message::text(msg)).await.is_err() {
                    // The client is gone; the run goes on to its end without it.
                    return;
                }
            }
            msg = rx.next(), if input.is_some() => {
                let item = match msg {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                        Ok(m) => client_input(m),
                        Err(e) => Err(format!("not a message this session takes: {e}")),
                    },
                    Some(Ok(Message::Binary(b))) => Ok(Some(Input::Stdin(b.to_vec()))),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
                    // The client closed its side or went away: that is the end of stdin.
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        input = None;
                        continue;
                    }
                };
                let item = match item {
                    Ok(Some(item)) => item,
                    Ok(None) => continue,
                    Err(message) => return end(&mut tx, error_message("invalid_message", message)).await,
                };
                if let Input::Stdin(b) = &item {
                    stdin_sent += b.len();
                    if stdin_sent > max_stdin {
                        let message = format!("stdin past {max_stdin} bytes in all");
                        return end(&mut tx, error_message("stdin_too_large", message)).await;
                    }
                }
                let eof = item == Input::StdinEof;
                let sender = input.as_ref().expect("checked by the branch");
                if sender.send(item).await.is_err() || eof {
                    input = None;
                }
            }
        }
    }
    drop(input);
    let last = match finish(run).await {
        Ok(res) => Message::text(json!({"type": "result", "result": res}).to_string()),
        Err(e) => error_body(e.parts().1),
    };
    end(&mut tx, last).await;
}

/// The input a client message asks for; `Ok(None)` for nothing to do.
fn client_input(m: ClientMessage) -> Result<Option<Input>, String> {
    use base64::Engine as _;
    Ok(Some(match m {
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
    }))
}

/// Sends the last message and closes normally; a client already gone is not an error.
async fn end(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, last: Message) {
    let _ = tx.send(last).await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}
