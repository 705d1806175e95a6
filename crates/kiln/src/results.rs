//! The result cache as the gateway uses it: keys from validated requests and resolved image ids,
//! answers stored as the JSON the client got.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_api::{ExecSpec, ExecuteResponse, RunStatus, Timings};
use kiln_cache::{Cache, CacheKey, Disk, KeyInputs, Memory, Redis, Tier};
use kiln_sandbox::Backend;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::CacheSection;

/// A run's cache key and the image id it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub key: CacheKey,
    pub image_id: String,
}

#[derive(Debug)]
pub struct ResultCache {
    cache: Cache,
    init_version: String,
    /// What of the server's sandbox settings decides results besides the request: the user.
    sandbox: String,
    image_ttl: Duration,
    /// image reference → (resolved id, when resolved)
    images: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// A digest of the kiln-init binary and the protocol version: results of another kiln-init
/// never answer.
fn init_version(init_path: &Path) -> String {
    let digest = std::fs::read(init_path).map(|b| Sha256::digest(&b)).ok();
    let hex: String = digest.map_or_else(
        || "unknown".to_owned(),
        |d| d[..8].iter().map(|b| format!("{b:02x}")).collect(),
    );
    format!("proto{}-{hex}", kiln_proto_version())
}

fn kiln_proto_version() -> u32 {
    // The gateway does not link kiln-proto directly; the sandbox crate re-exports its version.
    kiln_sandbox::PROTOCOL_VERSION
}

impl ResultCache {
    /// The tiers `section` names; a tier that cannot be opened is left out with a warning.
    /// `sandbox_user` is part of every key: it decides what a run may read and write.
    pub fn open(section: &CacheSection, init_path: &Path, sandbox_user: &str) -> ResultCache {
        let mut tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(Memory::new(
            section.l1_max_bytes,
            Duration::from_millis(section.l1_ttl_ms),
        ))];
        // An empty path turns L2 off (TOML has no null).
        if let Some(path) = section
            .l2_path
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            match Disk::open(
                path,
                section.l2_max_bytes,
                Duration::from_millis(section.l2_ttl_ms),
            ) {
                Ok(d) => tiers.push(Arc::new(d)),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "L2 cache off: cannot open its store")
                }
            }
        }
        if let Some(url) = &section.redis_url {
            let timeout = Duration::from_millis(section.redis_timeout_ms);
            match Redis::new(url, timeout, Duration::from_millis(section.redis_ttl_ms)) {
                Ok(r) => tiers.push(Arc::new(r)),
                Err(e) => warn!(error = %e, "L3 cache off"),
            }
        }
        info!(tiers = ?tiers.iter().map(|t| t.name()).collect::<Vec<_>>(), "result cache ready");
        ResultCache {
            cache: Cache::new(tiers),
            init_version: init_version(init_path),
            sandbox: format!("user={sandbox_user}"),
            image_ttl: Duration::from_millis(section.image_id_ttl_ms),
            images: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    async fn image_id(&self, backend: &dyn Backend, image: &str) -> Option<String> {
        if let Some((id, at)) = self.images.lock().expect("images lock").get(image) {
            if at.elapsed() < self.image_ttl {
                return id.clone();
            }
        }
        let id = backend.image_id(image).await.ok().flatten();
        self.images
            .lock()
            .expect("images lock")
            .insert(image.to_owned(), (id.clone(), Instant::now()));
        id
    }

    /// The key of `spec` and the image id in it, or `None` when its image is not present (the
    /// run pulls it or fails).
    pub async fn key(&self, backend: &dyn Backend, spec: &ExecSpec) -> Option<Keyed> {
        let image_id = self.image_id(backend, &spec.image).await?;
        let backend = format!("{} {}", backend.name(), self.sandbox);
        let inputs = KeyInputs {
            image_id: &image_id,
            backend: &backend,
            init_version: &self.init_version,
        };
        Some(Keyed {
            key: inputs.key(spec),
            image_id,
        })
    }

    /// A stored answer, marked with the tier it came from. Its timings are zero: nothing ran.
    pub async fn lookup(&self, key: &CacheKey) -> Option<ExecuteResponse> {
        let hit = self.cache.get(key).await?;
        match serde_json::from_slice::<ExecuteResponse>(&hit.value) {
            Ok(mut res) => {
                res.cache.tier = Some(hit.tier.to_owned());
                res.cache.key = Some(key.hex());
                res.timings = Timings::default();
                Some(res)
            }
            Err(e) => {
                // Sealed, so not damaged: written by an incompatible version. A miss.
                warn!(key = %key, error = %e, "cached answer not readable; ignored");
                None
            }
        }
    }

    /// Stores `res` in every tier in the background, if it is worth storing: an `ok` run, made
    /// from the very image the key names (not from a sandbox of a tag that has moved since).
    pub fn store(&self, keyed: &Keyed, res: &ExecuteResponse) {
        if res.status != RunStatus::Ok
            || res.sandbox.image_id.as_deref() != Some(keyed.image_id.as_str())
        {
            return;
        }
        let key = &keyed.key;
        match serde_json::to_vec(res) {
            Ok(bytes) => self.cache.put(key, &bytes),
            Err(e) => warn!(error = %e, "cannot encode an answer for the cache"),
        }
    }
}
