use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};

use crate::{entry, CacheKey, Tier, TierError, TierStats};

/// What a tier was asked and how it went.
#[derive(Debug, Default)]
pub struct TierCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Reads and writes the tier could not do (down, slow, full); each one a skip.
    pub errors: AtomicU64,
    /// Entries that did not check out; each one deleted and read as a miss.
    pub corrupt: AtomicU64,
}

/// A value found in the cache, and the tier it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub tier: &'static str,
    pub value: Vec<u8>,
}

/// The tiers in read order (L1 first). Reads go down until a hit and promote it to the tiers
/// above; writes go to every tier in the background.
#[derive(Debug, Clone)]
pub struct Cache {
    tiers: Arc<Vec<(Arc<dyn Tier>, TierCounters)>>,
    /// Background writes in flight are bounded: past this, a write is dropped and counted
    /// rather than queued without end behind a slow tier.
    writes: Arc<tokio::sync::Semaphore>,
    dropped: Arc<AtomicU64>,
    /// Bumped by every purge and delete: a background write begun before one is dropped, so
    /// that a purge cannot be undone by a write or a promotion still in flight.
    generation: Arc<AtomicU64>,
}

/// Background writes (each to every tier) that may be in flight at once.
pub const MAX_PENDING_WRITES: usize = 256;

impl Cache {
    pub fn new(tiers: Vec<Arc<dyn Tier>>) -> Cache {
        Cache {
            tiers: Arc::new(
                tiers
                    .into_iter()
                    .map(|t| (t, TierCounters::default()))
                    .collect(),
            ),
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_WRITES)),
            dropped: Arc::new(AtomicU64::new(0)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    fn skip(&self, i: usize, op: &str, e: &TierError) {
        let (tier, counters) = &self.tiers[i];
        counters.errors.fetch_add(1, Ordering::Relaxed);
        debug!(tier = tier.name(), op, error = %e, "cache tier skipped");
    }

    /// The value under `key` from the first tier that has a sound one.
    pub async fn get(&self, key: &CacheKey) -> Option<Hit> {
        let generation = self.generation.load(Ordering::SeqCst);
        for (i, (tier, counters)) in self.tiers.iter().enumerate() {
            let raw = match tier.get(key).await {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    counters.misses.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    self.skip(i, "get", &e);
                    continue;
                }
            };
            match entry::open(&raw) {
                Ok(payload) => {
                    counters.hits.fetch_add(1, Ordering::Relaxed);
                    let value = payload.to_vec();
                    self.spawn_puts(key, Arc::from(raw), 0..i, generation);
                    return Some(Hit {
                        tier: tier.name(),
                        value,
                    });
                }
                Err(c) => {
                    counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    warn!(tier = tier.name(), key = %key, error = %c, "corrupt cache entry deleted");
                    if let Err(e) = tier.delete(key).await {
                        self.skip(i, "delete", &e);
                    }
                }
            }
        }
        None
    }

    /// Stores `value` in every tier, in the background: the caller never waits for a tier.
    pub fn put(&self, key: &CacheKey, value: &[u8]) {
        let generation = self.generation.load(Ordering::SeqCst);
        self.spawn_puts(
            key,
            Arc::from(entry::seal(value)),
            0..self.tiers.len(),
            generation,
        );
    }

    /// Stores `value` in every tier and waits until each has answered.
    pub async fn put_now(&self, key: &CacheKey, value: &[u8]) {
        let sealed = entry::seal(value);
        for i in 0..self.tiers.len() {
            if let Err(e) = self.tiers[i].0.put(key, &sealed).await {
                self.skip(i, "put", &e);
            }
        }
    }

    fn spawn_puts(
        &self,
        key: &CacheKey,
        sealed: Arc<[u8]>,
        tiers: std::ops::Range<usize>,
        generation: u64,
    ) {
        if tiers.is_empty() {
            return;
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let cache = self.clone();
        let key = *key;
        tokio::spawn(async move {
            let _permit = permit;
            for i in tiers {
                if cache.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                if let Err(e) = cache.tiers[i].0.put(&key, &sealed).await {
                    cache.skip(i, "put", &e);
                }
            }
        });
    }

    /// Removes `key` from every tier; the tiers that could not are named.
    pub async fn delete(&self, key: &CacheKey) -> Vec<&'static str> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut failed = Vec::new();
        for (i, (tier, _)) in self.tiers.iter().enumerate() {
            if let Err(e) = tier.delete(key).await {
                self.skip(i, "delete", &e);
                failed.push(tier.name());
            }
        }
        failed
    }

