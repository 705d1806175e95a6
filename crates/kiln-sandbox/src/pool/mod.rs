//! The warm pool: per pool key, sandboxes created, started and waiting in kiln-init for their
//! job, so that a run's critical path is only writing the job and reading the answer.
//!
//! One code path for warm and cold. [`PoolManager::take`] hands out a ready sandbox (`warm`);
//! when there is none it queues the request as a waiter and starts one creation for it. Every
//! sandbox that becomes ready goes to the oldest waiter first — the one made for it or one that a
//! refill started earlier, whichever is ready sooner — and only then into the pool (`cold`: the
//! request waited for a creation). A used sandbox is never returned: it is dropped, which removes
//! it.
//!
//! A background task refills each pool towards its target (a demand forecast times the time a
//! refill takes, within `[min, max]`) with bounded parallelism, shrinks pools after idleness,
//! removes sandboxes that died or grew too old, and forgets on-demand pools nobody uses.

pub mod forecast;
mod key;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kiln_api::StartKind;
use tokio::sync::{oneshot, Notify, Semaphore};
use tracing::{debug, info, warn};

pub use key::PoolKey;
pub use state::{PoolStatus, RemovalReason};

use crate::metrics::{Counter, LaunchMetrics};
use crate::{Backend, Result, Sandbox, SandboxSpec};
use state::{Pool, Pooled};

/// A pool named in the configuration: pre-warmed at start-up and never forgotten.
#[derive(Debug, Clone)]
pub struct PoolDefinition {
    pub name: String,
    pub spec: SandboxSpec,
    pub min: usize,
    pub max: usize,
}

/// How pools behave.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub pools: Vec<PoolDefinition>,
    /// Create pools for keys seen at run time, within the caps below.
    pub on_demand: bool,
    /// Most sandboxes an on-demand pool keeps ready.
    pub on_demand_max: usize,
    /// Most on-demand pools at once.
    pub max_on_demand_pools: usize,
    /// Ready sandboxes across all pools.
    pub max_pooled: usize,
    /// Sum of the memory limits of ready sandboxes across all pools, in MiB.
    pub max_pooled_memory_mb: u64,
    /// Creations by refills at once (runs' own creations are bounded by admission instead).
    pub refill_parallelism: usize,
    /// A ready sandbox older than this is replaced.
    pub max_age: Duration,
    /// How long a pool stays above its target before it shrinks.
    pub shrink_after: Duration,
    /// How long an on-demand pool is kept with no use.
    pub forget_after: Duration,
    /// How often the background task looks at every pool.
    pub tick: Duration,
    /// Page out the memory of a sandbox (and of its host-side helpers) that has waited this
    /// long in a pool, once; `None`: never (there is no swap to page into).
    pub page_out_after: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            pools: Vec::new(),
            on_demand: true,
            on_demand_max: 4,
            max_on_demand_pools: 8,
            max_pooled: 32,
            max_pooled_memory_mb: 8192,
            refill_parallelism: 2,
            max_age: Duration::from_secs(600),
            shrink_after: Duration::from_secs(30),
            forget_after: Duration::from_secs(300),
            tick: Duration::from_millis(100),
            page_out_after: None,
        }
    }
}

/// The pools of one gateway.
#[derive(Debug)]
pub struct PoolManager {
    backend: Arc<dyn Backend>,
    config: PoolConfig,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    /// Ready sandboxes and refills in flight, across pools, against `max_pooled`.
    pooled: AtomicUsize,
    pooled_memory_mb: AtomicU64,
    refills: Arc<Semaphore>,
    wake: Notify,
    closed: AtomicBool,
    started: Instant,
    /// Seconds a creation takes, smoothed; the forecast's refill time.
    refill_secs: Mutex<f64>,
    launches: Arc<LaunchMetrics>,
    /// Creation tasks not yet finished, for a shutdown to wait on.
    in_flight: AtomicUsize,
    page_outs: Arc<PageOuts>,
}

/// What paging out idle sandboxes did.
#[derive(Debug, Default)]
pub struct PageOuts {
    /// Sandboxes paged out.
    pub sandboxes: Counter,
    /// Bytes of the ranges handed to the kernel.
    pub bytes_advised: Counter,
    /// Processes that could not be paged out (gone, or not permitted).
    pub errors: Counter,
}

