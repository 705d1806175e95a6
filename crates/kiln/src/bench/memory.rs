//! What one idle pooled sandbox costs the host: the rise of memory in use per sandbox, and
//! per sandbox its containerd shim, kiln-init and its memory cgroup's usage; zram off and on.

use std::time::Duration;

use anyhow::Context as _;

use kiln_sandbox::memory::{kib_field, parent_of, proc_kib};

use serde_json::{json, Value};

use super::stats::Samples;
use super::{gateway_with, settle, url, BenchArgs};
use crate::config::Switch;

/// Memory in use in MiB, as `free` counted it before `MemAvailable`: total less free, buffers,
/// page cache and reclaimable slab, so that cache churn does not count. The median of a few
/// readings a little apart.
pub(super) async fn used_mib() -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..5 {
        let text = std::fs::read_to_string("/proc/meminfo")?;
        let kib = |key: &str| {
            kib_field(&text, key).with_context(|| format!("{key} not in /proc/meminfo"))
        };
        let used = kib("MemTotal:")?
            .saturating_sub(kib("MemFree:")?)
            .saturating_sub(kib("Buffers:")?)
            .saturating_sub(kib("Cached:")?)
            .saturating_sub(kib("SReclaimable:")?);
        v.push(used as f64 / 1024.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

fn status_kib(pid: u32, key: &str, file: &str) -> Option<u64> {
    proc_kib(&format!("/proc/{pid}/{file}"), key)
}

fn cgroup_usage_bytes(id: &str) -> Option<u64> {
    for p in [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
    ] {
        if let Ok(s) = std::fs::read_to_string(p) {
            return s.trim().parse().ok();
        }
    }
    None
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .context("docker CLI")?;
    anyhow::ensure!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What one pass measured, per idle pooled sandbox.
struct Idle {
    rise_mib: f64,
    shim_pss_mib: f64,
    init_rss_mib: f64,
    init_pss_mib: f64,
    cgroup_mib: f64,
    swapped_mib: f64,
    zram_used_mib: f64,
    counted: u64,
    /// Warm runs, each taking one of these (paged-out, with zram) sandboxes: ms.
    warm: Samples,
}

/// Waits until no sandbox of an earlier bench gateway is left.
async fn quiet_engine() -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    while docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=dev.kiln.managed=true",
        "--format",
        "{{.Label \"dev.kiln.gateway\"}}",
    ])?
    .lines()
    .any(|g| g.starts_with("kiln-bench-"))
    {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "earlier bench sandboxes were not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn pass(args: &BenchArgs, zram: bool) -> anyhow::Result<Idle> {
    let n = args.idle_sandboxes;
    quiet_engine().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = used_mib().await?;
    let tag = if zram { "memory-zram" } else { "memory" };
    let gw = gateway_with(args, tag, Some(n), |c| {
        if zram {
            c.memory.zram = Switch::On;
            c.memory.page_out_after_ms = 1000;
        }
    })
    .await?;
    settle(&gw, n).await?;
    let http = reqwest::Client::new();
    let report = || async {
        let v: Value = http
            .get(format!("http://{}/api/v1/system/memory", gw.addr))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v)
    };
    if zram {
        let t0 = std::time::Instant::now();
        while report().await?["zram"]["sandboxes_paged_out"].as_u64() < Some(n as u64) {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "the pool was not paged out"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = used_mib().await?;
    let v = report().await?;
    let zram_used_mib = v["zram"]["mem_used_bytes"].as_f64().unwrap_or(0.0) / MIB;
    let swapped_mib = v["idle_pooled_sandbox"]["swapped_bytes"]
        .as_f64()
        .unwrap_or(0.0)
        / MIB;

    let gateway_id = format!("kiln-bench-{tag}-{}", std::process::id());
    let ids = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=dev.kiln.gateway={gateway_id}"),
    ])?;
    let (mut shim, mut init, mut init_pss, mut cgroup, mut counted) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for id in ids.split_whitespace() {
        let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", id])?
            .trim()
            .parse()?;
        let Some(shim_pid) = parent_of(pid) else {
            continue;
        };
        shim += status_kib(shim_pid, "Pss:", "smaps_rollup").unwrap_or(0);
        init += status_kib(pid, "VmRSS:", "status").unwrap_or(0);
        init_pss += status_kib(pid, "Pss:", "smaps_rollup").unwrap_or(0);
        cgroup += cgroup_usage_bytes(id).unwrap_or(0) / 1024;
        counted += 1;
    }

    // Half the pool, oldest first: with zram, every one of these was paged out.
    let mut warm = Samples::default();
    let body = json!({"image": args.image, "argv": ["echo", "hello"]});
    for _ in 0..n / 2 {
        // Each from a full, quiet pool: no refill competes with the measured run.
        settle(&gw, n).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = std::time::Instant::now();
        let v: Value = http.post(url(&gw)).json(&body).send().await?.json().await?;
        let ms = super::stats::ms_since(t0);
        anyhow::ensure!(v["stdout"] == "hello\n", "a warm run answered {v}");
        if v["sandbox"]["start"] == "warm" {
            warm.push(ms);
        }
    }
    gw.shutdown().await?;
    let per = |kib: u64| kib as f64 / counted.max(1) as f64 / 1024.0;
    Ok(Idle {
        rise_mib: (after - before) / n as f64,
        shim_pss_mib: per(shim),
        init_rss_mib: per(init),
        init_pss_mib: per(init_pss),
        cgroup_mib: per(cgroup),
        swapped_mib,
        zram_used_mib: zram_used_mib / n as f64,
        counted,
        warm,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

impl Idle {
    /// What the sandbox itself holds: its shim's and kiln-init's proportional share, its
    /// cgroup, and its share of the zram device.
    fn own_mib(&self) -> f64 {
        self.shim_pss_mib + self.init_pss_mib + self.cgroup_mib + self.zram_used_mib
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let n = args.idle_sandboxes;
    // Host memory in use is a noisy, machine-wide figure: passes alternate, medians reported.
    let rounds = 3;
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        offs.push(pass(args, false).await?);
        ons.push(pass(args, true).await?);
    }
    let rise = |v: &[Idle]| median(v.iter().map(|p| p.rise_mib).collect());
    let (rise_off, rise_on) = (rise(&offs), rise(&ons));
    let (mut off, mut on) = (offs.pop().expect("a round"), ons.pop().expect("a round"));
    for p in offs {
        off.warm.extend(&p.warm);
    }
    for p in ons {
        on.warm.extend(&p.warm);
    }
    (off.rise_mib, on.rise_mib) = (rise_off, rise_on);

    println!();
    println!(
        "Memory of one idle pooled sandbox ({n} pooled `{}` sandboxes, zram off and on, paged out after 1 s idle; rise: median of {rounds} alternating passes, the rest from the last pass, {}/{} sandboxes inspected)",
        args.image, off.counted, on.counted
    );
    println!();
    println!("| per sandbox, MiB | zram off | zram on | on / off |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |what: &str, a: f64, b: f64| {
        println!("| {what} | {a:.2} | {b:.2} | {:.0} % |", 100.0 * b / a);
    };
    row(
        "host memory in use, rise per sandbox (all of it: shim, engine state, kernel, zram)",
        off.rise_mib,
        on.rise_mib,
    );
    row(
        "the sandbox's own: shim PSS + kiln-init PSS + cgroup + zram share",
        off.own_mib(),
        on.own_mib(),
    );
    row(
        "containerd shim (PSS, in memory)",
        off.shim_pss_mib,
        on.shim_pss_mib,
    );
    row(
        "kiln-init (PSS, in memory)",
        off.init_pss_mib,
        on.init_pss_mib,
    );
    row(
        "kiln-init (RSS, in memory)",
        off.init_rss_mib,
        on.init_rss_mib,
    );
    row(
        "container memory cgroup usage (incl. page cache)",
        off.cgroup_mib,
        on.cgroup_mib,
    );
    println!(
        "| shim + kiln-init memory in swap | {:.2} | {:.2} | |",
        off.swapped_mib, on.swapped_mib
    );
    println!(
        "| zram device's own memory | {:.2} | {:.2} | |",
        off.zram_used_mib, on.zram_used_mib
    );
    println!();
    println!("| warm run (echo hello) from an idle pooled sandbox | runs | p50 ms | p90 | p99 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, w) in [
        ("not paged out", &off.warm),
        ("paged out to zram", &on.warm),
    ] {
        println!(
            "| {label} | {} | {:.2} | {:.2} | {:.2} |",
            w.len(),
            w.p(50.0),
            w.p(90.0),
            w.p(99.0)
        );
    }
    Ok(())
}
