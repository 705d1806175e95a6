use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache as Moka;
use moka::notification::RemovalCause;

use crate::{CacheKey, Tier, TierError, TierStats};

/// L1: in-process, bounded in bytes, entries expire after a TTL.
#[derive(Debug, Clone)]
pub struct Memory {
    inner: Moka<CacheKey, Arc<[u8]>>,
    evictions: Arc<AtomicU64>,
}

impl Memory {
    pub fn new(max_bytes: u64, ttl: Duration) -> Memory {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let inner = Moka::builder()
            .weigher(|_k: &CacheKey, v: &Arc<[u8]>| u32::try_from(v.len() + 32).unwrap_or(u32::MAX))
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .eviction_listener(move |_k, _v, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Memory { inner, evictions }
    }
}

#[async_trait]
impl Tier for Memory {
    fn name(&self) -> &'static str {
        "l1"
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, TierError> {
        Ok(self.inner.get(key).await.map(|v| v.to_vec()))
    }
    async fn put(&self, key: &CacheKey, value: &[u8]) -> Result<(), TierError> {
        self.inner.insert(*key, Arc::from(value)).await;
        Ok(())
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), TierError> {
        self.inner.invalidate(key).await;
        Ok(())
    }
    async fn purge(&self) -> Result<(), TierError> {
        self.inner.invalidate_all();
        self.inner.run_pending_tasks().await;
        Ok(())
    }
    fn stats(&self) -> TierStats {
        TierStats {
            entries: self.inner.entry_count(),
            bytes: self.inner.weighted_size(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}
