//! What one idle pooled sandbox costs the host: the rise of memory in use per sandbox, and
//! per sandbox its containerd shim (PSS), kiln-init (RSS) and its memory cgroup's usage.

use std::time::Duration;

use anyhow::Context as _;

use kiln_sandbox::memory::parent_of;

use super::{gateway, settle, BenchArgs};

/// The value of a `Key:   123 kB` line of a /proc file.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

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
    kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?,
        key,
    )
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

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let n = args.idle_sandboxes;
    // Start from a quiet engine: the earlier measurements' sandboxes all removed.
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = used_mib().await?;
    let gw = gateway(args, "memory", Some(n)).await?;
    settle(&gw, n).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = used_mib().await?;

    let gateway_id = format!("kiln-bench-memory-{}", std::process::id());
    let ids = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=dev.kiln.gateway={gateway_id}"),
    ])?;
    let (mut shim, mut init, mut cgroup, mut counted) = (0u64, 0u64, 0u64, 0u64);
    for id in ids.split_whitespace() {
        let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", id])?
            .trim()
            .parse()?;
        let Some(shim_pid) = parent_of(pid) else {
            continue;
        };
        shim += status_kib(shim_pid, "Pss:", "smaps_rollup").unwrap_or(0);
        init += status_kib(pid, "VmRSS:", "status").unwrap_or(0);
        cgroup += cgroup_usage_bytes(id).unwrap_or(0) / 1024;
        counted += 1;
    }
    gw.shutdown().await?;
    let per = |kib: u64| kib as f64 / counted.max(1) as f64 / 1024.0;

    println!();
    println!(
        "Memory of one idle pooled sandbox ({n} pooled `{}` sandboxes, {counted} inspected)",
        args.image
    );
    println!();
    println!("| what | MiB per sandbox |");
    println!("| --- | ---: |");
    println!(
        "| host memory in use, rise per sandbox (shim, dockerd and containerd state, kernel) | {:.2} |",
        (after - before) / n as f64
    );
    println!("| containerd shim (PSS) | {:.2} |", per(shim));
    println!("| kiln-init (RSS) | {:.2} |", per(init));
    println!(
        "| container memory cgroup usage (incl. page cache) | {:.2} |",
        per(cgroup)
    );
    Ok(())
}
