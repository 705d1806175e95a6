//! `kiln bench`: Kiln's cold path through HTTP against what a user would otherwise do, measured
//! side by side in one run, interleaved so that the machine's noise falls on every path alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use kiln_api::ExecuteResponse;
use kiln_sandbox::docker::{baseline, DockerBackend};

use crate::config::Config;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measured runs of each path.
    #[arg(long, short = 'n', default_value_t = 30)]
    pub iterations: usize,
    /// Unmeasured runs of each path first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value = "kiln/busybox")]
    pub image: String,
    /// A running gateway to measure; by default one is started in this process on 127.0.0.1.
    #[arg(long)]
    pub url: Option<String>,
    /// kiln-init for the in-process gateway.
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

const ARGV: [&str; 2] = ["echo", "hello"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    DockerRun,
    BareApi,
    BareApiNoNet,
    KilnCold,
}

impl Path {
    const ALL: [Path; 4] = [
        Path::DockerRun,
        Path::BareApi,
        Path::BareApiNoNet,
        Path::KilnCold,
    ];

    fn label(self) -> &'static str {
        match self {
            Path::DockerRun => "`docker run --rm --network none` (CLI)",
            Path::BareApi => "Docker API create → start → wait → remove",
            Path::BareApiNoNet => "same, with Kiln's `NetworkDisabled`",
            Path::KilnCold => "Kiln cold, HTTP `POST /api/v1/execute`",
        }
    }
}

struct Bench {
    image: String,
    http: reqwest::Client,
    url: String,
    backend: Arc<DockerBackend>,
}

impl Bench {
    async fn once(&self, path: Path) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        match path {
            Path::DockerRun => {
                let out = tokio::process::Command::new("docker")
                    .args(["run", "--rm", "--network", "none", &self.image])
                    .args(ARGV)
                    .output()
                    .await
                    .context("running the docker CLI")?;
                let took = t0.elapsed();
                if !out.status.success() || out.stdout != b"hello\n" {
                    bail!(
                        "docker run failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(took)
            }
            Path::BareApi | Path::BareApiNoNet => {
                let no_net = path == Path::BareApiNoNet;
                let code =
                    baseline::create_start_wait_remove(&self.backend, &self.image, &ARGV, no_net)
                        .await?;
                let took = t0.elapsed();
                if code != 0 {
                    bail!("bare API run exited with {code}");
                }
                Ok(took)
            }
            Path::KilnCold => {
                let res = self
                    .http
                    .post(&self.url)
                    .json(&serde_json::json!({"image": self.image, "argv": ARGV}))
                    .send()
                    .await
                    .context("posting to the gateway")?;
                let status = res.status();
                let body = res.bytes().await?;
                let took = t0.elapsed();
                if !status.is_success() {
                    bail!(
                        "gateway answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let out: ExecuteResponse = serde_json::from_slice(&body)?;
                if out.stdout != "hello\n" || out.exit_code != Some(0) {
                    bail!("unexpected Kiln answer: {out:?}");
                }
                Ok(took)
            }
        }
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.docker.host = args.docker_host.clone();
    config.docker.init_path = args.init_path.clone();
    config.docker.gateway_id = format!("kiln-bench-{}", std::process::id());
    config.server.max_concurrent = 1;
    let backend = Arc::new(DockerBackend::connect(config.docker.to_backend_config()).await?);
    let (url, server) = match &args.url {
        Some(u) => (format!("{}/api/v1/execute", u.trim_end_matches('/')), None),
        None => {
            let running = crate::serve::start(config, false).await?;
            (
                format!("http://{}/api/v1/execute", running.addr),
                Some(running),
            )
        }
    };
    let bench = Bench {
        image: args.image.clone(),
        http: reqwest::Client::new(),
        url,
        backend,
    };

    for _ in 0..args.warmup {
        for p in Path::ALL {
            bench.once(p).await?;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(args.iterations); Path::ALL.len()];
    for i in 0..args.iterations {
        // Rotate the order so that no path always runs right after another.
        for k in 0..Path::ALL.len() {
            let idx = (i + k) % Path::ALL.len();
            let d = bench.once(Path::ALL[idx]).await?;
            samples[idx].push(d.as_secs_f64() * 1e3);
        }
    }
    if let Some(s) = server {
        s.shutdown().await?;
    }

    for s in &mut samples {
        s.sort_by(f64::total_cmp);
    }
    let p50 = |p: Path| percentile(&samples[p as usize], 50.0);
    println!(
        "kiln bench: image {}, `{}`, {} iterations per path (interleaved), {} warm-up",
        args.image,
        ARGV.join(" "),
        args.iterations,
        args.warmup
    );
    println!();
    println!("| path | p50 ms | p90 ms | p99 ms | p50 vs bare API | p50 vs docker run |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for p in Path::ALL {
        let s = &samples[p as usize];
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2}× |",
            p.label(),
            percentile(s, 50.0),
            percentile(s, 90.0),
            percentile(s, 99.0),
            p50(p) / p50(Path::BareApi),
            p50(p) / p50(Path::DockerRun),
        );
    }
    println!();
    let below = |base: Path| (1.0 - p50(Path::KilnCold) / p50(base)) * 100.0;
    println!(
        "Kiln cold p50 is {:.0} % below the bare API sequence, {:.0} % below the same sequence \
         with Kiln's container settings, and {:.0} % below docker run.",
        below(Path::BareApi),
        below(Path::BareApiNoNet),
        below(Path::DockerRun),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 90.0), 90.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
