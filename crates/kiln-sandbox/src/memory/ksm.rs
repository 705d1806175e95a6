use std::path::Path;

use super::knobs::Knobs;

/// What the gateway does with the host's KSM daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KsmSettings {
    /// Turn ksmd on and set its scan rate (else leave the host's settings alone).
    pub manage: bool,
    pub pages_to_scan: u64,
    pub sleep_millisecs: u64,
}

/// The host's KSM counters, as `/sys/kernel/mm/ksm` gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KsmStats {
    pub run: u64,
    pub pages_shared: u64,
    pub pages_sharing: u64,
    pub pages_unshared: u64,
    /// Bytes saved net of KSM's own metadata (kernel 6.1+), where the kernel reports it.
    pub general_profit: Option<i64>,
}

impl KsmStats {
    /// Memory no longer held twice: each sharing page beyond the shared one is saved.
    pub fn bytes_saved(&self) -> u64 {
        self.pages_sharing * page_size()
    }
}

fn page_size() -> u64 {
    4096
}

/// The host's KSM, under a sysfs root (`/sys` in production).
#[derive(Debug)]
pub struct Ksm {
    knobs: Knobs,
    /// Why the gateway does not manage KSM, when it does not.
    pub unmanaged_reason: Option<String>,
}

impl Ksm {
    pub fn new(sysfs: &Path) -> Ksm {
        Ksm {
            knobs: Knobs::new(sysfs.join("kernel/mm/ksm")),
            unmanaged_reason: Some("not asked to manage KSM".into()),
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        self.knobs.read(name)
    }

    /// Applies `settings`; where a knob cannot be written (not root, no such file), records why
    /// and changes nothing else.
    pub fn apply(&mut self, settings: KsmSettings) {
        if !settings.manage {
            self.unmanaged_reason =
                Some("memory.ksm_host = \"leave\": the host's settings are kept".into());
            return;
        }
        let wanted = [
            ("pages_to_scan", settings.pages_to_scan.to_string()),
            ("sleep_millisecs", settings.sleep_millisecs.to_string()),
            ("run", "1".to_owned()),
        ];
        self.unmanaged_reason = match self.knobs.set(&wanted) {
            Ok(()) => None,
            Err(e) if e.ends_with("does not exist") => Some(format!("{e}: no KSM in this kernel")),
            Err(e) => Some(e),
        };
    }

    /// Puts back what [`Ksm::apply`] changed.
    pub fn restore(&mut self) {
        self.knobs.restore();
    }

    /// The counters now; `None` where the kernel has no KSM.
    pub fn stats(&self) -> Option<KsmStats> {
        let num = |n: &str| self.read(n).and_then(|v| v.parse::<u64>().ok());
        Some(KsmStats {
            run: num("run")?,
            pages_shared: num("pages_shared")?,
            pages_sharing: num("pages_sharing")?,
            pages_unshared: num("pages_unshared").unwrap_or(0),
            general_profit: self.read("general_profit").and_then(|v| v.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(run: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ksm = dir.path().join("kernel/mm/ksm");
        std::fs::create_dir_all(&ksm).unwrap();
        for (f, v) in [
            ("run", run),
            ("pages_to_scan", "100"),
            ("sleep_millisecs", "20"),
            ("pages_shared", "3"),
            ("pages_sharing", "10"),
            ("pages_unshared", "1"),
            ("general_profit", "-512"),
        ] {
            std::fs::write(ksm.join(f), format!("{v}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn apply_then_restore_puts_the_hosts_values_back() {
        let sys = fake_sysfs("0");
        let mut ksm = Ksm::new(sys.path());
        ksm.apply(KsmSettings {
            manage: true,
            pages_to_scan: 1000,
            sleep_millisecs: 10,
        });
        assert_eq!(ksm.unmanaged_reason, None);
        assert_eq!(ksm.read("run").as_deref(), Some("1"));
        assert_eq!(ksm.read("pages_to_scan").as_deref(), Some("1000"));
        let s = ksm.stats().unwrap();
        assert_eq!(
            (s.pages_sharing, s.bytes_saved(), s.general_profit),
            (10, 40960, Some(-512))
        );
        ksm.restore();
        assert_eq!(ksm.read("run").as_deref(), Some("0"));
        assert_eq!(ksm.read("pages_to_scan").as_deref(), Some("100"));
        assert_eq!(ksm.read("sleep_millisecs").as_deref(), Some("20"));
    }

    #[test]
    fn leave_and_missing_knobs_change_nothing_and_say_why() {
        let sys = fake_sysfs("0");
        let mut ksm = Ksm::new(sys.path());
        ksm.apply(KsmSettings {
            manage: false,
            pages_to_scan: 1000,
            sleep_millisecs: 10,
        });
        assert!(ksm.unmanaged_reason.as_deref().unwrap().contains("leave"));
        assert_eq!(ksm.read("run").as_deref(), Some("0"));

        std::fs::remove_file(sys.path().join("kernel/mm/ksm/run")).unwrap();
        ksm.apply(KsmSettings {
            manage: true,
            pages_to_scan: 1000,
            sleep_millisecs: 10,
        });
        assert!(ksm
            .unmanaged_reason
            .as_deref()
            .unwrap()
            .contains("does not exist"));
        assert_eq!(
            ksm.read("pages_to_scan").as_deref(),
            Some("100"),
            "rolled back"
        );
        assert_eq!(ksm.stats(), None);

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(Ksm::new(empty.path()).stats(), None);
    }
}
