use async_trait::async_trait;

use crate::CacheKey;

/// Why a tier could not do what was asked. Every one of these is a skip, never a failed run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TierError {
    /// The tier cannot be reached now (Redis down or slow).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The tier has no room (disk full).
    #[error("full: {0}")]
    Full(String),
    /// Anything else the store reported.
    #[error("{0}")]
    Store(String),
}

/// What a tier holds, where it can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub entries: u64,
    pub bytes: u64,
    pub evictions: u64,
}

/// One level of the cache. Values are sealed entries; the tier stores them as given.
#[async_trait]
pub trait Tier: Send + Sync + std::fmt::Debug {
    /// `l1`, `l2` or `l3`.
    fn name(&self) -> &'static str;
    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, TierError>;
    async fn put(&self, key: &CacheKey, value: &[u8]) -> Result<(), TierError>;
    async fn delete(&self, key: &CacheKey) -> Result<(), TierError>;
    /// Removes every entry.
    async fn purge(&self) -> Result<(), TierError>;
    fn stats(&self) -> TierStats;
}
