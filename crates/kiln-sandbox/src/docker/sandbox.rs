use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::query_parameters::{KillContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::{FutureExt, Stream, StreamExt};
use kiln_proto::{Event, ExitReport, FrameDecoder, Job, Status, MAX_EVENT_FRAME};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{info, warn, Instrument, Span};

use super::{short, DockerConfig};
use crate::{Collected, Error, OutputTap, Result, RunOutcome, Sandbox, StageOutcome, StreamKind};

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
    stats: Arc<RemovalStats>,
}

/// Background removals: in flight, done, and given up on.
#[derive(Debug, Default)]
pub(crate) struct RemovalStats {
    pub pending: AtomicUsize,
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

impl RemoveGuard {
    pub(crate) fn new(docker: Docker, id: String, span: Span, stats: Arc<RemovalStats>) -> Self {
        RemoveGuard {
            docker,
            id,
            span,
            runtime: tokio::runtime::Handle::current(),
            stats,
        }
    }
}

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        let stats = self.stats.clone();
        stats.pending.fetch_add(1, Ordering::SeqCst);
        let task = async move {
            info!("removing");
            let counter = if remove(&docker, &id).await {
                &stats.done
            } else {
                &stats.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            stats.pending.fetch_sub(1, Ordering::SeqCst);
        };
        self.runtime.spawn(task.instrument(self.span.clone()));
    }
}

/// Force-removes a container, retrying a transient failure; a missing container is done.
/// Whether it is gone.
async fn remove(docker: &Docker, id: &str) -> bool {
    for attempt in 1..=3u32 {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(id, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return true,
            Err(e) => {
                warn!(attempt, error = %e, "removal failed");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    warn!("giving up on removal; the next gateway start removes it");
    false
}

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// How frames travel between the gateway and kiln-init.
pub(crate) enum Channel {
    /// The container's stdin and stdout, attached through the engine.
    Attach {
        output: Output,
        input: Pin<Box<dyn AsyncWrite + Send>>,
    },
    /// A unix socket straight to kiln-init.
    Socket(UnixStream),
}

/// What arrived on a channel: bytes of kiln-init's frame stream, or its own diagnostics.
enum Chunk {
    Frames(Vec<u8>),
    Diagnostics(Vec<u8>),
}

impl Channel {
    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            Channel::Attach { input, .. } => {
                input.write_all(frame).await?;
                input.flush().await
            }
            Channel::Socket(s) => s.write_all(frame).await,
        }
    }

    /// The next chunk; `None` when the channel ended.
    async fn next(&mut self) -> Option<Result<Chunk, String>> {
        match self {
            Channel::Attach { output, .. } => loop {
                match output.next().await? {
                    Ok(LogOutput::StdOut { message }) => {
                        return Some(Ok(Chunk::Frames(message.to_vec())))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        return Some(Ok(Chunk::Diagnostics(message.to_vec())))
                    }
                    Ok(_) => {}
                    Err(e) => return Some(Err(e.to_string())),
                }
            },
            Channel::Socket(s) => {
                let mut buf = vec![0u8; 64 * 1024];
                match s.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(Ok(Chunk::Frames(buf)))
                    }
                    Err(e) => Some(Err(e.to_string())),
                }
            }
        }
    }

    /// Nothing arrives on a waiting sandbox's channel: any data, or its end, means the
    /// container died or the channel broke. Checked without waiting.
    fn is_alive(&mut self) -> bool {
        match self {
            Channel::Attach { output, .. } => output.next().now_or_never().is_none(),
            Channel::Socket(s) => matches!(
                s.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ),
        }
    }
}

