use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::oneshot;

use super::forecast::Forecaster;
use super::PoolKey;
use crate::metrics::Counter;
use crate::{Result, Sandbox, SandboxSpec};

/// Why a sandbox left a pool without serving a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemovalReason {
    /// Its container died or its attach stream broke.
    Dead,
    /// It was older than the maximum age.
    MaxAge,
    /// The pool shrank after idleness.
    ScaleDown,
    /// It was ready when the pool was full (or closing).
    Surplus,
    /// The gateway shut down.
    Shutdown,
}

impl RemovalReason {
    pub const ALL: [RemovalReason; 5] = [
        RemovalReason::Dead,
        RemovalReason::MaxAge,
        RemovalReason::ScaleDown,
        RemovalReason::Surplus,
        RemovalReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::Dead => "dead",
            RemovalReason::MaxAge => "max_age",
            RemovalReason::ScaleDown => "scale_down",
            RemovalReason::Surplus => "surplus",
            RemovalReason::Shutdown => "shutdown",
        }
    }
}

pub(super) struct Pooled {
    pub sandbox: Box<dyn Sandbox>,
    pub born: Instant,
    /// Its idle memory was paged out already.
    pub paged: bool,
    /// Its processes on the host, looked up once when it was made (outside the pool's lock).
    pub host_pids: Vec<u32>,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("id", &self.sandbox.id())
            .finish()
    }
}

#[derive(Debug)]
pub(super) struct PoolState {
    pub ready: VecDeque<Pooled>,
    pub waiters: VecDeque<oneshot::Sender<Result<Pooled>>>,
    /// Creations in flight: for waiters, and refills.
    pub creating: usize,
    pub forecast: Forecaster,
    pub target: usize,
    pub last_used: Instant,
    pub surplus_since: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Pool {
    pub key: PoolKey,
    pub name: String,
    pub spec: SandboxSpec,
    pub min: usize,
    pub max: usize,
    pub configured: bool,
    pub state: Mutex<PoolState>,
    pub hits: Counter,
    pub misses: Counter,
    removed: [Counter; RemovalReason::ALL.len()],
}

impl Pool {
    pub fn new(name: String, spec: SandboxSpec, min: usize, max: usize, configured: bool) -> Pool {
        Pool {
            key: PoolKey::of(&spec),
            name,
            spec,
            min,
            max: max.max(min),
            configured,
            state: Mutex::new(PoolState {
                ready: VecDeque::new(),
                waiters: VecDeque::new(),
                creating: 0,
                forecast: Forecaster::default(),
                target: min,
                last_used: Instant::now(),
                surplus_since: None,
            }),
            hits: Counter::default(),
            misses: Counter::default(),
            removed: Default::default(),
        }
    }

    pub fn removed(&self, reason: RemovalReason) {
        self.removed[reason as usize].inc();
    }

    pub fn status(&self) -> PoolStatus {
        let st = self.state.lock().expect("pool lock");
        PoolStatus {
            name: self.name.clone(),
            image: self.spec.image.clone(),
            configured: self.configured,
            ready: st.ready.len(),
            creating: st.creating,
            waiting: st.waiters.len(),
            target: st.target,
            min: self.min,
            max: self.max,
            hits: self.hits.get(),
            misses: self.misses.get(),
            removed: RemovalReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.removed[*r as usize].get()))
                .collect(),
        }
    }
}

/// A pool as `/api/v1/pools` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub image: String,
    pub configured: bool,
    pub ready: usize,
    pub creating: usize,
    pub waiting: usize,
    pub target: usize,
    pub min: usize,
    pub max: usize,
    pub hits: u64,
    pub misses: u64,
    pub removed: BTreeMap<&'static str, u64>,
}
