//! The gateway's side of memory density: applies the `[memory]` section to the host at start,
//! puts the host back at shutdown, and reports what the mechanisms do.

use std::sync::Mutex;

use kiln_sandbox::memory::{Ksm, KsmSettings};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::{HostPolicy, MemorySection, Switch};

#[derive(Debug)]
pub struct Memory {
    ksm_on: bool,
    ksm: Mutex<Ksm>,
    thp_path: std::path::PathBuf,
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
        Memory {
            ksm_on: section.ksm == Switch::On,
            ksm: Mutex::new(ksm),
            thp_path: section.sysfs.join("kernel/mm/transparent_hugepage/enabled"),
        }
    }

    /// Whether kiln-init marks runs mergeable.
    pub fn ksm_on(&self) -> bool {
        self.ksm_on
    }

    /// Puts back the host's KSM settings.
    pub fn stop(&self) {
        self.ksm.lock().expect("ksm lock").restore();
    }

    /// The THP policy in force (`[madvise]` is the selected one in the kernel's list).
    fn thp(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.thp_path).ok()?;
        text.split_whitespace().find_map(|w| {
            w.strip_prefix('[')
                .and_then(|w| w.strip_suffix(']'))
                .map(str::to_owned)
        })
    }

    /// `GET /api/v1/system/memory`.
    pub fn report(&self) -> Value {
        let ksm = self.ksm.lock().expect("ksm lock");
        let stats = ksm.stats();
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
            "thp": {"enabled": self.thp(), "managed": false, "reason": "THP policy control is not built yet (issue 5)"},
            "zram": {"enabled": false, "reason": "zram is not built yet (issue 5)"},
        })
    }

    /// Prometheus gauges of the host's KSM counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let Some(s) = self.ksm.lock().expect("ksm lock").stats() else {
            return;
        };
        let figures = [
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
        ];
        for (name, help, v) in figures {
            kiln_sandbox::metrics::header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
}
