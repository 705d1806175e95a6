//! Counters and histograms for Prometheus' text format, kept with atomics so that the hot path
//! never takes a lock to count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets in seconds, from the warm path's milliseconds to slow cold starts.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sandbox creations (create, channel, start), by the pool and by the executor alike.
#[derive(Debug, Default)]
pub struct LaunchMetrics {
    pub latency: Histogram,
    pub failures: Counter,
}

impl LaunchMetrics {
    /// Launches through `backend`, counting the time or the failure.
    pub async fn launch(
        &self,
        backend: &dyn crate::Backend,
        spec: &crate::SandboxSpec,
    ) -> crate::Result<Box<dyn crate::Sandbox>> {
        let t0 = std::time::Instant::now();
        let r = backend.launch(spec).await;
        match &r {
            Ok(_) => self.latency.observe(t0.elapsed()),
            Err(_) => self.failures.inc(),
        }
        r
    }
}

/// A cumulative histogram over [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if s <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines; `labels` is `k="v",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-pool figure: metric name, help text, and how to read it off a pool's status.
type PoolFigure = (
    &'static str,
    &'static str,
    fn(&crate::pool::PoolStatus) -> u64,
);

/// Everything an operator watches, in Prometheus' text format: pools (ready, target, min, max,
/// hits, misses, removals by reason), creation latency, run latency by start kind, runs by
/// status, slots in use and queued runs.
pub fn render(executor: &crate::Executor) -> String {
    let mut out = String::new();
    let m = &executor.metrics;
    header(
        &mut out,
        "kiln_runs_total",
        "counter",
        "Runs that ended, by status.",
    );
    for (status, c) in crate::executor::STATUSES.iter().zip(&m.runs) {
        let _ = writeln!(
            out,
            "kiln_runs_total{{status=\"{}\"}} {}",
            status.as_str(),
            c.get()
        );
    }
    header(
        &mut out,
        "kiln_run_errors_total",
        "counter",
        "Requests answered with an error instead of a result.",
    );
    let _ = writeln!(out, "kiln_run_errors_total {}", m.failed.get());
    header(
        &mut out,
        "kiln_run_retries_total",
        "counter",
        "Runs retried because their warm sandbox was lost.",
    );
    let _ = writeln!(out, "kiln_run_retries_total {}", m.retried.get());
    header(
        &mut out,
        "kiln_run_duration_seconds",
        "histogram",
        "From admission to the exit frame, by start kind.",
    );
    m.latency_warm
        .render(&mut out, "kiln_run_duration_seconds", "start=\"warm\"");
    m.latency_cold
        .render(&mut out, "kiln_run_duration_seconds", "start=\"cold\"");
    header(
        &mut out,
        "kiln_runs_in_flight",
        "gauge",
        "Runs holding a slot.",
    );
    let _ = writeln!(out, "kiln_runs_in_flight {}", executor.running());
    header(
        &mut out,
        "kiln_runs_queued",
        "gauge",
        "Runs waiting for a slot.",
    );
    let _ = writeln!(out, "kiln_runs_queued {}", executor.queued());

    let launches = executor.launches();
    launches.latency.render_with_header(
        &mut out,
        "kiln_sandbox_create_duration_seconds",
        "Creating and starting one sandbox until kiln-init is connected.",
    );
    header(
        &mut out,
        "kiln_sandbox_create_failures_total",
        "counter",
        "Sandbox creations that failed.",
    );
    let _ = writeln!(
        out,
        "kiln_sandbox_create_failures_total {}",
        launches.failures.get()
    );
    header(
        &mut out,
        "kiln_sandbox_removals_pending",
        "gauge",
        "Sandbox removals running in the background.",
    );
    let _ = writeln!(
        out,
        "kiln_sandbox_removals_pending {}",
        executor.backend().pending_removals()
    );
    let (done, failed) = executor.backend().removals();
    header(
        &mut out,
        "kiln_sandbox_removals_total",
        "counter",
        "Sandboxes removed (used or not), by result.",
    );
    let _ = writeln!(out, "kiln_sandbox_removals_total{{result=\"ok\"}} {done}");
    let _ = writeln!(
        out,
        "kiln_sandbox_removals_total{{result=\"failed\"}} {failed}"
    );

    let Some(pool) = executor.pool() else {
        return out;
    };
    let pools = pool.status();
    let gauges: [PoolFigure; 6] = [
        ("kiln_pool_ready", "Sandboxes ready in the pool.", |p| {
            p.ready as u64
        }),
        (
            "kiln_pool_creating",
            "Sandboxes being created for the pool or its waiters.",
            |p| p.creating as u64,
        ),
        (
            "kiln_pool_waiting",
            "Runs waiting for the pool's next sandbox.",
            |p| p.waiting as u64,
        ),
        (
            "kiln_pool_target",
            "Ready sandboxes the pool aims at (the forecast).",
            |p| p.target as u64,
        ),
        ("kiln_pool_min", "The pool's minimum.", |p| p.min as u64),
        ("kiln_pool_max", "The pool's maximum.", |p| p.max as u64),
    ];
    for (name, help, get) in gauges {
        header(&mut out, name, "gauge", help);
        for p in &pools {
            let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", label(&p.name), get(p));
        }
    }
    for (name, help, get) in [
        (
            "kiln_pool_hits_total",
            "Runs that found a ready sandbox.",
            (|p: &crate::pool::PoolStatus| p.hits) as fn(&crate::pool::PoolStatus) -> u64,
        ),
        (
            "kiln_pool_misses_total",
            "Runs that waited for a sandbox to be created.",
            |p| p.misses,
        ),
    ] {
        header(&mut out, name, "counter", help);
        for p in &pools {
            let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", label(&p.name), get(p));
        }
    }
    header(
        &mut out,
        "kiln_pool_removed_total",
        "counter",
        "Pooled sandboxes removed without serving a run, by reason.",
    );
    for p in &pools {
        for (reason, n) in &p.removed {
            let _ = writeln!(
                out,
                "kiln_pool_removed_total{{pool=\"{}\",reason=\"{reason}\"}} {n}",
                label(&p.name)
            );
        }
    }
    out
}

impl Histogram {
    fn render_with_header(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        self.render(out, name, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(800));
        h.observe(Duration::from_millis(40));
        let mut out = String::new();
        h.render(&mut out, "x", "start=\"warm\"");
        assert!(
            out.contains("x_bucket{start=\"warm\",le=\"0.0005\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{start=\"warm\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{start=\"warm\",le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{start=\"warm\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_count{start=\"warm\"} 2\n"), "{out}");
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
