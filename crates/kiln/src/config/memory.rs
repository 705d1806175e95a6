use std::path::PathBuf;

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

/// Memory density. `ksm`: kiln-init marks every run's processes mergeable; `ksm_host`: whether
/// the gateway runs the host's KSM daemon (it needs root and a kernel with KSM).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySection {
    pub ksm: Switch,
    pub ksm_host: HostPolicy,
    pub ksm_pages_to_scan: u64,
    pub ksm_sleep_ms: u64,
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
        Ok(())
    }
}
