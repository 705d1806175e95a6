use std::time::Duration;

use async_trait::async_trait;
use kiln_api::Limits;
use kiln_proto::{ExitReport, Job};

use crate::{Collected, Result};

/// What a sandbox is made of, as opposed to what runs in it (the [`Job`]). Two runs with the same
/// spec could be served by interchangeable sandboxes, which is what a warm pool keys on.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub image: String,
    /// Absolute path of the working directory; a fresh tmpfs.
    pub workdir: String,
    /// `memory_mb`, `cpus`, `pids` and `tmp_mb` apply to the sandbox; the others to the job.
    pub limits: Limits,
    pub network: bool,
}

/// A sandbox engine.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short name for logs and responses (`docker`).
    fn name(&self) -> &'static str;

    /// Succeeds when the engine answers.
    async fn ping(&self) -> Result<()>;

    /// The id of the local image `image` names (`sha256:…`), `None` when it is not present;
    /// never pulls.
    async fn image_id(&self, image: &str) -> Result<Option<String>>;

    /// Whether `image` is present locally; never pulls.
    async fn has_image(&self, image: &str) -> Result<bool>;

    /// Creates a sandbox, attaches to it and starts it; when this returns, kiln-init is waiting
    /// for its job frame. A missing image is pulled first, within a bounded time.
    async fn launch(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>>;

    /// Removals started in the background and not yet finished.
    fn pending_removals(&self) -> usize {
        0
    }

    /// Removals finished so far: (done, given up on).
    fn removals(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Removes every sandbox that this gateway's previous incarnations left behind.
    async fn remove_orphans(&self) -> Result<usize>;
}

/// A started sandbox, waiting for its one job. Dropping it removes it in the background.
#[async_trait]
pub trait Sandbox: Send + std::fmt::Debug {
    /// The engine's id of the sandbox.
    fn id(&self) -> &str;

    /// The id of the image the sandbox was made from, if the backend knows it.
    fn image_id(&self) -> Option<&str> {
        None
    }

    /// Whether the sandbox can still take its job, checked without waiting: a container that
    /// died or whose attach stream broke is not. Used before a pooled sandbox is handed out.
    fn is_alive(&mut self) -> bool;

    /// The host processes that exist only for this sandbox (its init and, for Docker, its
    /// containerd shim), whose idle memory may be paged out while it waits; empty where the
    /// backend does not know them.
    fn host_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Writes `job` and collects output until kiln-init's exit frame. The sandbox is consumed:
    /// it serves exactly one run and is removed afterwards.
    async fn run(self: Box<Self>, job: Job) -> Result<RunOutcome>;

    /// [`Sandbox::run`], also sending every piece of output to `live.tap` as it arrives and,
    /// for an interactive job, what arrives on `live.input` to the program. A backend that
    /// cannot stream sends nothing and takes no input; the outcome is the same.
    async fn run_live(self: Box<Self>, job: Job, live: crate::Live) -> Result<RunOutcome> {
        drop(live);
        self.run(job).await
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub stdout: Collected,
    pub stderr: Collected,
    pub exit: ExitReport,
    /// From writing the job to the exit frame, measured on the host.
    pub elapsed: Duration,
    /// The job's compile step, when it had one. When it failed, nothing ran: `stdout`,
    /// `stderr` and `exit` are empty.
    pub compile: Option<StageOutcome>,
}

/// What the compile step printed and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOutcome {
    pub stdout: Collected,
    pub stderr: Collected,
    pub exit: ExitReport,
    pub elapsed: Duration,
}

impl RunOutcome {
    /// Whether a failed compile step kept the program from running.
    pub fn compile_failed(&self) -> bool {
        self.compile.as_ref().is_some_and(|c| !c.exit.succeeded())
    }
}
