use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kiln_api::{
    signal_name, ExecSpec, ExecuteResponse, InvalidUtf8, RunStatus, RuntimeInfo, SandboxInfo,
    StageResult, StartKind, Timings, Truncated, Usage,
};
use kiln_proto::{FileEntry, Job, Status};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Counter, Histogram, LaunchMetrics};
use crate::pool::PoolManager;
use crate::{Backend, Collected, Error, Result, RunOutcome, Sandbox, SandboxSpec};

/// How many runs may go at once and how many may wait for a slot.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub max_concurrent: usize,
    /// Runs waiting for a slot beyond which new ones are refused at once.
    pub queue_size: usize,
    /// How long a queued run waits for a slot before it is refused.
    pub queue_timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_concurrent: 8,
            queue_size: 64,
            queue_timeout: Duration::from_secs(30),
        }
    }
}

/// Admits runs within the configured concurrency and queue, gets each a fresh sandbox from the
/// backend, and turns the outcome into the API's response.
#[derive(Debug)]
pub struct Executor {
    backend: Arc<dyn Backend>,
    pool: Option<Arc<PoolManager>>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    config: ExecutorConfig,
    pub metrics: ExecutorMetrics,
    launches: Arc<LaunchMetrics>,
}

/// What the executor counts for `/metrics`.
#[derive(Debug, Default)]
pub struct ExecutorMetrics {
    /// Runs that ended, by [`RunStatus`] in declaration order.
    pub runs: [Counter; 5],
    /// Requests that got an error instead of a result.
    pub failed: Counter,
    /// Runs whose warm sandbox was lost and that went again on another one.
    pub retried: Counter,
    /// From admission to the exit frame, by start kind.
    pub latency_warm: Histogram,
    pub latency_cold: Histogram,
}

pub(crate) const STATUSES: [RunStatus; 5] = [
    RunStatus::Ok,
    RunStatus::Timeout,
    RunStatus::Oom,
    RunStatus::OutputLimit,
    RunStatus::Signal,
];

/// A run slot; the slot is free again when this is dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    queued: Duration,
}

impl Executor {
    /// An executor that takes sandboxes from `pool` when there is one, or creates each one.
    /// `launches` counts the executor's own creations; give the pool the same one.
    pub fn new(
        backend: Arc<dyn Backend>,
        config: ExecutorConfig,
        pool: Option<Arc<PoolManager>>,
        launches: Arc<LaunchMetrics>,
    ) -> Self {
        Executor {
            backend,
            pool,
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            config,
            metrics: ExecutorMetrics::default(),
            launches,
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn launches(&self) -> &LaunchMetrics {
        &self.launches
    }

    pub fn pool(&self) -> Option<&Arc<PoolManager>> {
        self.pool.as_ref()
    }

    /// Runs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    async fn sandbox(&self, spec: &SandboxSpec) -> Result<(Box<dyn Sandbox>, StartKind)> {
        match &self.pool {
            Some(pool) => pool.take(spec).await,
            None => Ok((
                self.launches.launch(self.backend.as_ref(), spec).await?,
                StartKind::Cold,
            )),
        }
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.config.max_concurrent.max(1) - self.slots.available_permits()
    }

    /// Waits for a run slot, or refuses when the queue is full or the wait is too long.
    pub async fn admit(&self) -> Result<Admission> {
        let t0 = Instant::now();
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Admission {
                _permit: permit,
                queued: t0.elapsed(),
            });
        }
        let retry_after = Duration::from_secs(1);
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.config.queue_size {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::AtCapacity {
                reason: "run queue is full",
                retry_after,
            });
        }
        let acquired = tokio::time::timeout(
            self.config.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok(Ok(permit)) => Ok(Admission {
                _permit: permit,
                queued: t0.elapsed(),
            }),
            Ok(Err(_)) => Err(Error::AtCapacity {
                reason: "executor is shutting down",
                retry_after,
            }),
            Err(_) => Err(Error::AtCapacity {
                reason: "no run slot became free in time",
                retry_after,
            }),
        }
    }

    /// Runs `spec` in a fresh sandbox. `received` is when the request arrived, for `duration_ms`.
    pub async fn execute(&self, spec: ExecSpec, received: Instant) -> Result<ExecuteResponse> {
        self.execute_live(spec, received, None).await
    }

    /// [`Executor::execute`], sending the run's output to `live.tap` as it is produced and, with
    /// `live.input`, keeping the program's stdin open for what arrives there.
    pub async fn execute_live(
        &self,
        spec: ExecSpec,
        received: Instant,
        live: Option<crate::Live>,
    ) -> Result<ExecuteResponse> {
        let r = self.execute_inner(spec, received, live).await;
        match &r {
            Ok(res) => {
                let i = STATUSES.iter().position(|s| *s == res.status).unwrap_or(0);
                self.metrics.runs[i].inc();
            }
            Err(_) => self.metrics.failed.inc(),
        }
        r
    }

    async fn execute_inner(
        &self,
        spec: ExecSpec,
        received: Instant,
        live: Option<crate::Live>,
    ) -> Result<ExecuteResponse> {
        let admission = self.admit().await?;
        let admitted = Instant::now();
        let sandbox_spec = SandboxSpec {
            image: spec.image.clone(),
            workdir: spec.workdir.clone(),
            limits: spec.limits,
            network: spec.network,
        };
        let (mut sandbox, mut start) = self.sandbox(&sandbox_spec).await?;
        let runtime = spec
            .runtime
            .clone()
            .map(|(language, version)| RuntimeInfo { language, version });
        let mut job = job(spec);
        job.interactive = live.as_ref().is_some_and(|l| l.input.is_some());
        let mut sandbox_ms = ms(admitted.elapsed());
        let mut id = sandbox.id().to_owned();
        let mut image_id = sandbox.image_id().map(str::to_owned);
        // Only a warm sandbox may be retried: it was checked when handed out but may have died
        // since; a cold one that fails says something about the image or the engine.
        let retry_job = (start == StartKind::Warm).then(|| job.clone());
        let run = |sandbox: Box<dyn Sandbox>, job: Job| {
            let live = live.clone();
            async move {
                match live {
                    Some(live) => sandbox.run_live(job, live).await,
                    None => sandbox.run(job).await,
                }
            }
        };
        let outcome = match run(sandbox, job).await {
            Err(Error::Lost { id: lost, detail }) if retry_job.is_some() => {
                tracing::warn!(sandbox = %lost, %detail, "warm sandbox lost before the run; retrying on another");
                self.metrics.retried.inc();
                let t = Instant::now();
                sandbox = self
                    .launches
                    .launch(self.backend.as_ref(), &sandbox_spec)
                    .await?;
                start = StartKind::Cold;
                sandbox_ms += ms(t.elapsed());
                id = sandbox.id().to_owned();
                image_id = sandbox.image_id().map(str::to_owned);
                run(sandbox, retry_job.expect("checked")).await?
            }
            r => r?,
        };
        let queue_ms = ms(admission.queued);
        drop(admission);
        let hist = match start {
            StartKind::Warm => &self.metrics.latency_warm,
            StartKind::Cold => &self.metrics.latency_cold,
        };
        hist.observe(admitted.elapsed());
        Ok(response(
            outcome,
            Timings {
                queue_ms,
                sandbox_ms,
                run_ms: 0.0,
            },
            SandboxInfo {
                id,
                start,
                image_id,
            },
            received,
            runtime,
        ))
    }
}

