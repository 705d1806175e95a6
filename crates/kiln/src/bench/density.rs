//! Memory density (issue 5): N long-lived sandboxes running the same Python workload, the
//! host's memory in use and the workload's own time with each mechanism off and on, side by
//! side: KSM, transparent huge pages, zram, and all together.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::memory::used_mib;
use super::{bench_config, BenchArgs};
use crate::config::{HostPolicy, SandboxThp, Switch, ThpHost};

/// Imports the standard library's heavier modules and builds the same data in every sandbox,
/// then holds it.
/// Prints the milliseconds the imports and the data took.
const WORKLOAD: &str = "\
import time
t0 = time.perf_counter()
import json, decimal, email.parser, http.client, xml.etree.ElementTree, asyncio, unittest, argparse, csv, sqlite3
data = [str(i) * 10 for i in range(200000)]
table = {i: ('kiln', i, float(i)) for i in range(100000)}
print(round((time.perf_counter() - t0) * 1000, 1), flush=True)
time.sleep(HOLD)
";

/// One column of the table: which mechanisms are on.
#[derive(Debug, Clone, Copy)]
struct Setting {
    label: &'static str,
    ksm: Switch,
    thp: ThpHost,
    sandbox_thp: SandboxThp,
    zram: Switch,
}

const fn setting(
    label: &'static str,
    ksm: Switch,
    thp: ThpHost,
    sandbox_thp: SandboxThp,
    zram: Switch,
) -> Setting {
    Setting {
        label,
        ksm,
        thp,
        sandbox_thp,
        zram,
    }
}

use SandboxThp::{Allow, Disable};
use Switch::{Off, On};

/// Every mechanism off (THP as most distributions ship it, `madvise`); then each alone; then
/// all together.
const SETTINGS: [Setting; 6] = [
    setting("none (THP madvise)", Off, ThpHost::Madvise, Allow, Off),
    setting("KSM", On, ThpHost::Madvise, Allow, Off),
    setting("THP always", Off, ThpHost::Always, Allow, Off),
    setting("THP off in sandboxes", Off, ThpHost::Madvise, Disable, Off),
    setting("zram", Off, ThpHost::Madvise, Allow, On),
    setting(
        "all: KSM, zram, THP off in sandboxes",
        On,
        ThpHost::Madvise,
        Disable,
        On,
    ),
];

struct Phase {
    used_mib: f64,
    pages_sharing: u64,
    anon_huge_mib: f64,
    zram_mib: f64,
    /// The workload's own time (imports and data), median across the sandboxes.
    work_ms: f64,
}

