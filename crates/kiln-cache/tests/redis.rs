//! L3 against a real Redis server, which this test starts itself (Debian's `redis-server`;
//! scripts/test.sh installs it) on a free port, stops mid-test and starts again.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_cache::local_redis::LocalRedis;
use kiln_cache::{Cache, CacheKey, Disk, Memory, Redis, Tier};

fn key(n: u8) -> CacheKey {
    CacheKey([n; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_hits_promote_and_a_stopped_server_degrades_to_a_miss() {
    let server = LocalRedis::start().unwrap();
    let (port, url) = (server.port, server.url());
    let dir = tempfile::tempdir().unwrap();
    let l1 = Arc::new(Memory::new(1 << 20, Duration::from_secs(60)));
    let l2 =
        Arc::new(Disk::open(&dir.path().join("c.redb"), 1 << 20, Duration::from_secs(60)).unwrap());
    let l3 =
        Arc::new(Redis::new(&url, Duration::from_millis(200), Duration::from_secs(60)).unwrap());
    let cache = Cache::new(vec![l1.clone(), l2.clone(), l3.clone()]);

    cache.put_now(&key(1), b"shared").await;
    l1.purge().await.unwrap();
    l2.purge().await.unwrap();
    let hit = cache.get(&key(1)).await.unwrap();
    assert_eq!((hit.tier, hit.value.as_slice()), ("l3", &b"shared"[..]));

    // Another gateway's cache on the same server sees it too.
    let other = Cache::new(vec![Arc::new(
        Redis::new(&url, Duration::from_millis(200), Duration::from_secs(60)).unwrap(),
    )]);
    assert_eq!(other.get(&key(1)).await.unwrap().tier, "l3");

    // Redis stopped: a miss, quickly, counted, never an error.
    server.stop();
    l1.purge().await.unwrap();
    l2.purge().await.unwrap();
    let t0 = Instant::now();
    assert_eq!(cache.get(&key(1)).await, None);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a down L3 is skipped within its timeout"
    );
    cache.put_now(&key(2), b"while down").await;
    let l3_errors = cache
        .tiers()
        .nth(2)
        .unwrap()
        .2
        .errors
        .load(Ordering::Relaxed);
    assert!(l3_errors >= 2, "{l3_errors}");
    assert_eq!(
        cache.get(&key(2)).await.unwrap().tier,
        "l1",
        "the other tiers still work"
    );

    // Started again: the tier reconnects by itself.
    let _server = LocalRedis::start_on(port).unwrap();
    let t0 = Instant::now();
    loop {
        if l3.put(&key(3), b"back").await.is_ok() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "L3 never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        l3.get(&key(3)).await.unwrap().as_deref(),
        Some(&b"back"[..])
    );
    l3.purge().await.unwrap();
    assert_eq!(l3.get(&key(3)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_is_skipped_within_the_timeout() {
    let server = LocalRedis::start().unwrap();
    let (port, url) = (server.port, server.url());
    let l3 =
        Arc::new(Redis::new(&url, Duration::from_millis(200), Duration::from_secs(60)).unwrap());
    let cache = Cache::new(vec![l3.clone()]);
    cache.put_now(&key(1), b"x").await;
    assert!(cache.get(&key(1)).await.is_some());
    // The server stalls for 2 s; a read gives up after the 200 ms timeout.
    let mut stall = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "2"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli (Debian's redis-tools, installed with redis-server)");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    assert_eq!(cache.get(&key(1)).await, None);
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(
        cache
            .tiers()
            .next()
            .unwrap()
            .2
            .errors
            .load(Ordering::Relaxed)
            >= 1
    );
    stall.wait().unwrap();
}
