use std::time::Duration;

use kiln_api::{Limits, LimitsRequest, DEFAULT_WORKDIR};
use kiln_sandbox::pool::{PoolConfig, PoolDefinition};
use kiln_sandbox::SandboxSpec;
use serde::Deserialize;

use super::ConfigError;

pub const DEFAULT_POOL_MIN: usize = 2;
pub const DEFAULT_POOL_MAX: usize = 8;

/// The warm pool. With `enabled`, the pools listed under `[[pool.pools]]` are pre-warmed at start
/// and kept filled; with `on_demand`, keys seen at run time get pools of their own.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSection {
    pub enabled: bool,
    pub on_demand: bool,
    pub on_demand_max: usize,
    pub max_on_demand_pools: usize,
    pub max_pooled: usize,
    pub max_pooled_memory_mb: u64,
    pub refill_parallelism: usize,
    pub max_age_ms: u64,
    pub shrink_after_ms: u64,
    pub forget_after_ms: u64,
    pub pools: Vec<PoolEntry>,
}

/// One `[[pool.pools]]` entry: the image and the container limits of the runs it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEntry {
    pub name: Option<String>,
    pub image: String,
    #[serde(default)]
    pub workdir: Option<String>,
    /// `memory_mb`, `cpus`, `pids`, `tmp_mb`; what is left out is `[limits.default]`'s.
    #[serde(default)]
    pub limits: LimitsRequest,
    #[serde(default)]
    pub network: bool,
    #[serde(default = "default_min")]
    pub min: usize,
    #[serde(default = "default_max")]
    pub max: usize,
    /// Huge pages in this pool's sandboxes (and in every run of its image); else
    /// `memory.sandbox_thp`.
    #[serde(default)]
    pub thp: Option<super::SandboxThp>,
}

fn default_min() -> usize {
    DEFAULT_POOL_MIN
}
fn default_max() -> usize {
    DEFAULT_POOL_MAX
}

impl Default for PoolSection {
    fn default() -> Self {
        let d = PoolConfig::default();
        let entry = |image: &str| PoolEntry {
            name: None,
            image: image.into(),
            workdir: None,
            limits: LimitsRequest::default(),
            network: false,
            min: DEFAULT_POOL_MIN,
            max: DEFAULT_POOL_MAX,
            thp: None,
        };
        PoolSection {
            enabled: true,
            on_demand: d.on_demand,
            on_demand_max: d.on_demand_max,
            max_on_demand_pools: d.max_on_demand_pools,
            max_pooled: d.max_pooled,
            max_pooled_memory_mb: d.max_pooled_memory_mb,
            refill_parallelism: d.refill_parallelism,
            max_age_ms: d.max_age.as_millis() as u64,
            shrink_after_ms: d.shrink_after.as_millis() as u64,
            forget_after_ms: d.forget_after.as_millis() as u64,
            pools: vec![entry("kiln/busybox"), entry("kiln/python")],
        }
    }
}

impl PoolSection {
    /// The pool configuration, with each entry's limits completed from `defaults` and checked
    /// against `maxima`; `None` when pooling is off.
    pub fn to_pool_config(
        &self,
        defaults: &Limits,
        maxima: &Limits,
    ) -> Result<Option<PoolConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let mut pools = Vec::with_capacity(self.pools.len());
        for (i, e) in self.pools.iter().enumerate() {
            let at = format!("pool.pools[{i}]");
            if e.image.is_empty() {
                return Err(ConfigError::Invalid(format!("{at}.image is empty")));
            }
            if e.min > e.max {
                return Err(ConfigError::Invalid(format!(
                    "{at}: min {} is above max {}",
                    e.min, e.max
                )));
            }
            if e.limits.timeout_ms.is_some() || e.limits.output_bytes.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "{at}.limits: timeout_ms and output_bytes belong to each run, not to a pool"
                )));
            }
            let limits = e.limits.resolve(defaults);
            limits
                .check(maxima, &format!("{at}.limits."))
                .map_err(|err| ConfigError::Invalid(err.message))?;
            let spec = SandboxSpec {
                image: e.image.clone(),
                workdir: e
                    .workdir
                    .clone()
                    .unwrap_or_else(|| DEFAULT_WORKDIR.to_owned()),
                limits,
                network: e.network,
            };
            let name = e
                .name
                .clone()
                .unwrap_or_else(|| kiln_sandbox::pool::PoolKey::of(&spec).name());
            pools.push(PoolDefinition {
                name,
                spec,
                min: e.min,
                max: e.max,
            });
        }
        let mins: usize = pools.iter().map(|p| p.min).sum();
        let min_memory: u64 = pools
            .iter()
            .map(|p| p.min as u64 * p.spec.limits.memory_mb)
            .sum();
        if mins > self.max_pooled || min_memory > self.max_pooled_memory_mb {
            return Err(ConfigError::Invalid(format!(
                "the pools' minimums ({mins} sandboxes, {min_memory} MiB of memory limits) exceed \
                 pool.max_pooled ({}) or pool.max_pooled_memory_mb ({})",
                self.max_pooled, self.max_pooled_memory_mb
            )));
        }
        Ok(Some(PoolConfig {
            pools,
            on_demand: self.on_demand,
            on_demand_max: self.on_demand_max,
            max_on_demand_pools: self.max_on_demand_pools,
            max_pooled: self.max_pooled,
            max_pooled_memory_mb: self.max_pooled_memory_mb,
            refill_parallelism: self.refill_parallelism.max(1),
            max_age: Duration::from_millis(self.max_age_ms),
            shrink_after: Duration::from_millis(self.shrink_after_ms),
            forget_after: Duration::from_millis(self.forget_after_ms),
            ..PoolConfig::default()
        }))
    }
}