async fn phase(args: &BenchArgs, n: usize, s: Setting, hold_s: u64) -> anyhow::Result<Phase> {
    let mut config = bench_config(args, "density");
    config.server.max_concurrent = n.max(8) * 2;
    config.memory.ksm = s.ksm;
    config.memory.ksm_host = HostPolicy::Manage;
    config.memory.thp = s.thp;
    config.memory.sandbox_thp = s.sandbox_thp;
    config.memory.zram = s.zram;
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
    let report = || async {
        let v: Value = http
            .get(format!("{base}/api/v1/system/memory"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v)
    };
    let sharing = || async {
        anyhow::Ok(
            report().await?["ksm"]["pages_sharing"]
                .as_u64()
                .unwrap_or(0),
        )
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
    let v = report().await?;
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    let (anon_huge_mib, zram_mib) = (
        mib(&v["thp"]["anon_huge_bytes"]),
        mib(&v["zram"]["mem_used_bytes"]),
    );
    let mut work = Vec::new();
    for r in runs {
        let v = r.await?.context("a density run")?;
        anyhow::ensure!(v["status"] == "ok", "a density run ended {v}");
        let ms: f64 = v["stdout"]
            .as_str()
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("no time printed: {v}"))?;
        work.push(ms);
    }
    work.sort_by(f64::total_cmp);
    gw.shutdown().await?;
    Ok(Phase {
        used_mib: after - before,
        pages_sharing: last,
        anon_huge_mib,
        zram_mib,
        work_ms: work[work.len() / 2],
    })
}

pub async fn run(args: &BenchArgs, n: usize) -> anyhow::Result<()> {
    let hold_s = 100;
    let mut phases = Vec::new();
    for setting in SETTINGS {
        eprintln!("density: {} …", setting.label);
        phases.push((setting, phase(args, n, setting, hold_s).await?));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let base = phases[0].1.used_mib;
    let base_ms = phases[0].1.work_ms;
    println!();
    println!("Memory of {n} sandboxes running the same Python workload (stdlib imports, the same data built), host memory in use, and the workload's time");
    println!();
    println!("| mechanisms | MiB in use, all sandboxes | MiB per sandbox | vs none | KSM pages_sharing | AnonHugePages MiB | zram MiB | workload p50 ms | time vs none |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (s, p) in &phases {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} % | {} | {:.0} | {:.1} | {:.0} | {:.2}× |",
            s.label,
            p.used_mib,
            p.used_mib / n as f64,
            100.0 * p.used_mib / base,
            p.pages_sharing,
            p.anon_huge_mib,
            p.zram_mib,
            p.work_ms,
            p.work_ms / base_ms,
        );
    }
    Ok(())
}

/// One run of the workload, alone, in a fresh sandbox: the workload's own time and the
/// sandbox's peak memory (its cgroup's), under each THP choice. Rounds alternate the choices.
pub async fn thp(args: &BenchArgs, runs: usize) -> anyhow::Result<()> {
    let choices = [
        ("host madvise, sandboxes allow", ThpHost::Madvise, Allow),
        ("host always, sandboxes allow", ThpHost::Always, Allow),
        (
            "host always, sandboxes disable (PR_SET_THP_DISABLE)",
            ThpHost::Always,
            Disable,
        ),
    ];
    let rounds = 3;
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); choices.len()];
    let mut peak: Vec<Vec<f64>> = vec![Vec::new(); choices.len()];
    for _ in 0..rounds {
        for (i, (_, host, sandbox)) in choices.iter().enumerate() {
            let mut config = bench_config(args, "thp");
            config.memory.ksm = Off;
            config.memory.thp = *host;
            config.memory.sandbox_thp = *sandbox;
            let gw = crate::serve::start(config, false).await?;
            let http = reqwest::Client::new();
            let code = WORKLOAD.replace("HOLD", "0");
            let body = json!({"image": "kiln/python", "argv": ["python3", "-c", code], "limits": {"memory_mb": 512}});
            for _ in 0..runs.div_ceil(rounds) {
                let v: Value = http
                    .post(format!("http://{}/api/v1/execute", gw.addr))
                    .json(&body)
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::ensure!(v["status"] == "ok", "a THP run ended {v}");
                let t: f64 = v["stdout"]
                    .as_str()
                    .and_then(|s| s.trim().parse().ok())
                    .with_context(|| format!("no time printed: {v}"))?;
                ms[i].push(t);
                peak[i].push(
                    v["usage"]["memory_peak_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
                );
            }
            gw.shutdown().await?;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (base_ms, base_peak) = (median(&mut ms[0].clone()), median(&mut peak[0].clone()));
    println!();
    println!("The Python workload alone in a fresh sandbox, one run at a time ({} runs per choice, {rounds} alternating rounds): its own time and the sandbox's peak memory", ms[0].len());
    println!();
    println!("| THP | workload p50 ms | vs madvise | peak memory p50 MiB | vs madvise |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, (label, _, _)) in choices.iter().enumerate() {
        let (t, p) = (median(&mut ms[i]), median(&mut peak[i]));
        println!(
            "| {label} | {t:.0} | {:.2}× | {p:.1} | {:.0} % |",
            t / base_ms,
            100.0 * p / base_peak
        );
    }
    Ok(())
}
