//! Kiln's result cache. One [`Tier`] trait with three implementations — [`Memory`] (L1,
//! in-process, bounded in bytes, with a TTL), [`Disk`] (L2, an embedded redb file that survives
//! restarts, bounded in size) and [`Redis`] (L3, shared by gateways, with a TTL) — and a
//! [`Cache`] that reads them in order, promotes what it finds and writes to all.
//!
//! Faults degrade, never fail: a tier that errs is skipped and counted; an entry that does not
//! check out is a miss and is deleted. Values are opaque bytes (the gateway stores its JSON
//! response); each is stored with a checksum so that a corrupt one is never served.

mod cache;
mod disk;
mod entry;
mod key;
pub mod local_redis;
mod memory;
mod redis_tier;
mod tier;

pub use cache::{Cache, Hit, TierCounters};
pub use disk::Disk;
pub use entry::Corrupt;
pub use key::{CacheKey, KeyInputs};
pub use memory::Memory;
pub use redis_tier::Redis;
pub use tier::{Tier, TierError, TierStats};
