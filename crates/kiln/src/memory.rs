//! The gateway's side of memory density: applies the `[memory]` section to the host at start
//! (KSM daemon, THP policy, zram swap), puts the host back at shutdown, and reports what the
//! mechanisms do.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kiln_sandbox::memory::{resident_and_swapped, Ksm, KsmSettings, Thp, Zram, ZramSettings};
use kiln_sandbox::pool::PoolManager;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::{HostPolicy, MemorySection, SandboxThp, Switch, ThpHost};

#[derive(Debug)]
pub struct Memory {
    ksm_on: bool,
    ksm: Mutex<Ksm>,
    thp: Mutex<Thp>,
    sandbox_thp: SandboxThp,
    zram: Mutex<Zram>,
    page_out_after: Duration,
    pool: OnceLock<Arc<PoolManager>>,
}

/// What the idle pooled sandboxes hold, per sandbox, from their host processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IdleSandboxes {
    pub count: usize,
    /// Proportional share of resident memory of the sandbox's init and shim, bytes per sandbox.
    pub resident_bytes: f64,
    /// Their memory in swap (zram), bytes per sandbox.
    pub swapped_bytes: f64,
}

impl Memory {
    /// Applies the host side of `section`. Nothing here stops the server: a knob that cannot
    /// be written is logged, with the reason kept for `/api/v1/system/memory`.
    pub fn start(section: &MemorySection) -> Memory {
        let mut ksm = Ksm::new(&section.sysfs);
        ksm.apply(KsmSettings {
            manage: section.ksm_host == HostPolicy::Manage,
            pages_to_scan: section.ksm_pages_to_scan,
            sleep_millisecs: section.ksm_sleep_ms,
        });
        match &ksm.unmanaged_reason {
            None => info!(
                pages_to_scan = section.ksm_pages_to_scan,
                sleep_ms = section.ksm_sleep_ms,
                "KSM daemon on"
            ),
            Some(reason) if section.ksm_host == HostPolicy::Manage => {
                warn!(%reason, "KSM daemon not managed")
            }
            Some(reason) => info!(%reason, "KSM daemon left as the host has it"),
        }

        let mut thp = Thp::new(&section.sysfs);
        thp.apply(section.thp.to_policy());
        match &thp.unmanaged_reason {
            None => info!(policy = ?thp.policy(), "THP policy set"),
            Some(reason) if section.thp != ThpHost::Leave => {
                warn!(%reason, "THP policy not set")
            }
            Some(_) => {}
        }

        let mut zram = Zram::new(&section.sysfs);
        if section.zram == Switch::On {
            zram.setup(&ZramSettings {
                size_bytes: section.zram_size_mb << 20,
                algorithm: section.zram_algorithm.clone(),
                priority: section.zram_priority,
            });
            match (&zram.reason, zram.device_path()) {
                (None, Some(dev)) => info!(
                    device = %dev.display(),
                    made_here = zram.owned(),
                    "zram swap in use; idle pooled sandboxes are paged out"
                ),
                (reason, _) => warn!(reason = ?reason, "zram swap not in use"),
            }
        }
        Memory {
            ksm_on: section.ksm == Switch::On,
            ksm: Mutex::new(ksm),
            thp: Mutex::new(thp),
            sandbox_thp: section.sandbox_thp,
            zram: Mutex::new(zram),
            page_out_after: Duration::from_millis(section.page_out_after_ms),
            pool: OnceLock::new(),
        }
    }

    /// Whether kiln-init marks runs mergeable.
    pub fn ksm_on(&self) -> bool {
        self.ksm_on
    }

    /// After how long idle pooled sandboxes are paged out: only with a zram device in use.
    pub fn page_out_after(&self) -> Option<Duration> {
        self.zram
            .lock()
            .expect("zram lock")
            .device_path()
            .map(|_| self.page_out_after)
    }

    /// The pools whose idle sandboxes the report measures.
    pub fn watch(&self, pool: Arc<PoolManager>) {
        let _ = self.pool.set(pool);
    }

    /// Puts back the host's KSM settings and THP policy and takes down a zram device made at
    /// start (its pages come back into memory first).
    pub fn stop(&self) {
        self.ksm.lock().expect("ksm lock").restore();
        self.thp.lock().expect("thp lock").restore();
        self.zram.lock().expect("zram lock").teardown();
    }

    /// Memory of the idle pooled sandboxes' host processes, per sandbox.
    pub fn idle_sandboxes(&self) -> IdleSandboxes {
        let Some(pool) = self.pool.get() else {
            return IdleSandboxes::default();
        };
        let sandboxes = pool.ready_host_pids();
        let (mut resident, mut swapped, mut count) = (0u64, 0u64, 0usize);
        for pids in &sandboxes {
            if pids.is_empty() {
                continue;
            }
            count += 1;
            for (r, s) in pids.iter().filter_map(|p| resident_and_swapped(*p)) {
                resident += r;
                swapped += s;
            }
        }
        let per = |b: u64| b as f64 / count.max(1) as f64;
        IdleSandboxes {
            count,
            resident_bytes: per(resident),
            swapped_bytes: per(swapped),
        }
    }

