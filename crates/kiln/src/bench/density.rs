//! Memory density (issue 5): N long-lived sandboxes running the same Python workload, the
//! host's memory in use with KSM off and on, side by side.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::memory::used_mib;
use super::BenchArgs;
use crate::config::{Config, HostPolicy, Switch};

/// Imports the standard library's heavier modules and builds the same data in every sandbox,
/// then holds it.
const WORKLOAD: &str = "\
import json, decimal, email.parser, http.client, xml.etree.ElementTree, asyncio, unittest, argparse, csv, sqlite3
data = [str(i) * 10 for i in range(200000)]
table = {i: ('kiln', i, float(i)) for i in range(100000)}
import time
time.sleep(HOLD)
print(len(data), len(table))
";

struct Phase {
    used_mib: f64,
    pages_sharing: u64,
}

async fn phase(args: &BenchArgs, n: usize, ksm: Switch, hold_s: u64) -> anyhow::Result<Phase> {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.max_concurrent = n.max(8) * 2;
    config.docker.host = args.docker_host.clone();
    config.docker.init_path = args.init_path.clone();
    config.docker.gateway_id = format!("kiln-bench-density-{}", std::process::id());
    config.pool.enabled = false;
    config.cache.l2_path = None;
    config.memory.ksm = ksm;
    config.memory.ksm_host = HostPolicy::Manage;
    config.memory.ksm_pages_to_scan = 4000;
    config.memory.ksm_sleep_ms = 10;
    let gw = crate::serve::start(config, false).await?;
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = used_mib().await?;

    let code = WORKLOAD.replace("HOLD", &hold_s.to_string());
    let body = json!({"image": "kiln/python", "argv": ["python3", "-c", code], "limits": {"timeout_ms": (hold_s + 60) * 1000, "memory_mb": 512}});
    let runs: Vec<_> = (0..n)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/api/v1/execute");
            let body = body.clone();
            tokio::spawn(async move {
                http.post(url)
                    .json(&body)
                    .send()
                    .await?
                    .json::<Value>()
                    .await
            })
        })
        .collect();

    // Every sandbox must have built its data, and KSM must have converged (or, off, found
    // nothing): until memory in use and pages_sharing both stay within 1 % for 4 s, at most 90 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sharing = || async {
        let v: Value = http
            .get(format!("{base}/api/v1/system/memory"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v["ksm"]["pages_sharing"].as_u64().unwrap_or(0))
    };
    let t0 = Instant::now();
    let (mut last_used, mut last) = (used_mib().await?, sharing().await?);
    let mut stable_since = Instant::now();
    while t0.elapsed() < Duration::from_secs(90) && stable_since.elapsed() < Duration::from_secs(4)
    {
        let (used, now) = (used_mib().await?, sharing().await?);
        let moved = |a: f64, b: f64| (a - b).abs() > b.abs() / 100.0 + 1.0;
        if moved(used, last_used) || moved(now as f64, last as f64) {
            stable_since = Instant::now();
        }
        (last_used, last) = (used, now);
    }
    let after = used_mib().await?;
    for r in runs {
        let v = r.await?.context("a density run")?;
        anyhow::ensure!(v["status"] == "ok", "a density run ended {v}");
    }
    gw.shutdown().await?;
    Ok(Phase {
        used_mib: after - before,
        pages_sharing: last,
    })
}

pub async fn run(args: &BenchArgs, n: usize) -> anyhow::Result<()> {
    let hold_s = 150;
    let off = phase(args, n, Switch::Off, hold_s).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on = phase(args, n, Switch::On, hold_s).await?;
    println!();
    println!("Memory of {n} sandboxes running the same Python workload (stdlib imports, the same data built), host memory in use");
    println!();
    println!("| KSM | MiB in use, all sandboxes | MiB per sandbox | pages_sharing | vs KSM off |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, p) in [("off", &off), ("on", &on)] {
        println!(
            "| {label} | {:.0} | {:.1} | {} | {:.0} % |",
            p.used_mib,
            p.used_mib / n as f64,
            p.pages_sharing,
            100.0 * p.used_mib / off.used_mib
        );
    }
    println!();
    println!(
        "KSM saves {:.0} % of the sandboxes' memory on this workload.",
        100.0 * (1.0 - on.used_mib / off.used_mib)
    );
    Ok(())
}
