use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use crate::{CacheKey, Tier, TierError, TierStats};

/// How often a tier whose server is down tries to connect again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// L3: Redis, shared by every gateway that points at it. Every operation is bounded by a
/// timeout; a server that is down or slow is skipped, and the tier reconnects by itself.
#[derive(Debug)]
pub struct Redis {
    url: String,
    prefix: String,
    timeout: Duration,
    ttl: Duration,
    conn: Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    manager: Option<ConnectionManager>,
    last_attempt: Option<Instant>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("connected", &self.manager.is_some())
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> TierError {
    TierError::Unavailable(e.to_string())
}

impl Redis {
    /// A tier for the server at `url` (`redis://host:port/db`); connects on first use.
    pub fn new(url: &str, timeout: Duration, ttl: Duration) -> Result<Redis, TierError> {
        redis::Client::open(url)
            .map_err(|e| TierError::Store(format!("bad Redis URL {url}: {e}")))?;
        Ok(Redis {
            url: url.to_owned(),
            prefix: "kiln:result:".to_owned(),
            timeout,
            ttl,
            conn: Mutex::new(Conn::default()),
        })
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.hex())
    }

    async fn connection(&self) -> Result<ConnectionManager, TierError> {
        let mut conn = self.conn.lock().await;
        if let Some(m) = &conn.manager {
            return Ok(m.clone());
        }
        if conn
            .last_attempt
            .is_some_and(|t| t.elapsed() < RECONNECT_EVERY)
        {
            return Err(TierError::Unavailable(
                "Redis unreachable; retrying shortly".into(),
            ));
        }
        conn.last_attempt = Some(Instant::now());
        let client = redis::Client::open(self.url.as_str()).map_err(unavailable)?;
        let manager = tokio::time::timeout(self.timeout, ConnectionManager::new(client))
            .await
            .map_err(|_| {
                TierError::Unavailable(format!("Redis did not answer within {:?}", self.timeout))
            })?
            .map_err(unavailable)?;
        conn.manager = Some(manager.clone());
        Ok(manager)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, TierError> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(TierError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[async_trait]
impl Tier for Redis {
    fn name(&self) -> &'static str {
        "l3"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, TierError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    async fn put(&self, key: &CacheKey, value: &[u8]) -> Result<(), TierError> {
        let ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.run(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("PX")
                .arg(ms),
        )
        .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), TierError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await
            .map(|_| ())
    }

    async fn purge(&self) -> Result<(), TierError> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{}*", self.prefix))
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                self.run::<i64>(redis::cmd("DEL").arg(keys)).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Redis keeps its own counts (`INFO`); counting keys here would scan the server.
    fn stats(&self) -> TierStats {
        TierStats::default()
    }
}
