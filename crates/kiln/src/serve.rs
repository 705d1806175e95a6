//! Start-up and shutdown of the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kiln_sandbox::docker::DockerBackend;
use kiln_sandbox::metrics::LaunchMetrics;
use kiln_sandbox::pool::PoolManager;
use kiln_sandbox::{Backend, Executor, ExecutorConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::http::{app, AppState};
use crate::memory::Memory;
use crate::results::ResultCache;

/// How long a shutdown waits for creations and removals in flight before its final sweep.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(15);

/// A gateway serving in the background.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops taking requests, lets in-flight ones finish within the grace period, then removes
    /// every sandbox this gateway made.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.context("server task")?
    }

    /// Waits until the server ends by itself (SIGTERM / Ctrl-C when started with signals).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// Connects to Docker, removes what a previous gateway left behind, binds and serves. With
/// `signals`, SIGTERM and Ctrl-C start the shutdown too.
pub async fn start(config: Config, signals: bool) -> anyhow::Result<Running> {
    let memory = Arc::new(Memory::start(&config.memory));
    let docker_config = config.backend_config(memory.ksm_on())?;
    let init_path = docker_config.init_path.clone();
    if let Err(reason) = crate::http::check_init(&init_path) {
        warn!(%reason, "kiln-init is not usable; runs will fail until it is (see /ready)");
    }
    let backend = Arc::new(DockerBackend::connect(docker_config).await?);
    match backend.remove_orphans().await {
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot look for orphaned sandboxes now"),
    }
    let launches = Arc::new(LaunchMetrics::default());
    let pool = config.pool_config()?.map(|mut pc| {
        pc.page_out_after = memory.page_out_after();
        PoolManager::start(backend.clone(), pc, launches.clone())
    });
    if let Some(pool) = &pool {
        memory.watch(pool.clone());
    }
    let executor = Arc::new(Executor::new(
        backend.clone(),
        ExecutorConfig {
            max_concurrent: config.server.max_concurrent,
            queue_size: config.server.queue_size,
            queue_timeout: Duration::from_millis(config.server.queue_timeout_ms),
        },
        pool.clone(),
        launches,
    ));
    let results = Arc::new(ResultCache::open(
        &config.cache,
        &init_path,
        &config.docker.user,
    ));
    let state = AppState::new(
        executor,
        config.policy(),
        config.server.max_body_bytes,
        config.images.required.clone(),
        init_path,
        results,
        memory.clone(),
    )
    .with_max_batch(config.server.max_batch)
    .with_catalog(config.runtimes.catalog()?)
    .with_keys(&config.auth.specs())
    .with_judge0_store(
        config
            .judge0
            .store_path
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty()),
    )
    .with_judge0_callbacks(config.judge0.callbacks)
    .with_body_timeout(Duration::from_millis(config.server.body_timeout_ms));
    // Judge0 submissions an earlier gateway accepted and did not finish run now.
    crate::http::judge0::resume(&state);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, backend = backend.name(), "kiln listening");

    let (stop, stopped) = oneshot::channel::<()>();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let router = app(state.clone());
    let sessions = state.sessions().clone();
    let limits = crate::listen::ConnLimits {
        header_timeout: Duration::from_millis(config.server.header_timeout_ms),
        max_connections: config.server.max_connections,
    };
    let task = tokio::spawn(async move {
        let (begin_tx, begin_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                _ = stopped => {}
                _ = signal(), if signals => {}
            }
            info!("shutting down: no new runs; waiting for runs in flight");
            let _ = begin_tx.send(());
        };
        let server = tokio::spawn(crate::listen::serve(
            listener, router, limits, sessions, shutdown,
        ));
        // The grace period starts with the shutdown, not before.
        let _ = begin_rx.await;
        if tokio::time::timeout(grace, server).await.is_err() {
            warn!(
                grace_ms = grace.as_millis() as u64,
                "runs still in flight after the grace period; stopping anyway"
            );
        }
        if let Some(pool) = &pool {
            pool.shutdown();
        }
        // Let creations in flight end (what they make is removed at once) and background
        // removals finish, within a bound; then sweep whatever is left by label.
        let t0 = std::time::Instant::now();
        let busy = || {
            pool.as_ref().is_some_and(|p| p.creations_in_flight() > 0)
                || backend.pending_removals() > 0
        };
        while busy() && t0.elapsed() < SHUTDOWN_DRAIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match backend.remove_orphans().await {
            Ok(n) => info!(removed = n, "sandboxes removed"),
            Err(e) => warn!(error = %e, "cannot remove sandboxes at shutdown"),
        }
        // Last: with the sandboxes gone, a zram device has little to give back on swapoff.
        memory.stop();
        info!("shutdown complete");
        Ok(())
    });
    Ok(Running {
        addr,
        state,
        stop: Some(stop),
        task,
    })
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
