//! What the WebSocket endpoints (`/api/v1/execute/ws`, Piston's `/api/v2/connect`) share: the
//! handshake, what a session holds while it lasts, and the relay between a running program and
//! its client. Each endpoint is a [`Dialect`]: its own messages over the same relay.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::Extension;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kiln_api::{ExecSpec, ExecuteResponse};
use kiln_sandbox::{Input, LiveEvent};
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::stream::{finish, start, Output};
use super::AppState;

/// How long one message to the client may take: a client that stops reading ends its session
/// rather than holding it (and the output queued for it) forever.
const SEND_WITHIN: Duration = Duration::from_secs(30);

/// What a request holds while it is served (its connection's slot, its API key's quota). A
/// WebSocket session takes them over, so that it counts as the request it started as for as
/// long as it lasts. The layers that grant them add theirs; the handshake's handler takes the
/// lot.
#[derive(Clone, Default)]
pub(crate) struct Holds(Arc<Mutex<Vec<Arc<dyn Send + Sync>>>>);

impl Holds {
    pub(crate) fn new(first: Arc<dyn Send + Sync>) -> Self {
        Holds(Arc::new(Mutex::new(vec![first])))
    }

    pub(crate) fn add(&self, held: Arc<dyn Send + Sync>) {
        self.0.lock().expect("not poisoned").push(held);
    }
}

/// The upgrade to a session run by `session`, tracked so that a graceful stop waits for it, and
/// holding what the handshake's request held (`session` gets them too, for its run); or Kiln's
/// JSON error for a request that is not a WebSocket handshake.
pub(super) fn upgrade<Fut>(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    state: AppState,
    holds: Option<Extension<Holds>>,
    session: fn(AppState, Socket, Option<Holds>) -> Fut,
) -> Result<Response, ApiError>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let ws = ws.map_err(|e| ApiError::NotWebSocket(e.body_text()))?;
    // A message is at most a request body (plus its JSON envelope).
    let max = state.inner.max_body_bytes.saturating_mul(2).max(1 << 16);
    // Taken now, before the response: the stop's wait cannot miss a session about to start.
    let tracked = state.sessions().token();
    let holds = holds.map(|Extension(h)| h);
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _tracked = tracked;
            let (tx, rx) = socket.split();
            session(state, Socket { tx, rx }, holds).await;
        }))
}

/// A client's message: its text (a binary message's bytes for `Binary`).
pub(super) enum Incoming {
    Text(String),
    Binary(Vec<u8>),
}

/// How a session ends early: its last messages, then a close with `code` and `reason`.
pub(super) struct Ending {
    pub messages: Vec<Value>,
    pub code: u16,
    pub reason: &'static str,
}

pub(super) struct Socket {
    tx: SplitSink<WebSocket, Message>,
    rx: SplitStream<WebSocket>,
}

impl Socket {
    /// Whether the message went out in time; a client gone or not reading is `false`.
    pub async fn send(&mut self, v: &Value) -> bool {
        let msg = Message::text(v.to_string());
        matches!(
            tokio::time::timeout(SEND_WITHIN, self.tx.send(msg)).await,
            Ok(Ok(()))
        )
    }

    /// The client's next text or binary message; `None` once it has closed or gone.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            return match self.rx.next().await? {
                Ok(Message::Text(t)) => Some(Incoming::Text(t.to_string())),
                Ok(Message::Binary(b)) => Some(Incoming::Binary(b.to_vec())),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => None,
            };
        }
    }

    /// Sends the last messages and closes.
    pub async fn end(&mut self, ending: Ending) {
        for m in &ending.messages {
            if !self.send(m).await {
                return;
            }
        }
        let frame = CloseFrame {
            code: ending.code,
            reason: ending.reason.into(),
        };
        let close = self.tx.send(Message::Close(Some(frame)));
        let _ = tokio::time::timeout(SEND_WITHIN, close).await;
    }
}

