use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::{CacheKey, Tier, TierError, TierStats};

/// key → seq (8 bytes LE) | stored at, seconds (8 bytes LE) | sealed entry
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// seq → key: insertion order, oldest first, for eviction.
const ORDER: TableDefinition<u64, &[u8]> = TableDefinition::new("order");
/// "bytes" (stored value bytes) and "seq" (last sequence number).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PREFIX: usize = 16;

/// L2: an embedded redb file in the server's data directory. Survives restarts; bounded in
/// bytes, the oldest entries evicted first; entries older than the TTL read as misses.
#[derive(Debug, Clone)]
pub struct Disk {
    db: Arc<Database>,
    max_bytes: u64,
    ttl: Duration,
    counts: Arc<Counts>,
}

/// Kept beside the store so that reading them (for `/metrics`) never touches the file.
#[derive(Debug, Default)]
struct Counts {
    entries: AtomicU64,
    bytes: AtomicU64,
    evictions: AtomicU64,
}

fn store_error(e: impl std::fmt::Display) -> TierError {
    let msg = e.to_string();
    if msg.contains("No space left") || msg.contains("os error 28") {
        TierError::Full(msg)
    } else {
        TierError::Store(msg)
    }
}

type Entries<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type Order<'t> = redb::Table<'t, u64, &'static [u8]>;
type Meta<'t> = redb::Table<'t, &'static str, u64>;

/// Runs `f` on the three tables in one write transaction and commits it.
fn write<T>(
    db: &Database,
    f: impl FnOnce(&mut Entries<'_>, &mut Order<'_>, &mut Meta<'_>) -> Result<T, TierError>,
) -> Result<T, TierError> {
    let tx = db.begin_write().map_err(store_error)?;
    let out = {
        let mut entries = tx.open_table(ENTRIES).map_err(store_error)?;
        let mut order = tx.open_table(ORDER).map_err(store_error)?;
        let mut meta = tx.open_table(META).map_err(store_error)?;
        f(&mut entries, &mut order, &mut meta)?
    };
    tx.commit().map_err(store_error)?;
    Ok(out)
}

/// A counter of the meta table, 0 when unset.
fn meta_u64(meta: &Meta<'_>, key: &str) -> Result<u64, TierError> {
    Ok(meta.get(key).map_err(store_error)?.map_or(0, |v| v.value()))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Disk {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path, max_bytes: u64, ttl: Duration) -> Result<Disk, TierError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(store_error)?;
        }
        let db = Database::create(path).map_err(store_error)?;
        let tx = db.begin_write().map_err(store_error)?;
        tx.open_table(ENTRIES).map_err(store_error)?;
        tx.open_table(ORDER).map_err(store_error)?;
        tx.open_table(META).map_err(store_error)?;
        tx.commit().map_err(store_error)?;
        let counts = Counts::default();
        {
            let tx = db.begin_read().map_err(store_error)?;
            let entries = tx
                .open_table(ENTRIES)
                .map_err(store_error)?
                .len()
                .map_err(store_error)?;
            let bytes = tx
                .open_table(META)
                .map_err(store_error)?
                .get("bytes")
                .map_err(store_error)?
                .map_or(0, |v| v.value());
            counts.entries.store(entries, Ordering::Relaxed);
            counts.bytes.store(bytes, Ordering::Relaxed);
        }
        Ok(Disk {
            db: Arc::new(db),
            max_bytes,
            ttl,
            counts: Arc::new(counts),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, TierError> + Send + 'static,
    ) -> Result<T, TierError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| TierError::Store(e.to_string()))?
    }

    fn remove_in(
        entries: &mut Entries<'_>,
        order: &mut Order<'_>,
        key: &[u8],
    ) -> Result<u64, TierError> {
        let old = entries
            .remove(key)
            .map_err(store_error)?
            .map(|v| v.value().to_vec());
        let Some(old) = old else { return Ok(0) };
        if old.len() >= 8 {
            let seq = u64::from_le_bytes(old[..8].try_into().expect("8 bytes"));
            order.remove(seq).map_err(store_error)?;
        }
        Ok(old.len() as u64)
    }
}

