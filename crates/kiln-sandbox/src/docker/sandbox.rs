use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::query_parameters::{KillContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::{FutureExt, Stream, StreamExt};
use kiln_proto::{Event, ExitReport, FrameDecoder, Job, Status, MAX_EVENT_FRAME};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{info, warn, Instrument, Span};

use super::{engine_error, short, DockerConfig};
use crate::{Collected, Error, Result, RunOutcome, Sandbox};

/// kiln-init's own diagnostics (its stderr) kept for the error message of a failed run.
const MAX_DIAGNOSTICS: usize = 4096;
const SIGKILL: i32 = 9;

/// Removes its container when dropped, in the background, on every path: a finished run, an
/// error, a timeout, or a request future dropped because the client went away.
#[derive(Debug)]
pub(crate) struct RemoveGuard {
    docker: Docker,
    id: String,
    span: Span,
    runtime: tokio::runtime::Handle,
}

impl RemoveGuard {
    pub(crate) fn new(docker: Docker, id: String, span: Span) -> Self {
        RemoveGuard {
            docker,
            id,
            span,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        let task = async move {
            info!("removing");
            for attempt in 1..=3u32 {
                let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                match docker.remove_container(&id, Some(opts)).await {
                    Ok(()) => return,
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return,
                    Err(e) => {
                        warn!(attempt, error = %e, "removal failed");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                }
            }
            warn!("giving up on removal; the next gateway start removes it");
        };
        self.runtime.spawn(task.instrument(self.span.clone()));
    }
}

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A started Docker container whose kiln-init waits for its job.
pub struct DockerSandbox {
    guard: RemoveGuard,
    output: Output,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    config: Arc<DockerConfig>,
}

impl std::fmt::Debug for DockerSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSandbox")
            .field("id", &self.guard.id)
            .finish()
    }
}

impl DockerSandbox {
    pub(crate) fn new(
        guard: RemoveGuard,
        attached: AttachContainerResults,
        config: Arc<DockerConfig>,
    ) -> Self {
        DockerSandbox {
            guard,
            output: attached.output,
            input: attached.input,
            config,
        }
    }

    async fn run_inner(mut self, job: Job) -> Result<RunOutcome> {
        let id = self.guard.id.clone();
        let frame = job.to_frame();
        let t0 = Instant::now();
        self.input
            .write_all(&frame)
            .await
            .and(self.input.flush().await)
            .map_err(|e| Error::Lost {
                id: id.clone(),
                detail: format!("cannot write the job: {e}"),
            })?;
        info!(bytes = frame.len(), "payload written");

        let backstop = Duration::from_millis(job.timeout_ms) + self.config.kill_grace;
        let deadline = tokio::time::Instant::from_std(t0) + backstop;
        let mut decoder = FrameDecoder::new(MAX_EVENT_FRAME);
        let (mut stdout, mut stderr) = (Collected::default(), Collected::default());
        let mut diagnostics = Vec::new();
        let mut frames = 0usize;
        let protocol = |detail: String| Error::Protocol {
            id: id.clone(),
            detail,
        };
        loop {
            let item = match tokio::time::timeout_at(deadline, self.output.next()).await {
                Ok(item) => item,
                Err(_) => {
                    warn!(
                        backstop_ms = backstop.as_millis() as u64,
                        "no exit frame in time; killing the sandbox"
                    );
                    let opts = KillContainerOptionsBuilder::default()
                        .signal("KILL")
                        .build();
                    if let Err(e) = self.guard.docker.kill_container(&id, Some(opts)).await {
                        warn!(error = %e, "backstop kill failed");
                    }
                    let exit = ExitReport {
                        status: Status::Timeout,
                        signal: Some(SIGKILL),
                        ..ExitReport::default()
                    };
                    return Ok(outcome(stdout, stderr, exit, t0));
                }
            };
            match item {
                None => break,
                Some(Err(e)) if frames == 0 => {
                    return Err(Error::Lost {
                        id: id.clone(),
                        detail: e.to_string(),
                    })
                }
                Some(Err(e)) => return Err(engine_error("read output", &id, e)),
                Some(Ok(LogOutput::StdOut { message })) => {
                    decoder.push(&message);
                    while let Some((kind, payload)) =
                        decoder.next_frame().map_err(|e| protocol(e.to_string()))?
                    {
                        frames += 1;
                        match Event::decode(kind, &payload).map_err(|e| protocol(e.to_string()))? {
                            Event::Stdout(b) => {
                                stdout.push(&b, stderr.bytes.len(), job.output_bytes)
                            }
                            Event::Stderr(b) => {
                                stderr.push(&b, stdout.bytes.len(), job.output_bytes)
                            }
                            Event::Exit(exit) => {
                                info!(
                                    exit_code = ?exit.code,
                                    signal = ?exit.signal,
                                    status = exit.status.as_str(),
                                    run_ms = t0.elapsed().as_secs_f64() * 1e3,
                                    "executed"
                                );
                                return Ok(outcome(stdout, stderr, exit, t0));
                            }
                        }
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    let room = MAX_DIAGNOSTICS.saturating_sub(diagnostics.len());
                    diagnostics.extend_from_slice(&message[..message.len().min(room)]);
                }
                Some(Ok(_)) => {}
            }
        }

        // The stream ended without an exit frame: kiln-init itself died. The OOM killer is the
        // usual culprit (a tmpfs filled with the memory limit, say); Docker knows.
        let oom_killed = self
            .guard
            .docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        if oom_killed {
            warn!("kiln-init was OOM-killed");
            let exit = ExitReport {
                status: Status::Oom,
                signal: Some(SIGKILL),
                ..ExitReport::default()
            };
            return Ok(outcome(stdout, stderr, exit, t0));
        }
        let said = String::from_utf8_lossy(&diagnostics);
        if frames == 0 && diagnostics.is_empty() {
            return Err(Error::Lost {
                id: id.clone(),
                detail: "the sandbox ended before answering".into(),
            });
        }
        Err(protocol(format!(
            "sandbox ended without an exit frame; kiln-init said: {:?}",
            said.trim()
        )))
    }
}

fn outcome(stdout: Collected, stderr: Collected, exit: ExitReport, t0: Instant) -> RunOutcome {
    RunOutcome {
        stdout,
        stderr,
        exit,
        elapsed: t0.elapsed(),
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn id(&self) -> &str {
        short(&self.guard.id)
    }

    fn is_alive(&mut self) -> bool {
        // Nothing arrives on a waiting sandbox's stream: any item, or its end, means the
        // container died or the attach broke. Polled once, never awaited.
        self.output.next().now_or_never().is_none()
    }

    async fn run(self: Box<Self>, job: Job) -> Result<RunOutcome> {
        let span = self.guard.span.clone();
        self.run_inner(job).instrument(span).await
    }
}