/// One endpoint's messages.
pub(super) trait Dialect: Send {
    /// The messages for an event of the run.
    fn event(&mut self, event: LiveEvent) -> Vec<Value>;
    /// What a client message asks for (`None`: nothing); `Err` ends the session.
    fn input(&mut self, msg: Incoming) -> Result<Option<Input>, Ending>;
    /// The session's end when the client asks for something the run cannot take.
    fn refuse(&mut self, code: &'static str, message: String) -> Ending;
}

/// Runs `spec` for the session, interactively: `opening` messages first, then the relay (see
/// [`relay`]); the run's answer, or `None` when the session ended before it (the client went
/// away, or the dialect ended it: nothing more is sent then). Either way the session lasts as
/// long as its run, which keeps its place in the quota.
pub(super) async fn run(
    socket: &mut Socket,
    dialect: &mut impl Dialect,
    state: &AppState,
    spec: ExecSpec,
    received: Instant,
    holds: Option<Holds>,
    opening: &[Value],
) -> Option<Result<ExecuteResponse, ApiError>> {
    let stdin_sent = spec.stdin.len();
    let (output, input, run) = start(state, spec, received, true, holds);
    let input = input.expect("an interactive run has an input");
    let mut open = true;
    for m in opening {
        if !socket.send(m).await {
            open = false;
            break;
        }
    }
    let max_stdin = state.inner.max_body_bytes;
    let relayed = open && relay(socket, dialect, output, input, stdin_sent, max_stdin).await;
    let result = finish(run).await;
    relayed.then_some(result)
}

/// Relays the run's events to the client and the client's input to the run until the run's
/// events end (`true`), or the session ends first (`false`: the client went away, or the
/// dialect ended it; nothing more is sent then). The client's stdin counts from `stdin_sent`
/// and may not pass `max_stdin`.
///
/// The client is read only while the run's input queue has room: input the program does not
/// take never holds up its output. When the client goes away, the run's stdin ends and the run
/// goes on to its end without it.
async fn relay(
    socket: &mut Socket,
    dialect: &mut impl Dialect,
    mut output: Output,
    input: mpsc::Sender<Input>,
    mut stdin_sent: usize,
    max_stdin: usize,
) -> bool {
    let mut reading = true;
    let mut stdin_open = true;
    loop {
        let room = input.capacity() > 0;
        tokio::select! {
            event = output.recv() => {
                let Some(event) = event else { return true };
                for m in dialect.event(event) {
                    if !socket.send(&m).await {
                        return false;
                    }
                }
            }
            msg = socket.next(), if reading && room => {
                let item = match msg {
                    None => {
                        reading = false;
                        Some(Input::StdinEof)
                    }
                    Some(msg) => match dialect.input(msg) {
                        Ok(item) => item,
                        Err(ending) => {
                            socket.end(ending).await;
                            return false;
                        }
                    },
                };
                let refusal = match &item {
                    Some(Input::Stdin(_)) if !stdin_open => {
                        Some(("invalid_message", "stdin has ended already".to_owned()))
                    }
                    Some(Input::Stdin(b)) => {
                        stdin_sent += b.len();
                        (stdin_sent > max_stdin).then(|| {
                            ("stdin_too_large", format!("stdin past {max_stdin} bytes in all"))
                        })
                    }
                    _ => None,
                };
                if let Some((code, message)) = refusal {
                    socket.end(dialect.refuse(code, message)).await;
                    return false;
                }
                match item {
                    Some(Input::StdinEof) if !stdin_open => {}
                    Some(item) => {
                        stdin_open &= item != Input::StdinEof;
                        // Room was checked; a full or closed queue means the run is over.
                        if input.try_send(item).is_err() {
                            reading = false;
                        }
                    }
                    None => {}
                }
            }
            permit = input.reserve(), if reading && !room => {
                // There is room again and the next turn reads the client; or the run is over.
                reading = permit.is_ok();
            }
        }
    }
}
