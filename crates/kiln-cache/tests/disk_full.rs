//! L2 on a disk that fills up: writes are skipped and counted, reads and the other tiers go on.
//! Needs root, to mount a small tmpfs as the full disk (CI runs as root).

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kiln_cache::{Cache, CacheKey, Disk, Memory, Tier};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_full_disk_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "this test mounts a 1 MiB tmpfs and needs root"
    );
    let _mount = Mount(dir.path().to_owned());

    let l1: Arc<dyn Tier> = Arc::new(Memory::new(64 << 20, Duration::from_secs(60)));
    let l2 =
        Arc::new(Disk::open(&dir.path().join("c.redb"), 1 << 30, Duration::from_secs(60)).unwrap());
    let cache = Cache::new(vec![l1, l2.clone()]);
    let value = vec![7u8; 64 * 1024];
    for n in 0..64u8 {
        cache.put_now(&CacheKey([n; 32]), &value).await;
    }
    let l2_errors = cache
        .tiers()
        .nth(1)
        .unwrap()
        .2
        .errors
        .load(Ordering::Relaxed);
    assert!(l2_errors > 0, "64 × 64 KiB cannot fit in 1 MiB");
    // What did fit is still readable, and L1 has everything.
    assert_eq!(cache.get(&CacheKey([63; 32])).await.unwrap().tier, "l1");
    assert!(l2.get(&CacheKey([0; 32])).await.unwrap().is_some());
}
