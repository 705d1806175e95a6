//! `POST /api/v1/execute/stream`: the same request as `/api/v1/execute`, answered as a stream
//! of server-sent events — `stdout`, `stderr` (and `compile_stdout`, `compile_stderr`) as the
//! program writes, each `{"text": …}`, then one `result` with the same object as
//! `/api/v1/execute` (or one `error` with the same error body). A request that fails
//! validation is answered as `/api/v1/execute` would, before any stream.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream::{self, Stream};
use kiln_sandbox::StreamKind;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::execute::{decode, read_body};
use super::AppState;

type Run = JoinHandle<Result<kiln_api::ExecuteResponse, kiln_sandbox::Error>>;

enum Phase {
    Output(mpsc::UnboundedReceiver<(StreamKind, Vec<u8>)>, Run),
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
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let received = Instant::now();
    let bytes = read_body(body, &state).await?;
    let spec = decode(&bytes)?.validate_with(&state.inner.policy, &state.inner.catalog)?;
    let (tap, rx) = mpsc::unbounded_channel();
    let executor = state.executor().clone();
    // Its own task, as for /api/v1/execute: a client that goes away never stops a run halfway.
    let run: Run =
        tokio::spawn(async move { executor.execute_tapped(spec, received, Some(tap)).await });
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
                None => Some((finish(run).await, Phase::Done)),
            },
            Phase::Done => None,
        }
    });
    Ok(Sse::new(ok(events)).keep_alive(KeepAlive::default()))
}

fn ok(s: impl Stream<Item = Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::StreamExt::map(s, Ok)
}

async fn finish(run: Run) -> Event {
    let result = match run.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("run task failed: {e}"))),
    };
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