/// A started Docker container whose kiln-init waits for its job.
pub struct DockerSandbox {
    guard: RemoveGuard,
    channel: Channel,
    config: Arc<DockerConfig>,
    image_id: Option<String>,
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
        channel: Channel,
        config: Arc<DockerConfig>,
        image_id: Option<String>,
    ) -> Self {
        DockerSandbox {
            guard,
            channel,
            config,
            image_id,
        }
    }

    /// The last lines kiln-init wrote on its stderr, from the engine's log (socket channel).
    async fn logged_diagnostics(docker: &Docker, id: &str) -> Vec<u8> {
        use bollard::query_parameters::LogsOptionsBuilder;
        let opts = LogsOptionsBuilder::default()
            .stderr(true)
            .stdout(true)
            .tail("20")
            .build();
        let mut logs = docker.logs(id, Some(opts));
        let mut out = Vec::new();
        while let Some(Ok(item)) = logs.next().await {
            out.extend_from_slice(&item.into_bytes());
            if out.len() > MAX_DIAGNOSTICS {
                break;
            }
        }
        out
    }

    async fn run_inner(mut self, job: Job, tap: Option<OutputTap>) -> Result<RunOutcome> {
        // A listener that went away stops nothing: the run goes on and is answered as usual.
        let send = |kind: StreamKind, kept: &[u8]| {
            if let (Some(tap), false) = (&tap, kept.is_empty()) {
                let _ = tap.send((kind, kept.to_vec()));
            }
        };
        let id = self.guard.id.clone();
        let frame = job.to_frame();
        let t0 = Instant::now();
        self.channel.send(&frame).await.map_err(|e| Error::Lost {
            id: id.clone(),
            detail: format!("cannot write the job: {e}"),
        })?;
        info!(bytes = frame.len(), "payload written");

        let compile_ms = job.compile.as_ref().map_or(0, |c| c.timeout_ms);
        let backstop = Duration::from_millis(job.timeout_ms + compile_ms) + self.config.kill_grace;
        let mut compile: Option<StageOutcome> = None;
        let (mut c_out, mut c_err) = (Collected::default(), Collected::default());
        let deadline = tokio::time::Instant::from_std(t0) + backstop;
        let mut decoder = FrameDecoder::new(MAX_EVENT_FRAME);
        let (mut stdout, mut stderr) = (Collected::default(), Collected::default());
        let mut diagnostics = Vec::new();
        let protocol = |detail: String| Error::Protocol {
            id: id.clone(),
            detail,
        };
        loop {
            let item = match tokio::time::timeout_at(deadline, self.channel.next()).await {
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
                    return Ok(outcome(stdout, stderr, exit, t0, compile));
                }
            };
            match item {
                None => break,
                // A reset is the other end dying mid-stream (the container killed, say): judged
                // below like a stream that ended, not as a protocol fault.
                Some(Err(e)) => {
                    warn!(error = %e, "the channel broke");
                    break;
                }
                Some(Ok(Chunk::Frames(message))) => {
                    decoder.push(&message);
                    while let Some((kind, payload)) =
                        decoder.next_frame().map_err(|e| protocol(e.to_string()))?
                    {
                        match Event::decode(kind, &payload).map_err(|e| protocol(e.to_string()))? {
                            Event::Stdout(b) => send(
                                StreamKind::Stdout,
                                stdout.push(&b, stderr.bytes.len(), job.output_bytes),
                            ),
                            Event::Stderr(b) => send(
                                StreamKind::Stderr,
                                stderr.push(&b, stdout.bytes.len(), job.output_bytes),
                            ),
                            Event::Exit(exit) => {
                                info!(
                                    exit_code = ?exit.code,
                                    signal = ?exit.signal,
                                    status = exit.status.as_str(),
                                    run_ms = t0.elapsed().as_secs_f64() * 1e3,
                                    program_ms = exit.run_us as f64 / 1e3,
                                    "executed"
                                );
                                return Ok(outcome(stdout, stderr, exit, t0, compile));
                            }
                            Event::CompileStdout(b) => send(
                                StreamKind::CompileStdout,
                                c_out.push(&b, c_err.bytes.len(), job.output_bytes),
                            ),
                            Event::CompileStderr(b) => send(
                                StreamKind::CompileStderr,
                                c_err.push(&b, c_out.bytes.len(), job.output_bytes),
                            ),
                            Event::CompileExit(exit) => {
                                let failed = !exit.succeeded();
                                compile = Some(StageOutcome {
                                    stdout: std::mem::take(&mut c_out),
                                    stderr: std::mem::take(&mut c_err),
                                    exit,
                                    elapsed: t0.elapsed(),
                                });
                                if failed {
                                    // kiln-init ends the job here: nothing ran.
                                    info!("compile failed; no run");
                                    return Ok(outcome(
                                        stdout,
                                        stderr,
                                        ExitReport::default(),
                                        t0,
                                        compile,
                                    ));
                                }
                            }
                        }
                    }
                }
                Some(Ok(Chunk::Diagnostics(message))) => {
                    let room = MAX_DIAGNOSTICS.saturating_sub(diagnostics.len());
                    diagnostics.extend_from_slice(&message[..message.len().min(room)]);
                }
            }
        }
        if diagnostics.is_empty() && matches!(self.channel, Channel::Socket(_)) {
            diagnostics = Self::logged_diagnostics(&self.guard.docker, &id).await;
        }

        // The stream ended without an exit frame: kiln-init itself died. The OOM killer is the
        // usual culprit (a tmpfs filled with the memory limit, say); Docker knows.
        let inspected = self
            .guard
            .docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        let Ok(inspected) = inspected else {
            return Err(Error::Interrupted {
                id,
                detail: "the engine went away during the run".into(),
            });
        };
        let oom_killed = inspected.state.and_then(|s| s.oom_killed).unwrap_or(false);
        if oom_killed {
            warn!("kiln-init was OOM-killed");
            let exit = ExitReport {
                status: Status::Oom,
                signal: Some(SIGKILL),
                ..ExitReport::default()
            };
            return Ok(outcome(stdout, stderr, exit, t0, compile));
        }
        if diagnostics.is_empty() {
            // kiln-init says why whenever it gives up; silence means a kill from outside.
            return Err(Error::Interrupted {
                id,
                detail: "the container was stopped from outside during the run".into(),
            });
        }
        let said = String::from_utf8_lossy(&diagnostics);
        Err(protocol(format!(
            "sandbox ended without an exit frame; kiln-init said: {:?}",
            said.trim()
        )))
    }
}