/// The job frame's contents for a validated request.
pub(crate) fn job(spec: ExecSpec) -> Job {
    Job {
        argv: spec.argv,
        env: spec.env,
        stdin: spec.stdin,
        files: spec
            .files
            .into_iter()
            .map(|f| FileEntry {
                path: f.path,
                mode: f.mode,
                content: f.content,
            })
            .collect(),
        timeout_ms: spec.limits.timeout_ms,
        output_bytes: spec.limits.output_bytes,
        compile: spec.compile.map(|c| kiln_proto::Compile {
            argv: c.argv,
            timeout_ms: c.timeout_ms,
        }),
        interactive: false,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Text for JSON, and the exact bytes in base64 when they are not UTF-8.
fn text(c: &Collected) -> (String, Option<String>) {
    match std::str::from_utf8(&c.bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(&c.bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(&c.bytes)),
        ),
    }
}

fn response(
    outcome: RunOutcome,
    mut timings: Timings,
    sandbox: SandboxInfo,
    received: Instant,
    runtime: Option<RuntimeInfo>,
) -> ExecuteResponse {
    let compile_failed = outcome.compile_failed();
    let RunOutcome {
        stdout,
        stderr,
        exit,
        elapsed,
        compile,
    } = outcome;
    timings.run_ms = ms(elapsed);
    let (stdout_text, stdout_base64) = text(&stdout);
    let (stderr_text, stderr_base64) = text(&stderr);
    let status = if compile_failed {
        RunStatus::CompileError
    } else {
        run_status(exit.status)
    };
    let compile = compile.map(|c| StageResult {
        stdout: String::from_utf8_lossy(&c.stdout.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&c.stderr.bytes).into_owned(),
        exit_code: c.exit.code,
        signal: c.exit.signal.map(signal_name),
        status: run_status(c.exit.status),
        duration_ms: ms(c.elapsed),
        usage: Usage {
            cpu_ms: (c.exit.run_us > 0).then_some(c.exit.cpu_ms),
            memory_peak_bytes: c.exit.memory_peak_bytes,
        },
    });
    ExecuteResponse {
        invalid_utf8: InvalidUtf8 {
            stdout: stdout_base64.is_some(),
            stderr: stderr_base64.is_some(),
        },
        stdout: stdout_text,
        stderr: stderr_text,
        stdout_base64,
        stderr_base64,
        exit_code: exit.code,
        signal: exit.signal.map(signal_name),
        status,
        duration_ms: ms(received.elapsed()),
        timings,
        truncated: Truncated {
            stdout: stdout.truncated || exit.stdout_truncated,
            stderr: stderr.truncated || exit.stderr_truncated,
        },
        sandbox,
        cache: Default::default(),
        usage: Usage {
            // A report the host made up (backstop kill, kiln-init OOM-killed) has no usage.
            cpu_ms: (exit.run_us > 0).then_some(exit.cpu_ms),
            memory_peak_bytes: exit.memory_peak_bytes,
        },
        runtime,
        compile,
    }
}

fn run_status(s: Status) -> RunStatus {
    match s {
        Status::Ok => RunStatus::Ok,
        Status::Timeout => RunStatus::Timeout,
        Status::Oom => RunStatus::Oom,
        Status::OutputLimit => RunStatus::OutputLimit,
        Status::Signal => RunStatus::Signal,
    }
}

#[cfg(test)]
mod tests {
    //! The retry of a lost warm sandbox, with a stub engine: losing a sandbox at the right
    //! moment on the real one is a race no test can win every time.

    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use kiln_api::{Limits, Policy};
    use kiln_proto::ExitReport;

    use super::*;
    use crate::pool::{PoolConfig, PoolDefinition};
    use crate::Sandbox;

    /// Hands out sandboxes numbered from 0; sandbox 0 is lost before its job arrives.
    #[derive(Debug, Default)]
    struct Stub {
        made: AtomicUsize,
    }

    #[derive(Debug)]
    struct StubSandbox(String);

    #[async_trait]
    impl Sandbox for StubSandbox {
        fn id(&self) -> &str {
            &self.0
        }
        fn is_alive(&mut self) -> bool {
            true
        }
        async fn run(self: Box<Self>, job: Job) -> Result<RunOutcome> {
            if self.0 == "0" {
                return Err(Error::Lost {
                    id: self.0.clone(),
                    detail: "gone".into(),
                });
            }
            Ok(RunOutcome {
                stdout: Collected {
                    bytes: job.argv.join(" ").into_bytes(),
                    truncated: false,
                },
                stderr: Collected::default(),
                exit: ExitReport {
                    code: Some(0),
                    run_us: 1,
                    ..ExitReport::default()
                },
                elapsed: Duration::from_millis(1),
                compile: None,
            })
        }
    }

    #[async_trait]
    impl Backend for Stub {
        fn name(&self) -> &'static str {
            "stub"
        }
        async fn ping(&self) -> Result<()> {
            Ok(())
        }
        async fn image_id(&self, _: &str) -> Result<Option<String>> {
            Ok(None)
        }
        async fn has_image(&self, _: &str) -> Result<bool> {
            Ok(true)
        }
        async fn launch(&self, _: &SandboxSpec) -> Result<Box<dyn Sandbox>> {
            let n = self.made.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(StubSandbox(n.to_string())))
        }
        async fn remove_orphans(&self) -> Result<usize> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_lost_warm_sandbox_is_retried_once_on_a_new_one() {
        let spec = kiln_api::ExecuteRequest {
            image: Some("img".into()),
            argv: Some(vec!["echo".into(), "hi".into()]),
            ..Default::default()
        }
        .validate(&Policy::default())
        .unwrap();
        let definition = PoolDefinition {
            name: "p".into(),
            spec: SandboxSpec {
                image: "img".into(),
                workdir: spec.workdir.clone(),
                limits: Limits::DEFAULT,
                network: false,
            },
            min: 1,
            max: 1,
        };
        let backend: Arc<dyn Backend> = Arc::new(Stub::default());
        let launches = Arc::new(LaunchMetrics::default());
        let config = PoolConfig {
            pools: vec![definition],
            on_demand: false,
            ..PoolConfig::default()
        };
        let pool = PoolManager::start(backend.clone(), config, launches.clone());
        while pool.status()[0].ready == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let executor = Executor::new(
            backend,
            ExecutorConfig::default(),
            Some(pool.clone()),
            launches,
        );
        let res = executor.execute(spec, Instant::now()).await.unwrap();
        assert_eq!(res.stdout, "echo hi");
        assert_eq!(
            res.sandbox.start,
            StartKind::Cold,
            "the retry ran on a new sandbox"
        );
        assert_ne!(res.sandbox.id, "0");
        assert_eq!(executor.metrics.retried.get(), 1);
        assert_eq!(pool.status()[0].hits, 1);
        pool.shutdown();
    }
}
