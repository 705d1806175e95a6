//! `kiln bench`: Kiln against what a user would otherwise do, measured side by side in one run.
//!
//! 1. One table, every path interleaved (the order rotates each iteration) so that the
//!    machine's noise falls on all alike: `docker run`, the bare API sequence (also with Kiln's
//!    `NetworkDisabled`), `docker exec` on a running container, Kiln cold and Kiln warm through
//!    HTTP. Before each sample the warm pool is allowed to fill up, so that no refill from the
//!    previous sample runs during the next.
//! 2. Kiln warm at several concurrency levels.
//! 3. The sustained rate of fresh-sandbox runs with the pool refilling.
//! 4. The memory one idle pooled sandbox costs.

mod cache;
mod density;
mod interactive;
mod load;
mod memory;
mod paths;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kiln_sandbox::docker::{baseline, DockerBackend};

use crate::config::{Config, PoolEntry};
use crate::serve::Running;
use paths::{Bench, Path};
pub use stats::{percentile, Samples};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measured runs of each path in the side-by-side table.
    #[arg(long, short = 'n', default_value_t = 40)]
    pub iterations: usize,
    /// Unmeasured runs of each path first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value = "kiln/busybox")]
    pub image: String,
    /// Concurrency levels for the warm table.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Rounds per concurrency level.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Seconds of the sustained-rate measurement (0 skips it).
    #[arg(long, default_value_t = 15)]
    pub sustain_secs: u64,
    /// Clients in the sustained-rate measurement.
    #[arg(long, default_value_t = 4)]
    pub sustain_clients: usize,
    /// Idle pooled sandboxes for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub idle_sandboxes: usize,
    /// Measure only the Python workload's time and peak memory under each THP choice, with
    /// this many runs per choice.
    #[arg(long)]
    pub thp: Option<usize>,
    /// Measure only load: clients at 10× and 20× a pool of this size.
    #[arg(long)]
    pub load: Option<usize>,
    /// Seconds of each load measurement.
    #[arg(long, default_value_t = 20)]
    pub load_secs: u64,
    /// Measure only the memory of idle pooled sandboxes (zram off and on).
    #[arg(long)]
    pub idle_only: bool,
    /// Measure the result cache only (misses against hits from each tier).
    #[arg(long)]
    pub cache: bool,
    /// Measure interactive and streamed runs: POST, SSE and WebSocket side by side, and a line
    /// of stdin through a running program against the engine's attach.
    #[arg(long)]
    pub interactive: bool,
    /// Measure memory density (KSM off and on) with this many sandboxes, only.
    #[arg(long)]
    pub density: Option<usize>,
    /// kiln-init for the in-process gateways.
    #[arg(long, env = "KILN_INIT_PATH")]
    pub init_path: Option<PathBuf>,
    /// Docker engine address.
    #[arg(
        long,
        env = "KILN_DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,
}

const POOL_NAME: &str = "bench";

/// The configuration of every benchmark's in-process gateway: on 127.0.0.1, the engine and
/// kiln-init from `args`, its own gateway id, wide-open admission, no pool, no on-disk state,
/// the host's KSM left alone. Each benchmark changes what it measures.
fn bench_config(args: &BenchArgs, tag: &str) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.max_concurrent = 64;
    config.docker.host = args.docker_host.clone();
    config.docker.init_path = args.init_path.clone();
    config.docker.gateway_id = format!("kiln-bench-{tag}-{}", std::process::id());
    config.pool.enabled = false;
    config.cache.l2_path = None;
    config.judge0.store_path = None;
    config.memory.ksm_host = crate::config::HostPolicy::Leave;
    config
}

/// A gateway in this process: cold (no pool) or with one pool of `pool` sandboxes.
async fn gateway(args: &BenchArgs, tag: &str, pool: Option<usize>) -> anyhow::Result<Running> {
    gateway_with(args, tag, pool, |_| {}).await
}

