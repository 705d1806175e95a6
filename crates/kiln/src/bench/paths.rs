use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kiln_api::{ExecuteResponse, StartKind};
use kiln_sandbox::docker::{baseline, DockerBackend};

use super::stats::ms_since as ms;
use super::Samples;

pub const ARGV: [&str; 2] = ["echo", "hello"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    DockerRun,
    BareApi,
    BareApiNoNet,
    DockerExec,
    KilnCold,
    KilnWarm,
}

impl Path {
    pub const ALL: [Path; 6] = [
        Path::DockerRun,
        Path::BareApi,
        Path::BareApiNoNet,
        Path::DockerExec,
        Path::KilnCold,
        Path::KilnWarm,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Path::DockerRun => "`docker run --rm --network none` (CLI)",
            Path::BareApi => "Docker API create → start → wait → remove",
            Path::BareApiNoNet => "same, with Kiln's `NetworkDisabled`",
            Path::DockerExec => "`docker exec` through the API, running container",
            Path::KilnCold => "Kiln cold, HTTP",
            Path::KilnWarm => "Kiln warm, HTTP",
        }
    }
}

pub struct Bench {
    pub image: String,
    pub http: reqwest::Client,
    pub cold_url: String,
    pub warm_url: String,
    pub backend: Arc<DockerBackend>,
    pub exec_target: String,
}

impl Bench {
    /// One sample of `path`, in milliseconds; its output is checked.
    pub async fn once(&self, path: Path) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        match path {
            Path::DockerRun => {
                let out = tokio::process::Command::new("docker")
                    .args(["run", "--rm", "--network", "none", &self.image])
                    .args(ARGV)
                    .output()
                    .await
                    .context("running the docker CLI")?;
                let took = ms(t0);
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
                let took = ms(t0);
                if code != 0 {
                    bail!("bare API run exited with {code}");
                }
                Ok(took)
            }
            Path::DockerExec => {
                let (code, out) = baseline::exec(&self.backend, &self.exec_target, &ARGV).await?;
                let took = ms(t0);
                if code != 0 || out != b"hello\n" {
                    bail!("docker exec gave {code}: {}", String::from_utf8_lossy(&out));
                }
                Ok(took)
            }
            Path::KilnCold => Ok(self.post(&self.cold_url).await?.0),
            Path::KilnWarm => {
                let (took, start) = self.post(&self.warm_url).await?;
                if start != StartKind::Warm {
                    bail!("a warm sample was served cold: the pool was not ready");
                }
                Ok(took)
            }
        }
    }

    /// One warm-gateway run; whether it was served warm.
    pub async fn warm_once(&self) -> anyhow::Result<(f64, bool)> {
        let (took, start) = self.post(&self.warm_url).await?;
        Ok((took, start == StartKind::Warm))
    }

    async fn post(&self, url: &str) -> anyhow::Result<(f64, StartKind)> {
        let t0 = Instant::now();
        let res = self
            .http
            .post(url)
            .json(&serde_json::json!({"image": self.image, "argv": ARGV}))
            .send()
            .await
            .context("posting to the gateway")?;
        let status = res.status();
        let body = res.bytes().await?;
        let took = ms(t0);
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
        Ok((took, out.sandbox.start))
    }
}

pub struct Sustained {
    pub rate: f64,
    pub latency: Samples,
    pub warm_share: f64,
}

/// `clients` loops posting to `url` for `span`; every run is in a fresh sandbox.
pub async fn sustain(
    bench: &Bench,
    url: &str,
    clients: usize,
    span: Duration,
) -> anyhow::Result<Sustained> {
    let stop = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new((Samples::default(), 0usize)));
    let t0 = Instant::now();
    let loops = (0..clients).map(|_| {
        let stop = stop.clone();
        let latency = latency.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let (took, start) = bench.post(url).await?;
                let mut l = latency.lock().expect("samples");
                l.0.push(took);
                l.1 += usize::from(start == StartKind::Warm);
            }
            anyhow::Ok(())
        }
    });
    let timer = async {
        tokio::time::sleep(span).await;
        stop.store(true, Ordering::Relaxed);
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(loops), timer);
    let elapsed = t0.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    let (latency, warm) = std::mem::take(&mut *latency.lock().expect("samples"));
    Ok(Sustained {
        rate: latency.len() as f64 / elapsed,
        warm_share: warm as f64 / latency.len().max(1) as f64,
        latency,
    })
}