impl PoolManager {
    /// Creates the configured pools and starts the background task that fills them.
    pub fn start(
        backend: Arc<dyn Backend>,
        config: PoolConfig,
        launches: Arc<LaunchMetrics>,
    ) -> Arc<Self> {
        let manager = Arc::new(PoolManager {
            backend,
            refills: Arc::new(Semaphore::new(config.refill_parallelism.max(1))),
            config,
            pools: RwLock::new(HashMap::new()),
            pooled: AtomicUsize::new(0),
            pooled_memory_mb: AtomicU64::new(0),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            started: Instant::now(),
            refill_secs: Mutex::new(0.3),
            launches,
            in_flight: AtomicUsize::new(0),
            page_outs: Arc::default(),
        });
        for def in &manager.config.pools {
            let pool = Pool::new(def.name.clone(), def.spec.clone(), def.min, def.max, true);
            manager
                .pools
                .write()
                .expect("pools lock")
                .insert(pool.key.clone(), Arc::new(pool));
        }
        let m = manager.clone();
        tokio::spawn(async move {
            // Runs until shutdown, which wakes it early.
            while !m.closed.load(Ordering::SeqCst) {
                m.tick();
                tokio::select! {
                    _ = tokio::time::sleep(m.config.tick) => {}
                    _ = m.wake.notified() => {}
                }
            }
        });
        manager
    }

    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn existing(&self, spec: &SandboxSpec) -> Option<Arc<Pool>> {
        self.pools
            .read()
            .expect("pools lock")
            .get(&PoolKey::of(spec))
            .cloned()
    }

    /// Makes an on-demand pool for `spec`'s key, within the cap, counting this arrival. Only
    /// after a sandbox of the key was made: a key whose image cannot be had gets no pool, and
    /// so no refills that fail over and over.
    fn adopt(&self, spec: &SandboxSpec) {
        let mut pools = self.pools.write().expect("pools lock");
        let key = PoolKey::of(spec);
        if pools.contains_key(&key)
            || pools.values().filter(|p| !p.configured).count() >= self.config.max_on_demand_pools
        {
            return;
        }
        let pool = Pool::new(
            key.name(),
            spec.clone(),
            0,
            self.config.on_demand_max,
            false,
        );
        pool.state
            .lock()
            .expect("pool lock")
            .forecast
            .observe(self.now_s());
        info!(pool = %pool.name, "on-demand pool created");
        pools.insert(key, Arc::new(pool));
    }

