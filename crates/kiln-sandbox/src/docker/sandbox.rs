use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::query_parameters::{KillContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::{FutureExt, Stream, StreamExt};
use kiln_proto::{Event, ExitReport, FrameDecoder, Input, Job, Status, MAX_EVENT_FRAME};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tracing::{info, warn, Instrument, Span};

use super::{short, DockerConfig};
use crate::{
    Collected, Error, InputFeed, Live, LiveEvent, Result, RunOutcome, Sandbox, StageOutcome,
    StreamKind,
};

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

pub(crate) type Output =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// How frames travel between the gateway and kiln-init: kiln-init's frames come from `source`,
/// the job (and an interactive job's input) go to `sink`.
pub(crate) struct Channel {
    source: Source,
    sink: Pin<Box<dyn AsyncWrite + Send>>,
    /// kiln-init's pid on the host, from the socket's peer credentials (the attach channel does
    /// not tell).
    init_pid: Option<u32>,
}

enum Source {
    /// The container's stdout and stderr, attached through the engine.
    Attach(Output),
    /// A unix socket straight to kiln-init.
    Socket(OwnedReadHalf),
}

/// What arrived on a channel: bytes of kiln-init's frame stream, or its own diagnostics.
enum Chunk {
    Frames(Vec<u8>),
    Diagnostics(Vec<u8>),
}

impl Channel {
    /// The container's stdin and stdout, attached through the engine.
    pub(crate) fn attach(output: Output, input: Pin<Box<dyn AsyncWrite + Send>>) -> Self {
        Channel {
            source: Source::Attach(output),
            sink: input,
            init_pid: None,
        }
    }

    /// A unix socket kiln-init connected to.
    pub(crate) fn socket(stream: UnixStream) -> Self {
        let init_pid = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        let (read, write) = stream.into_split();
        Channel {
            source: Source::Socket(read),
            sink: Box::pin(write),
            init_pid,
        }
    }

    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.sink.write_all(frame).await?;
        self.sink.flush().await
    }

    /// The writing side, for a task of its own; what is left writes nothing.
    fn take_sink(&mut self) -> Pin<Box<dyn AsyncWrite + Send>> {
        std::mem::replace(&mut self.sink, Box::pin(tokio::io::sink()))
    }

    /// The next chunk; `None` when the channel ended.
    async fn next(&mut self) -> Option<Result<Chunk, String>> {
        match &mut self.source {
            Source::Attach(output) => loop {
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
            Source::Socket(s) => {
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
        match &mut self.source {
            Source::Attach(output) => output.next().now_or_never().is_none(),
            Source::Socket(s) => matches!(
                s.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ),
        }
    }

    fn is_socket(&self) -> bool {
        matches!(self.source, Source::Socket(_))
    }
}

/// Writes an interactive job's input to kiln-init as it arrives; the feed's end (the client
/// is done or gone) ends the program's stdin.
async fn feed(mut sink: Pin<Box<dyn AsyncWrite + Send>>, input: InputFeed) {
    let mut input = input.lock().await;
    while let Some(item) = input.recv().await {
        let frame = item.to_frame();
        if let Err(e) = async {
            sink.write_all(&frame).await?;
            sink.flush().await
        }
        .await
        {
            // kiln-init is gone; the run's end is read on the other side.
            warn!(error = %e, "cannot write input");
            return;
        }
    }
    let _ = sink.write_all(&Input::StdinEof.to_frame()).await;
    let _ = sink.flush().await;
}

/// Aborts a task when dropped: a run that ends, or whose request is dropped, takes its input
/// writer with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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

    async fn run_inner(mut self, job: Job, live: Option<Live>) -> Result<RunOutcome> {
        let (tap, input) = match live {
            Some(Live { tap, input }) => (Some(tap), input),
            None => (None, None),
        };
        // A listener that went away stops nothing: the run goes on and is answered as usual.
        let send = |kind: StreamKind, kept: &[u8]| {
            if let (Some(tap), false) = (&tap, kept.is_empty()) {
                let _ = tap.send(LiveEvent::Output(kind, kept.to_vec()));
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
        // An interactive job's input goes out from a task of its own, so that a client
        // sending faster than the program reads never holds up the output coming back.
        let _feeder = match (job.interactive, input) {
            (true, Some(input)) => Some(AbortOnDrop(tokio::spawn(
                feed(self.channel.take_sink(), input).instrument(Span::current()),
            ))),
            _ => None,
        };

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
                                if let Some(tap) = &tap {
                                    let _ = tap.send(LiveEvent::CompileExit(exit.clone()));
                                }
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
        if diagnostics.is_empty() && self.channel.is_socket() {
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
        let Some(init) = self.channel.init_pid else {
            return Vec::new();
        };
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

    async fn run_live(self: Box<Self>, job: Job, live: Live) -> Result<RunOutcome> {
        let span = self.guard.span.clone();
        self.run_inner(job, Some(live)).instrument(span).await
    }
}