#[async_trait]
impl Tier for Disk {
    fn name(&self) -> &'static str {
        "l2"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, TierError> {
        let key = key.0;
        let ttl = self.ttl.as_secs();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(store_error)?;
            let entries = tx.open_table(ENTRIES).map_err(store_error)?;
            let Some(v) = entries.get(key.as_slice()).map_err(store_error)? else {
                return Ok(None);
            };
            let v = v.value();
            if v.len() < PREFIX {
                // Too short to be ours: hand it up so that the cache sees it is corrupt.
                return Ok(Some(v.to_vec()));
            }
            let stored_at = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
            if now_s().saturating_sub(stored_at) > ttl {
                return Ok(None);
            }
            Ok(Some(v[PREFIX..].to_vec()))
        })
        .await
    }

    async fn put(&self, key: &CacheKey, value: &[u8]) -> Result<(), TierError> {
        let key = key.0;
        let value = value.to_vec();
        let max = self.max_bytes;
        let counts = self.counts.clone();
        self.blocking(move |db| {
            write(db, |entries, order, meta| {
                let mut bytes = meta_u64(meta, "bytes")?;
                let seq = meta_u64(meta, "seq")? + 1;
                let replaced = Self::remove_in(entries, order, &key)?;
                bytes = bytes.saturating_sub(replaced);
                let mut evicted = 0u64;
                let mut stored = Vec::with_capacity(PREFIX + value.len());
                stored.extend_from_slice(&seq.to_le_bytes());
                stored.extend_from_slice(&now_s().to_le_bytes());
                stored.extend_from_slice(&value);
                entries
                    .insert(key.as_slice(), stored.as_slice())
                    .map_err(store_error)?;
                order.insert(seq, key.as_slice()).map_err(store_error)?;
                bytes += stored.len() as u64;
                while bytes > max {
                    let oldest = order
                        .pop_first()
                        .map_err(store_error)?
                        .map(|(_, k)| k.value().to_vec());
                    let Some(oldest) = oldest else { break };
                    let freed = entries
                        .remove(oldest.as_slice())
                        .map_err(store_error)?
                        .map_or(0, |v| v.value().len());
                    bytes = bytes.saturating_sub(freed as u64);
                    evicted += 1;
                }
                meta.insert("bytes", bytes).map_err(store_error)?;
                meta.insert("seq", seq).map_err(store_error)?;
                let len = entries.len().map_err(store_error)?;
                tx_counts(&counts, len, bytes, evicted);
                Ok(())
            })
        })
        .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), TierError> {
        let key = key.0;
        let counts = self.counts.clone();
        self.blocking(move |db| {
            write(db, |entries, order, meta| {
                let freed = Self::remove_in(entries, order, &key)?;
                let bytes = meta_u64(meta, "bytes")?.saturating_sub(freed);
                meta.insert("bytes", bytes).map_err(store_error)?;
                let len = entries.len().map_err(store_error)?;
                tx_counts(&counts, len, bytes, 0);
                Ok(())
            })
        })
        .await
    }

    async fn purge(&self) -> Result<(), TierError> {
        let counts = self.counts.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(store_error)?;
            tx.delete_table(ENTRIES).map_err(store_error)?;
            tx.delete_table(ORDER).map_err(store_error)?;
            tx.delete_table(META).map_err(store_error)?;
            tx.open_table(ENTRIES).map_err(store_error)?;
            tx.open_table(ORDER).map_err(store_error)?;
            tx.open_table(META).map_err(store_error)?;
            tx.commit().map_err(store_error)?;
            tx_counts(&counts, 0, 0, 0);
            Ok(())
        })
        .await
    }

    fn stats(&self) -> TierStats {
        TierStats {
            entries: self.counts.entries.load(Ordering::Relaxed),
            bytes: self.counts.bytes.load(Ordering::Relaxed),
            evictions: self.counts.evictions.load(Ordering::Relaxed),
        }
    }
}

/// Records what a write transaction left (set just before its commit: a failed commit is
/// corrected by the next write).
fn tx_counts(counts: &Counts, entries: u64, bytes: u64, evicted: u64) {
    counts.entries.store(entries, Ordering::Relaxed);
    counts.bytes.store(bytes, Ordering::Relaxed);
    counts.evictions.fetch_add(evicted, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[tokio::test]
    async fn survives_reopening_and_evicts_the_oldest_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.redb");
        {
            let disk = Disk::open(&path, 10_000, Duration::from_secs(60)).unwrap();
            disk.put(&key(1), b"one").await.unwrap();
            disk.put(&key(2), b"two").await.unwrap();
            disk.put(&key(1), b"uno").await.unwrap();
        }
        let disk = Disk::open(&path, 10_000, Duration::from_secs(60)).unwrap();
        assert_eq!(
            disk.get(&key(1)).await.unwrap().as_deref(),
            Some(&b"uno"[..])
        );
        assert_eq!(disk.stats().entries, 2);
        assert_eq!(disk.stats().bytes, 2 * (PREFIX as u64 + 3));

        let small = Disk::open(
            &dir.path().join("small.redb"),
            2_500,
            Duration::from_secs(60),
        )
        .unwrap();
        for n in 0..5 {
            small.put(&key(n), &[n; 1000]).await.unwrap();
        }
        assert_eq!(small.stats().entries, 2, "only the two newest fit");
        assert_eq!(small.get(&key(0)).await.unwrap(), None);
        assert!(small.get(&key(4)).await.unwrap().is_some());
        assert_eq!(small.stats().evictions, 3);

        small.delete(&key(4)).await.unwrap();
        assert_eq!(small.get(&key(4)).await.unwrap(), None);
        small.purge().await.unwrap();
        assert_eq!(
            small.stats(),
            TierStats {
                entries: 0,
                bytes: 0,
                evictions: 3
            }
        );
    }

    #[tokio::test]
    async fn expired_entries_read_as_misses() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("c.redb"), 10_000, Duration::from_secs(0)).unwrap();
        disk.put(&key(1), b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(disk.get(&key(1)).await.unwrap(), None);
    }
}
