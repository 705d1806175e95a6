//! The container's memory cgroup, read for OOM kills and peak memory. Docker gives the container
//! its own cgroup (and, with cgroup v2, its own cgroup namespace), so the files at the root of
//! /sys/fs/cgroup are the sandbox's. Anything missing or unreadable is `None`, never an error:
//! the run must not fail for want of accounting.

use std::fs;
use std::path::Path;

/// Where the container sees its cgroup; a parameter elsewhere so tests can fake it.
pub const ROOT: &str = "/sys/fs/cgroup";

/// cgroup v1 layout first: on a v1 host the v2 file names do not exist at all.
const OOM_FILES: [&str; 2] = ["memory/memory.oom_control", "memory.events"];
const PEAK_FILES: [&str; 2] = ["memory/memory.max_usage_in_bytes", "memory.peak"];

/// How many processes the kernel's OOM killer has killed in the cgroup so far.
pub fn oom_kills(root: &Path) -> Option<u64> {
    let text = first_readable(root, &OOM_FILES)?;
    keyed(&text, "oom_kill")
}

/// The cgroup's peak memory use in bytes.
pub fn memory_peak(root: &Path) -> Option<u64> {
    first_readable(root, &PEAK_FILES)?.trim().parse().ok()
}

fn first_readable(root: &Path, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| fs::read_to_string(root.join(name)).ok())
}

/// The value of a `key value` line; the key must match whole (`oom_kill`, not
/// `oom_kill_disable`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != key {
            return None;
        }
        words.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir;

    #[test]
    fn nothing_there_is_none() {
        let root = temp_dir("cg-empty");
        assert_eq!(oom_kills(&root), None);
        assert_eq!(memory_peak(&root), None);
        assert_eq!(oom_kills(&root.join("does-not-exist")), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_v1() {
        let root = temp_dir("cg-v1");
        fs::create_dir(root.join("memory")).unwrap();
        fs::write(
            root.join("memory/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        fs::write(root.join("memory/memory.max_usage_in_bytes"), "1048576\n").unwrap();
        assert_eq!(oom_kills(&root), Some(3));
        assert_eq!(memory_peak(&root), Some(1 << 20));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_v2() {
        let root = temp_dir("cg-v2");
        fs::write(
            root.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(root.join("memory.peak"), "4096\n").unwrap();
        assert_eq!(oom_kills(&root), Some(1));
        assert_eq!(memory_peak(&root), Some(4096));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_wins_and_garbage_is_none() {
        let root = temp_dir("cg-both");
        fs::create_dir(root.join("memory")).unwrap();
        // An old v1 kernel without the oom_kill line: no detection, not the v2 file's count.
        fs::write(
            root.join("memory/memory.oom_control"),
            "oom_kill_disable 0\n",
        )
        .unwrap();
        fs::write(root.join("memory.events"), "oom_kill 5\n").unwrap();
        fs::write(root.join("memory.peak"), "max\n").unwrap();
        assert_eq!(oom_kills(&root), None);
        assert_eq!(memory_peak(&root), None);
        assert_eq!(keyed("oom_kill x\n", "oom_kill"), None);
        assert_eq!(keyed("oom_kill\n", "oom_kill"), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