    /// `GET /api/v1/system/memory`.
    pub fn report(&self) -> Value {
        let ksm = self.ksm.lock().expect("ksm lock");
        let stats = ksm.stats();
        let thp = self.thp.lock().expect("thp lock");
        let zram = self.zram.lock().expect("zram lock");
        let zs = zram.stats();
        let described = zram.describe();
        let idle = self.idle_sandboxes();
        let page_outs = self.pool.get().map(|p| p.page_outs());
        json!({
            "ksm": {
                "runs_mergeable": self.ksm_on,
                "host_managed": ksm.unmanaged_reason.is_none(),
                "reason": ksm.unmanaged_reason,
                "available": stats.is_some(),
                "run": stats.map(|s| s.run),
                "pages_shared": stats.map(|s| s.pages_shared),
                "pages_sharing": stats.map(|s| s.pages_sharing),
                "pages_unshared": stats.map(|s| s.pages_unshared),
                "bytes_saved": stats.map(|s| s.bytes_saved()),
                "general_profit": stats.and_then(|s| s.general_profit),
            },
            "thp": {
                "enabled": thp.policy(),
                "host_managed": thp.unmanaged_reason.is_none(),
                "reason": thp.unmanaged_reason,
                "sandboxes": match self.sandbox_thp {
                    SandboxThp::Allow => "allow",
                    SandboxThp::Disable => "disable",
                },
                "anon_huge_bytes": Thp::anon_huge_bytes(),
            },
            "zram": {
                "enabled": zs.is_some(),
                "reason": zram.reason,
                "device": zram.device_path().map(|p| p.display().to_string()),
                "made_here": zram.owned(),
                "algorithm": described.as_ref().map(|d| d.0.clone()),
                "disksize_bytes": described.map(|d| d.1),
                "orig_data_bytes": zs.map(|s| s.orig_data_size),
                "compr_data_bytes": zs.map(|s| s.compr_data_size),
                "mem_used_bytes": zs.map(|s| s.mem_used_total),
                "same_page_bytes": zs.map(|s| s.same_pages),
                "page_out_after_ms": zs.map(|_| self.page_out_after.as_millis() as u64),
                "sandboxes_paged_out": page_outs.map(|p| p.sandboxes.get()),
                "page_out_errors": page_outs.map(|p| p.errors.get()),
            },
            "idle_pooled_sandbox": {
                "count": idle.count,
                "resident_bytes": idle.resident_bytes.round() as u64,
                "swapped_bytes": idle.swapped_bytes.round() as u64,
            },
        })
    }

    /// Prometheus gauges: KSM counters, zram's sizes, idle pooled sandboxes' memory.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut figures: Vec<(&str, &str, i64)> = Vec::new();
        if let Some(s) = self.ksm.lock().expect("ksm lock").stats() {
            figures.extend([
                (
                    "kiln_ksm_pages_shared",
                    "KSM pages in use that back several pages.",
                    s.pages_shared as i64,
                ),
                (
                    "kiln_ksm_pages_sharing",
                    "Pages that share a KSM page (the saving, in pages).",
                    s.pages_sharing as i64,
                ),
                (
                    "kiln_ksm_bytes_saved",
                    "Bytes KSM saves: pages_sharing × page size.",
                    s.bytes_saved() as i64,
                ),
                (
                    "kiln_ksm_general_profit_bytes",
                    "KSM's own net saving, its metadata subtracted.",
                    s.general_profit.unwrap_or(0),
                ),
            ]);
        }
        if let Some(z) = self.zram.lock().expect("zram lock").stats() {
            figures.extend([
                (
                    "kiln_zram_orig_data_bytes",
                    "Bytes stored in the zram swap device, uncompressed.",
                    z.orig_data_size as i64,
                ),
                (
                    "kiln_zram_compr_data_bytes",
                    "The same bytes, compressed.",
                    z.compr_data_size as i64,
                ),
                (
                    "kiln_zram_mem_used_bytes",
                    "Memory the zram device takes.",
                    z.mem_used_total as i64,
                ),
            ]);
        }
        let idle = self.idle_sandboxes();
        if idle.count > 0 {
            figures.extend([
                (
                    "kiln_idle_sandbox_resident_bytes",
                    "Resident memory (PSS) of an idle pooled sandbox's host processes, average.",
                    idle.resident_bytes as i64,
                ),
                (
                    "kiln_idle_sandbox_swapped_bytes",
                    "Memory of an idle pooled sandbox's host processes in swap, average.",
                    idle.swapped_bytes as i64,
                ),
            ]);
        }
        for (name, help, v) in figures {
            kiln_sandbox::metrics::header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
}