    /// Empties every tier; the tiers that could not are named.
    pub async fn purge(&self) -> Vec<&'static str> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut failed = Vec::new();
        for (i, (tier, _)) in self.tiers.iter().enumerate() {
            if let Err(e) = tier.purge().await {
                self.skip(i, "purge", &e);
                failed.push(tier.name());
            }
        }
        failed
    }

    /// Empties the tier named `name` (`l1`, `l2`, `l3`) only; `None` if there is no such tier.
    pub async fn purge_tier(&self, name: &str) -> Option<Result<(), TierError>> {
        let (tier, _) = self.tiers.iter().find(|(t, _)| t.name() == name)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Some(tier.purge().await)
    }

    /// Background writes dropped because too many were in flight.
    pub fn dropped_writes(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Each tier's name, contents and counters, in read order.
    pub fn tiers(&self) -> impl Iterator<Item = (&'static str, TierStats, &TierCounters)> {
        self.tiers.iter().map(|(t, c)| (t.name(), t.stats(), c))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Disk, Memory};

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn reads_go_down_the_tiers_and_promote_what_they_find() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = Arc::new(Memory::new(1 << 20, Duration::from_secs(60)));
        let l2 = Arc::new(
            Disk::open(&dir.path().join("c.redb"), 1 << 20, Duration::from_secs(60)).unwrap(),
        );
        let cache = Cache::new(vec![l1.clone(), l2.clone()]);
        assert_eq!(cache.get(&key(1)).await, None);
        cache.put_now(&key(1), b"result").await;
        assert_eq!(cache.get(&key(1)).await.unwrap().tier, "l1");

        l1.purge().await.unwrap();
        let hit = cache.get(&key(1)).await.unwrap();
        assert_eq!((hit.tier, hit.value.as_slice()), ("l2", &b"result"[..]));
        // The L2 hit was promoted to L1 in the background.
        for _ in 0..100 {
            if l1.get(&key(1)).await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(cache.get(&key(1)).await.unwrap().tier, "l1");
        let counters: Vec<_> = cache
            .tiers()
            .map(|(n, _, c)| (n, count(&c.hits), count(&c.misses)))
            .collect();
        assert_eq!(counters, [("l1", 2, 2), ("l2", 1, 1)]);
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_a_miss_and_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let l2 = Arc::new(
            Disk::open(&dir.path().join("c.redb"), 1 << 20, Duration::from_secs(60)).unwrap(),
        );
        let cache = Cache::new(vec![l2.clone()]);
        l2.put(&key(7), b"not a sealed entry").await.unwrap();
        assert_eq!(cache.get(&key(7)).await, None);
        assert_eq!(l2.get(&key(7)).await.unwrap(), None, "deleted");
        let (_, _, c) = cache.tiers().next().unwrap();
        assert_eq!(count(&c.corrupt), 1);
    }

    #[tokio::test]
    async fn purge_and_delete_reach_every_tier() {
        let dir = tempfile::tempdir().unwrap();
        let l1: Arc<dyn Tier> = Arc::new(Memory::new(1 << 20, Duration::from_secs(60)));
        let l2: Arc<dyn Tier> = Arc::new(
            Disk::open(&dir.path().join("c.redb"), 1 << 20, Duration::from_secs(60)).unwrap(),
        );
        let cache = Cache::new(vec![l1, l2]);
        cache.put_now(&key(1), b"a").await;
        cache.put_now(&key(2), b"b").await;
        assert!(cache.delete(&key(1)).await.is_empty());
        assert_eq!(cache.get(&key(1)).await, None);
        assert!(cache.get(&key(2)).await.is_some());
        assert!(cache.purge().await.is_empty());
        assert_eq!(cache.get(&key(2)).await, None);
    }
}