    /// A sandbox for `spec`: a ready one from the pool (`Warm`), or the first to become ready
    /// after this call (`Cold`). Never a sandbox that served another run.
    pub async fn take(
        self: &Arc<Self>,
        spec: &SandboxSpec,
    ) -> Result<(Box<dyn Sandbox>, StartKind)> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(crate::Error::AtCapacity {
                reason: "shutting down",
                retry_after: Duration::from_secs(1),
            });
        }
        let Some(pool) = self.existing(spec) else {
            // No pool for this key yet: a plain cold start, and a pool if one may be made.
            let sandbox = self.launch(spec).await?;
            if self.config.on_demand {
                self.adopt(spec);
            }
            return Ok((sandbox, StartKind::Cold));
        };
        let rx = {
            let mut st = pool.state.lock().expect("pool lock");
            st.forecast.observe(self.now_s());
            st.last_used = Instant::now();
            while let Some(mut p) = st.ready.pop_front() {
                self.release_slot(&pool);
                let reason = self.unfit(&mut p);
                match reason {
                    None => {
                        pool.hits.inc();
                        // No wake-up of the refill task here: its next tick (≤ 100 ms) is soon
                        // enough, and a creation started now would compete with this very run
                        // for the engine and the CPU.
                        return Ok((p.sandbox, StartKind::Warm));
                    }
                    Some(r) => {
                        warn!(pool = %pool.name, id = p.sandbox.id(), reason = r.as_str(), "pooled sandbox removed");
                        pool.removed(r);
                    }
                }
            }
            pool.misses.inc();
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            st.creating += 1;
            rx
        };
        self.spawn_create(pool, false);
        match rx.await {
            Ok(Ok(p)) => Ok((p.sandbox, StartKind::Cold)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(crate::Error::AtCapacity {
                reason: "shutting down",
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>> {
        let t0 = Instant::now();
        let r = self.launches.launch(self.backend.as_ref(), spec).await;
        if r.is_ok() {
            let mut s = self.refill_secs.lock().expect("refill lock");
            *s = 0.8 * *s + 0.2 * t0.elapsed().as_secs_f64();
        }
        r
    }

    /// Starts one creation for `pool`; `refill` ones wait for a refill slot. `creating` has
    /// already been counted by the caller.
    fn spawn_create(self: &Arc<Self>, pool: Arc<Pool>, refill: bool) {
        let manager = self.clone();
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _permit = if refill {
                manager.refills.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let result = if manager.closed.load(Ordering::SeqCst) {
                Err(crate::Error::AtCapacity {
                    reason: "shutting down",
                    retry_after: Duration::from_secs(1),
                })
            } else {
                manager.launch(&pool.spec).await
            };
            if refill {
                // The refill's reservation of a pooled slot ends here; `deliver` takes a new
                // one if the sandbox goes into the pool.
                manager.pooled.fetch_sub(1, Ordering::SeqCst);
                manager
                    .pooled_memory_mb
                    .fetch_sub(pool.spec.limits.memory_mb, Ordering::SeqCst);
            }
            // After a shutdown this drops the sandbox, which removes it.
            manager.deliver(
                &pool,
                result.map(|sandbox| Pooled {
                    host_pids: sandbox.host_pids(),
                    sandbox,
                    born: Instant::now(),
                    paged: false,
                }),
            );
            manager.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Hands a finished creation to the oldest waiter, or keeps it ready, or drops it.
    fn deliver(&self, pool: &Pool, mut item: Result<Pooled>) {
        let mut st = pool.state.lock().expect("pool lock");
        st.creating = st.creating.saturating_sub(1);
        while let Some(tx) = st.waiters.pop_front() {
            match tx.send(item) {
                Ok(()) => return,
                // That request went away: offer it to the next one.
                Err(back) => item = back,
            }
        }
        match item {
            Ok(p)
                if !self.closed.load(Ordering::SeqCst)
                    && st.ready.len() < pool.max
                    && self.reserve_slot(pool) =>
            {
                debug!(pool = %pool.name, id = p.sandbox.id(), "sandbox ready in pool");
                st.ready.push_back(p);
            }
            Ok(_) => pool.removed(RemovalReason::Surplus),
            Err(e) => warn!(pool = %pool.name, error = %e, "pool refill failed"),
        }
    }

    /// Why a ready sandbox may not be handed out any more, if it may not.
    fn unfit(&self, p: &mut Pooled) -> Option<RemovalReason> {
        if p.born.elapsed() > self.config.max_age {
            Some(RemovalReason::MaxAge)
        } else if !p.sandbox.is_alive() {
            Some(RemovalReason::Dead)
        } else {
            None
        }
    }

    /// Takes one pooled slot within the global caps.
    fn reserve_slot(&self, pool: &Pool) -> bool {
        let mem = pool.spec.limits.memory_mb;
        if self.pooled.fetch_add(1, Ordering::SeqCst) >= self.config.max_pooled {
            self.pooled.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if self.pooled_memory_mb.fetch_add(mem, Ordering::SeqCst) + mem
            > self.config.max_pooled_memory_mb
        {
            self.pooled.fetch_sub(1, Ordering::SeqCst);
            self.pooled_memory_mb.fetch_sub(mem, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn release_slot(&self, pool: &Pool) {
        self.pooled.fetch_sub(1, Ordering::SeqCst);
        self.pooled_memory_mb
            .fetch_sub(pool.spec.limits.memory_mb, Ordering::SeqCst);
    }

    /// One pass over every pool: health, targets, refills, shrinking, forgetting.
    fn tick(self: &Arc<Self>) {
        let now_s = self.now_s();
        let refill_s = *self.refill_secs.lock().expect("refill lock");
        let pools: Vec<Arc<Pool>> = self
            .pools
            .read()
            .expect("pools lock")
            .values()
            .cloned()
            .collect();
        let mut forget = Vec::new();
        let mut page_out = Vec::new();
        for pool in pools {
            let mut st = pool.state.lock().expect("pool lock");
            // Health: age and liveness of every ready sandbox.
            let mut kept = std::collections::VecDeque::with_capacity(st.ready.len());
            while let Some(mut p) = st.ready.pop_front() {
                let reason = self.unfit(&mut p);
                match reason {
                    None => kept.push_back(p),
                    Some(r) => {
                        info!(pool = %pool.name, id = p.sandbox.id(), reason = r.as_str(), "pooled sandbox replaced");
                        self.release_slot(&pool);
                        pool.removed(r);
                    }
                }
            }
            st.ready = kept;
            if let Some(after) = self.config.page_out_after {
                for p in st.ready.iter_mut() {
                    if !p.paged && p.born.elapsed() >= after {
                        p.paged = true;
                        page_out.push(p.host_pids.clone());
                    }
                }
            }

            let target = st.forecast.target(now_s, refill_s, pool.min, pool.max);
            st.target = target;
            // While runs wait, every creation in flight already has a taker and more would only
            // slow them all down on a saturated engine: refills resume once nobody waits.
            let have = st.ready.len() + st.creating;
            if st.waiters.is_empty() && have < target {
                for _ in have..target {
                    if !self.reserve_slot(&pool) {
                        break;
                    }
                    st.creating += 1;
                    self.spawn_create(pool.clone(), true);
                }
            }
            // Shrink: above target for a while → one sandbox less per tick, the oldest first.
            if st.ready.len() > target {
                let since = *st.surplus_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.config.shrink_after {
                    if let Some(p) = st.ready.pop_front() {
                        debug!(pool = %pool.name, id = p.sandbox.id(), "pool shrinks");
                        self.release_slot(&pool);
                        pool.removed(RemovalReason::ScaleDown);
                    }
                }
            } else {
                st.surplus_since = None;
            }
            if !pool.configured
                && st.ready.is_empty()
                && st.creating == 0
                && st.waiters.is_empty()
                && st.last_used.elapsed() > self.config.forget_after
            {
                forget.push(pool.key.clone());
            }
        }
        if !page_out.is_empty() {
            let counts = self.page_outs.clone();
            tokio::task::spawn_blocking(move || {
                for pids in page_out {
                    counts.sandboxes.inc();
                    for pid in pids {
                        match crate::memory::page_out(pid) {
                            Ok(bytes) => counts.bytes_advised.add(bytes),
                            Err(e) => {
                                counts.errors.inc();
                                debug!(pid, error = %e, "page out failed");
                            }
                        }
                    }
                }
            });
        }
        if !forget.is_empty() {
            let mut pools = self.pools.write().expect("pools lock");
            for k in forget {
                info!(pool = %k.name(), "idle on-demand pool forgotten");
                pools.remove(&k);
            }
        }
    }

    /// Every pool's state, sorted by name.
    pub fn status(&self) -> Vec<PoolStatus> {
        let mut out: Vec<PoolStatus> = self
            .pools
            .read()
            .expect("pools lock")
            .values()
            .map(|p| p.status())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether every configured pool holds at least its minimum.
    pub fn reached_minimum(&self) -> bool {
        self.status()
            .iter()
            .filter(|s| s.configured)
            .all(|s| s.ready >= s.min)
    }

    /// What paging out idle sandboxes did so far.
    pub fn page_outs(&self) -> &PageOuts {
        &self.page_outs
    }

    /// The host processes of every ready sandbox, per sandbox.
    pub fn ready_host_pids(&self) -> Vec<Vec<u32>> {
        let pools = self.pools.read().expect("pools lock");
        pools
            .values()
            .flat_map(|pool| {
                let st = pool.state.lock().expect("pool lock");
                st.ready
                    .iter()
                    .map(|p| p.host_pids.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Creations still running (for a shutdown: what they make is removed when they end).
    pub fn creations_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops refilling and removes every ready sandbox. Waiting requests get an error.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        for pool in self.pools.read().expect("pools lock").values() {
            let mut st = pool.state.lock().expect("pool lock");
            let n = st.ready.len();
            st.ready.clear();
            st.waiters.clear();
            for _ in 0..n {
                self.release_slot(pool);
                pool.removed(RemovalReason::Shutdown);
            }
        }
    }
}
