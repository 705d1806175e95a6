//! The result cache through HTTP with a keep-alive client: misses (cold and warm) against hits
//! from each tier, side by side, then the rate of L1 hits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use kiln_api::ExecuteResponse;
use serde_json::{json, Value};

use super::{BenchArgs, Samples};
use crate::config::PoolEntry;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn run(&self, body: &Value) -> anyhow::Result<(f64, ExecuteResponse)> {
        let t0 = Instant::now();
        let res = self
            .http
            .post(format!("{}/api/v1/execute", self.base))
            .json(body)
            .send()
            .await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        let ms = super::stats::ms_since(t0);
        if !status.is_success() {
            bail!(
                "gateway answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok((ms, serde_json::from_slice(&bytes)?))
    }

    async fn health(&self) -> anyhow::Result<()> {
        let res = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "health: {}", res.status());
        res.bytes().await?;
        Ok(())
    }

    async fn purge_tier(&self, tier: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .delete(format!("{}/api/v1/cache?tier={tier}", self.base))
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "purging {tier}: {}",
            res.status()
        );
        Ok(())
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let redis = kiln_cache::local_redis::LocalRedis::start()?;
    let dir = tempfile_dir()?;
    let mut config = super::bench_config(args, "cache");
    config.pool.enabled = true;
    config.pool.on_demand = false;
    config.pool.pools = vec![PoolEntry {
        name: Some("bench".into()),
        image: args.image.clone(),
        workdir: None,
        limits: Default::default(),
        network: false,
        min: 4,
        max: 4,
        thp: None,
    }];
    config.cache.l2_path = Some(dir.join("cache.redb"));
    config.cache.redis_url = Some(redis.url());
    let gw = crate::serve::start(config, false).await?;
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", gw.addr),
    };
    let result = measure(args, &client, &gw).await;
    gw.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kiln-bench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn measure(
    args: &BenchArgs,
    client: &Client,
    gw: &crate::serve::Running,
) -> anyhow::Result<()> {
    let image = &args.image;
    let n = args.iterations;
    let hit_body = json!({"image": image, "argv": ["echo", "cached"], "cache": "use"});
    let (_, first) = client.run(&hit_body).await?;
    anyhow::ensure!(first.cache.key.is_some(), "the cache is not on");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let labels = [
        "miss, cold sandbox",
        "miss, warm sandbox",
        "hit, L1",
        "hit, L2",
        "hit, L3",
    ];
    let mut samples = vec![Samples::default(); labels.len()];
    let mut counter = 0u64;
    for i in 0..n {
        for k in 0..labels.len() {
            let idx = (i + k) % labels.len();
            counter += 1;
            let (body, want) = match idx {
                // A key seen for the first time, with limits no pool serves: a cold sandbox.
                0 => (
                    json!({"image": image, "argv": ["echo", counter.to_string()], "limits": {"memory_mb": 200}, "cache": "use"}),
                    None,
                ),
                1 => (
                    json!({"image": image, "argv": ["echo", counter.to_string()], "cache": "use"}),
                    None,
                ),
                2 => (hit_body.clone(), Some("l1")),
                3 => {
                    client.purge_tier("l1").await?;
                    (hit_body.clone(), Some("l2"))
                }
                _ => {
                    client.purge_tier("l1").await?;
                    client.purge_tier("l2").await?;
                    (hit_body.clone(), Some("l3"))
                }
            };
            super::settle(gw, 4).await?;
            // Every sample starts alike: the connection and the server's threads just used (an
            // L2 or L3 sample follows its purge request; the others would follow a pause).
            client.health().await?;
            let (ms, res) = client.run(&body).await?;
            if res.cache.tier.as_deref() != want {
                bail!("{}: answered from {:?}", labels[idx], res.cache.tier);
            }
            if want.is_none() && (idx == 1) != (res.sandbox.start == kiln_api::StartKind::Warm) {
                bail!("{}: served {:?}", labels[idx], res.sandbox.start);
            }
            samples[idx].push(ms);
            // Let the background writes of this answer (and the promotion of a hit) land.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!();
    println!("Result cache through HTTP (keep-alive client), {n} samples each, interleaved");
    println!();
    println!("| answer | p50 ms | p90 ms | p99 ms | p50 vs cold miss |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let cold = samples[0].p(50.0);
    for (label, s) in labels.iter().zip(&samples) {
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} | {:.4}× |",
            s.p(50.0),
            s.p(90.0),
            s.p(99.0),
            s.p(50.0) / cold
        );
    }

    // Throughput of L1 hits: closed loop, a few clients, a few seconds.
    client.run(&hit_body).await?;
    let clients = 4;
    let span = Duration::from_secs(5);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t0 = Instant::now();
    let hit_body = &hit_body;
    let loops = (0..clients).map(|_| {
        let done = done.clone();
        async move {
            while t0.elapsed() < span {
                let (_, res) = client.run(hit_body).await?;
                anyhow::ensure!(res.cache.tier.as_deref() == Some("l1"), "not an L1 hit");
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    });
    for r in futures_util::future::join_all(loops).await {
        r?;
    }
    let rate = done.load(std::sync::atomic::Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    println!();
    println!(
        "L1 hits through HTTP: {rate:.0} per second ({clients} keep-alive clients, {} s)",
        span.as_secs()
    );
    Ok(())
}
