use std::path::PathBuf;

use kiln_api::CacheMode;
use serde::Deserialize;

use super::ConfigError;

pub const DEFAULT_L1_MAX_BYTES: u64 = 64 << 20;
pub const DEFAULT_L1_TTL_MS: u64 = 300_000;
pub const DEFAULT_L2_PATH: &str = "/var/lib/kiln/cache.redb";
pub const DEFAULT_L2_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_L2_TTL_MS: u64 = 7 * 86_400_000;
pub const DEFAULT_L3_TIMEOUT_MS: u64 = 50;
pub const DEFAULT_L3_TTL_MS: u64 = 86_400_000;
pub const DEFAULT_IMAGE_ID_TTL_MS: u64 = 1_000;

/// The result cache: L1 in memory, L2 on disk (`l2_path`, empty to turn it off), L3 Redis
/// (`redis_url`, unset to turn it off).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// What a request that names no `cache` gets: `off`, `use` or `refresh`.
    pub default_mode: CacheMode,
    pub l1_max_bytes: u64,
    pub l1_ttl_ms: u64,
    pub l2_path: Option<PathBuf>,
    pub l2_max_bytes: u64,
    pub l2_ttl_ms: u64,
    pub redis_url: Option<String>,
    pub redis_timeout_ms: u64,
    pub redis_ttl_ms: u64,
    /// How long an image's resolved id is trusted; a re-tag takes effect after at most this.
    pub image_id_ttl_ms: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            default_mode: CacheMode::Off,
            l1_max_bytes: DEFAULT_L1_MAX_BYTES,
            l1_ttl_ms: DEFAULT_L1_TTL_MS,
            l2_path: Some(PathBuf::from(DEFAULT_L2_PATH)),
            l2_max_bytes: DEFAULT_L2_MAX_BYTES,
            l2_ttl_ms: DEFAULT_L2_TTL_MS,
            redis_url: None,
            redis_timeout_ms: DEFAULT_L3_TIMEOUT_MS,
            redis_ttl_ms: DEFAULT_L3_TTL_MS,
            image_id_ttl_ms: DEFAULT_IMAGE_ID_TTL_MS,
        }
    }
}

impl CacheSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") {
                return Err(ConfigError::Invalid(format!(
                    "cache.redis_url {url:?} must start with redis://"
                )));
            }
        }
        if self.redis_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "cache.redis_timeout_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
