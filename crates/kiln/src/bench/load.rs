//! Load far above the pool (issue 6): clients in a closed loop at 10× and 20× the pool size,
//! every answer counted (a result, or 503 with `Retry-After`), latencies of both, the
//! gateway process's memory; beside it the bare Docker API with the same clients and no
//! admission control, which is what a user without Kiln would run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_sandbox::docker::{baseline, DockerBackend};
use serde_json::json;

use super::stats::Samples;
use super::{gateway_with, settle, url, BenchArgs};

#[derive(Debug, Default)]
struct Tally {
    ok: Samples,
    shed: Samples,
    shed_without_retry_after: usize,
    other: usize,
}

struct Row {
    label: String,
    clients: usize,
    secs: f64,
    tally: Tally,
    rss_before: f64,
    rss_peak: f64,
}

fn rss_mib() -> f64 {
    kiln_sandbox::memory::proc_kib("/proc/self/status", "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// `clients` loops for `span`, each calling `one` and recording what came back.
async fn closed_loop<F, Fut>(clients: usize, span: Duration, one: F) -> (Tally, f64, f64)
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = (u16, bool)>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let peak = Arc::new(Mutex::new(rss_mib()));
    let t0 = Instant::now();
    let loops = (0..clients).map(|_| {
        let (stop, tally, one) = (stop.clone(), tally.clone(), one.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (code, retry_after) = one().await;
                let ms = super::stats::ms_since(t);
                {
                    let mut tl = tally.lock().expect("tally");
                    match code {
                        200 => tl.ok.push(ms),
                        503 => {
                            tl.shed.push(ms);
                            tl.shed_without_retry_after += usize::from(!retry_after);
                        }
                        _ => tl.other += 1,
                    }
                }
                if code == 503 {
                    // A client that honours back-pressure waits a little before it retries.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let watch = {
        let (stop, peak) = (stop.clone(), peak.clone());
        async move {
            while t0.elapsed() < span {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut p = peak.lock().expect("peak");
                *p = p.max(rss_mib());
            }
            stop.store(true, Ordering::Relaxed);
        }
    };
    tokio::join!(futures_util::future::join_all(loops), watch);
    let secs = t0.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    let peak = *peak.lock().expect("peak");
    (tally, secs, peak)
}

pub async fn run(args: &BenchArgs, pool: usize) -> anyhow::Result<()> {
    let span = Duration::from_secs(args.load_secs);
    let mut rows = Vec::new();
    for clients in [10 * pool, 20 * pool] {
        // The server's own admission defaults, not the other benchmarks' wide-open ones.
        let gw = gateway_with(args, "load", Some(pool), |c| {
            c.server.max_concurrent = crate::config::ServerSection::default().max_concurrent;
        })
        .await?;
        settle(&gw, pool).await?;
        let rss_before = rss_mib();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?;
        let target = url(&gw);
        let body = json!({"image": args.image, "argv": ["echo", "hello"]});
        let one = || {
            let (http, target, body) = (http.clone(), target.clone(), body.clone());
            async move {
                match http.post(&target).json(&body).send().await {
                    Ok(res) => (
                        res.status().as_u16(),
                        res.headers().contains_key("retry-after"),
                    ),
                    Err(_) => (0, false),
                }
            }
        };
        let (tally, secs, rss_peak) = closed_loop(clients, span, one).await;
        gw.shutdown().await?;
        rows.push(Row {
            label: format!("Kiln, pool of {pool}, default admission"),
            clients,
            secs,
            tally,
            rss_before,
            rss_peak,
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // The bare API with 10× the pool's clients and nothing in front of it.
    let mut probe = crate::config::Config::default();
    probe.docker.host = args.docker_host.clone();
    let mut probe_config = probe.docker.to_backend_config();
    probe_config.channel_dir = None;
    let backend = Arc::new(DockerBackend::connect(probe_config).await?);
    let clients = 10 * pool;
    let image = args.image.clone();
    let one = || {
        let (backend, image) = (backend.clone(), image.clone());
        async move {
            match baseline::create_start_wait_remove(&backend, &image, &["echo", "hello"], true)
                .await
            {
                Ok(0) => (200, false),
                _ => (0, false),
            }
        }
    };
    let rss_before = rss_mib();
    let (tally, secs, rss_peak) = closed_loop(clients, span, one).await;
    rows.push(Row {
        label: "bare Docker API create→start→wait→remove, no admission".into(),
        clients,
        secs,
        tally,
        rss_before,
        rss_peak,
    });

    println!();
    println!(
        "Load: clients in a closed loop for {} s each (`echo hello`, {}); a 503 is retried after 100 ms",
        args.load_secs, args.image
    );
    println!();
    println!("| path | clients | answers | ok | 503 (all with Retry-After) | failed | ok/s | ok p50 ms | ok p90 | ok p99 | 503 p99 ms | process RSS MiB before → peak |");
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &rows {
        let t = &r.tally;
        println!(
            "| {} | {} | {} | {} | {} ({}) | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} → {:.0} |",
            r.label,
            r.clients,
            t.ok.len() + t.shed.len() + t.other,
            t.ok.len(),
            t.shed.len(),
            if t.shed_without_retry_after == 0 { "yes" } else { "NO" },
            t.other,
            t.ok.len() as f64 / r.secs,
            t.ok.p(50.0),
            t.ok.p(90.0),
            t.ok.p(99.0),
            t.shed.p(99.0),
            r.rss_before,
            r.rss_peak,
        );
    }
    Ok(())
}
