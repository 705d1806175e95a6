use std::path::PathBuf;

use kiln_sandbox::memory::ThpPolicy;
use serde::Deserialize;

use super::ConfigError;

pub const DEFAULT_KSM_PAGES_TO_SCAN: u64 = 1000;
pub const DEFAULT_KSM_SLEEP_MS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostPolicy {
    /// Turn ksmd on and set its scan rate; put the host's values back at shutdown.
    Manage,
    /// Keep the host's settings as they are.
    Leave,
}

/// The host's transparent-huge-page policy, or `leave` to keep the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThpHost {
    Leave,
    Always,
    Madvise,
    Never,
}

impl ThpHost {
    pub fn to_policy(self) -> ThpPolicy {
        match self {
            ThpHost::Leave => ThpPolicy::Leave,
            ThpHost::Always => ThpPolicy::Always,
            ThpHost::Madvise => ThpPolicy::Madvise,
            ThpHost::Never => ThpPolicy::Never,
        }
    }
}

/// Whether a sandbox's processes may get transparent huge pages (`allow`: as the host's policy
/// says) or not (`disable`: kiln-init sets `PR_SET_THP_DISABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxThp {
    Allow,
    Disable,
}

/// Memory density. `ksm`: kiln-init marks every run's processes mergeable; `ksm_host`: whether
/// the gateway runs the host's KSM daemon (it needs root and a kernel with KSM). `thp`: the
/// host's huge-page policy; `sandbox_thp`: huge pages inside sandboxes (a pool may choose its
/// own). `zram`: a compressed swap device in memory into which idle pooled sandboxes are paged
/// out after `page_out_after_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySection {
    pub ksm: Switch,
    pub ksm_host: HostPolicy,
    pub ksm_pages_to_scan: u64,
    pub ksm_sleep_ms: u64,
    pub thp: ThpHost,
    pub sandbox_thp: SandboxThp,
    pub zram: Switch,
    pub zram_size_mb: u64,
    pub zram_algorithm: String,
    pub zram_priority: i32,
    pub page_out_after_ms: u64,
    /// Where sysfs is mounted (tests point it elsewhere).
    pub sysfs: PathBuf,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            ksm: Switch::On,
            ksm_host: HostPolicy::Manage,
            ksm_pages_to_scan: DEFAULT_KSM_PAGES_TO_SCAN,
            ksm_sleep_ms: DEFAULT_KSM_SLEEP_MS,
            thp: ThpHost::Leave,
            sandbox_thp: SandboxThp::Disable,
            zram: Switch::Off,
            zram_size_mb: 2048,
            zram_algorithm: "lz4".into(),
            zram_priority: 100,
            page_out_after_ms: 5000,
            sysfs: PathBuf::from("/sys"),
        }
    }
}

impl MemorySection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ksm_pages_to_scan == 0 || self.ksm_sleep_ms == 0 {
            return Err(ConfigError::Invalid(
                "memory.ksm_pages_to_scan and memory.ksm_sleep_ms must be at least 1".into(),
            ));
        }
        if self.zram == Switch::On && self.zram_size_mb == 0 {
            return Err(ConfigError::Invalid(
                "memory.zram_size_mb must be at least 1".into(),
            ));
        }
        if !(0..=32767).contains(&self.zram_priority) {
            return Err(ConfigError::Invalid(
                "memory.zram_priority must be within 0..=32767".into(),
            ));
        }
        Ok(())
    }
}
