//! Reading `Key:   123 kB` lines of `/proc` files (`meminfo`, `status`, `smaps_rollup`).

/// The value of the `key` line of such a text, in KiB.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// The value of the `key` line of the file at `path`, in KiB.
pub fn proc_kib(path: &str, key: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string(path).ok()?, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_lines() {
        let text =
            "MemTotal:       24683784 kB\nAnonHugePages:      2048 kB\nHugePages_Total:       0\n";
        assert_eq!(kib_field(text, "MemTotal:"), Some(24683784));
        assert_eq!(kib_field(text, "AnonHugePages:"), Some(2048));
        assert_eq!(kib_field(text, "HugePages_Total:"), None, "not in kB");
        assert_eq!(kib_field(text, "Swap:"), None);
    }
}