/// [`gateway`], its configuration changed by `tweak` last.
async fn gateway_with(
    args: &BenchArgs,
    tag: &str,
    pool: Option<usize>,
    tweak: impl FnOnce(&mut Config),
) -> anyhow::Result<Running> {
    let mut config = bench_config(args, tag);
    config.pool.enabled = pool.is_some();
    config.pool.on_demand = false;
    config.pool.max_pooled = 64;
    if let Some(n) = pool {
        config.pool.pools = vec![PoolEntry {
            name: Some(POOL_NAME.into()),
            image: args.image.clone(),
            workdir: None,
            limits: Default::default(),
            network: false,
            min: n,
            max: n,
            thp: None,
        }];
    }
    tweak(&mut config);
    crate::serve::start(config, false).await
}

/// Waits until the gateway's pool holds at least `n` ready sandboxes and nothing is being made.
async fn settle(gw: &Running, n: usize) -> anyhow::Result<()> {
    let Some(pool) = gw.state.executor().pool() else {
        return Ok(());
    };
    let t0 = Instant::now();
    loop {
        let s = pool.status();
        let p = &s[0];
        if p.ready >= n && p.creating == 0 {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("pool did not fill: {p:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`settle`] for the warm gateway, and the cold one's removals finished too.
async fn settle_both(cold: &Running, warm: &Running, n: usize) -> anyhow::Result<()> {
    settle(warm, n).await?;
    let t0 = Instant::now();
    while cold.state.executor().backend().pending_removals() > 0 {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "removals never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn url(gw: &Running) -> String {
    format!("http://{}/api/v1/execute", gw.addr)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.cache {
        return cache::run(&args).await;
    }
    if args.interactive {
        return interactive::run(&args).await;
    }
    if let Some(n) = args.density {
        return density::run(&args, n).await;
    }
    if let Some(pool) = args.load {
        return load::run(&args, pool).await;
    }
    if let Some(runs) = args.thp {
        return density::thp(&args, runs).await;
    }
    if args.idle_only {
        return memory::run(&args).await;
    }
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let mut probe = Config::default();
    probe.docker.host = args.docker_host.clone();
    // The baselines need no channel socket; without one, no live gateway's sockets are touched.
    let mut probe_config = probe.docker.to_backend_config();
    probe_config.channel_dir = None;
    let backend = Arc::new(DockerBackend::connect(probe_config).await?);
    let exec_target = baseline::start_exec_target(&backend, &args.image).await?;
    let cold = gateway(&args, "cold", None).await?;
    let warm = gateway(&args, "warm", Some(max_c)).await?;
    let result = measure(&args, &backend, &exec_target, &cold, &warm).await;
    baseline::remove(&backend, &exec_target).await.ok();
    cold.shutdown().await?;
    warm.shutdown().await?;
    result?;
    if args.idle_sandboxes > 0 {
        memory::run(&args).await?;
    }
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    backend: &Arc<DockerBackend>,
    exec_target: &str,
    cold: &Running,
    warm: &Running,
) -> anyhow::Result<()> {
    let bench = Bench {
        image: args.image.clone(),
        http: reqwest::Client::new(),
        cold_url: url(cold),
        warm_url: url(warm),
        backend: backend.clone(),
        exec_target: exec_target.to_owned(),
    };
    let full = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    settle_both(cold, warm, full).await?;
    for _ in 0..args.warmup {
        for p in Path::ALL {
            bench.once(p).await?;
            settle_both(cold, warm, full).await?;
        }
    }
    let mut samples = vec![Samples::default(); Path::ALL.len()];
    for i in 0..args.iterations {
        for k in 0..Path::ALL.len() {
            let idx = (i + k) % Path::ALL.len();
            settle_both(cold, warm, full).await?;
            samples[idx].push(bench.once(Path::ALL[idx]).await?);
        }
    }
    print_paths(args, &samples);

    println!();
    println!("Kiln warm through HTTP at several concurrency levels ({} rounds each; every round starts with a full pool)", args.rounds);
    println!();
    println!("| concurrency | runs | p50 ms | p90 ms | p99 ms | warm |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &c in &args.concurrency {
        let mut s = Samples::default();
        let mut warm_runs = 0;
        for _ in 0..args.rounds {
            settle_both(cold, warm, full).await?;
            let runs = (0..c).map(|_| bench.warm_once());
            for r in futures_util::future::join_all(runs).await {
                let (ms, was_warm) = r?;
                s.push(ms);
                warm_runs += usize::from(was_warm);
            }
        }
        println!(
            "| {c} | {} | {:.2} | {:.2} | {:.2} | {:.0} % |",
            s.len(),
            s.p(50.0),
            s.p(90.0),
            s.p(99.0),
            100.0 * warm_runs as f64 / s.len() as f64
        );
    }

    println!();
    println!(
        "Kiln warm, sequential and paced, without waiting for the engine to settle: the previous \
         run's removal and the pool's refill may overlap the next run"
    );
    println!();
    println!("| pace | runs | p50 ms | p90 ms | p99 ms | warm |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for per_sec in [5u64, 20] {
        settle_both(cold, warm, full).await?;
        let (mut s, mut warm_runs) = (Samples::default(), 0);
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_sec));
        for _ in 0..args.iterations {
            tick.tick().await;
            let (ms, was_warm) = bench.warm_once().await?;
            s.push(ms);
            warm_runs += usize::from(was_warm);
        }
        println!(
            "| {per_sec} runs/s | {} | {:.2} | {:.2} | {:.2} | {:.0} % |",
            s.len(),
            s.p(50.0),
            s.p(90.0),
            s.p(99.0),
            100.0 * warm_runs as f64 / s.len() as f64
        );
    }

    if args.sustain_secs > 0 {
        println!();
        println!(
            "Sustained fresh-sandbox runs: {} clients in a closed loop for {} s each, every run in a new sandbox",
            args.sustain_clients, args.sustain_secs
        );
        println!();
        println!("| gateway | runs/s | p50 ms | p99 ms | warm |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        for (name, target) in [
            ("Kiln with a pool refilling", warm),
            ("Kiln without a pool (all cold)", cold),
        ] {
            settle_both(cold, warm, full).await?;
            let r = paths::sustain(
                &bench,
                &url(target),
                args.sustain_clients,
                Duration::from_secs(args.sustain_secs),
            )
            .await?;
            println!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.0} % |",
                r.rate,
                r.latency.p(50.0),
                r.latency.p(99.0),
                100.0 * r.warm_share
            );
        }
    }
    Ok(())
}

fn print_paths(args: &BenchArgs, samples: &[Samples]) {
    let p50 = |p: Path| samples[p as usize].p(50.0);
    println!(
        "kiln bench: image {}, `{}`, {} iterations per path (interleaved), {} warm-up",
        args.image,
        paths::ARGV.join(" "),
        args.iterations,
        args.warmup
    );
    println!();
    println!("| path | p50 ms | p90 ms | p99 ms | p50 vs docker exec | p50 vs bare API | p50 vs docker run |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for p in Path::ALL {
        let s = &samples[p as usize];
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.3}× | {:.3}× | {:.3}× |",
            p.label(),
            s.p(50.0),
            s.p(90.0),
            s.p(99.0),
            p50(p) / p50(Path::DockerExec),
            p50(p) / p50(Path::BareApi),
            p50(p) / p50(Path::DockerRun),
        );
    }
    println!();
    let below = |a: Path, base: Path| (1.0 - p50(a) / p50(base)) * 100.0;
    println!(
        "Kiln cold p50 is {:.0} % below the bare API sequence, {:.0} % below the same sequence with \
         Kiln's container settings, and {:.0} % below docker run.",
        below(Path::KilnCold, Path::BareApi),
        below(Path::KilnCold, Path::BareApiNoNet),
        below(Path::KilnCold, Path::DockerRun),
    );
    println!(
        "Kiln warm p50 is {:.1}× faster than docker exec and {:.0}× faster than docker run.",
        p50(Path::DockerExec) / p50(Path::KilnWarm),
        p50(Path::DockerRun) / p50(Path::KilnWarm),
    );
}