fn outcome(
    stdout: Collected,
    stderr: Collected,
    exit: ExitReport,
    t0: Instant,
    compile: Option<StageOutcome>,
) -> RunOutcome {
    RunOutcome {
        stdout,
        stderr,
        exit,
        elapsed: t0.elapsed(),
        compile,
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn id(&self) -> &str {
        short(&self.guard.id)
    }

    fn is_alive(&mut self) -> bool {
        self.channel.is_alive()
    }

    fn image_id(&self) -> Option<&str> {
        self.image_id.as_deref()
    }

    fn host_pids(&self) -> Vec<u32> {
        // The socket's peer credentials name kiln-init by its pid on the host; its parent is
        // the container's shim. The attach channel does not tell.
        let Channel::Socket(s) = &self.channel else {
            return Vec::new();
        };
        let Some(init) = s.peer_cred().ok().and_then(|c| c.pid()) else {
            return Vec::new();
        };
        let init = init as u32;
        let mut pids = vec![init];
        if let Some(shim) = crate::memory::parent_of(init).filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.starts_with("containerd-shim"))
        }) {
            pids.push(shim);
        }
        pids
    }

    async fn run(self: Box<Self>, job: Job) -> Result<RunOutcome> {
        let span = self.guard.span.clone();
        self.run_inner(job, None).instrument(span).await
    }

    async fn run_tapped(self: Box<Self>, job: Job, tap: OutputTap) -> Result<RunOutcome> {
        let span = self.guard.span.clone();
        self.run_inner(job, Some(tap)).instrument(span).await
    }
}
