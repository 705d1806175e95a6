//! Transparent huge pages: the host's policy (`/sys/kernel/mm/transparent_hugepage/enabled`),
//! set from the configuration or left alone, and put back at shutdown.

use std::path::Path;

use super::knobs::{selected, Knobs};

/// What the gateway does with the host's THP policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThpPolicy {
    /// Keep the host's policy.
    Leave,
    Always,
    Madvise,
    Never,
}

impl ThpPolicy {
    /// The kernel's word for the policy; `None` for [`ThpPolicy::Leave`].
    pub fn as_kernel(self) -> Option<&'static str> {
        match self {
            ThpPolicy::Leave => None,
            ThpPolicy::Always => Some("always"),
            ThpPolicy::Madvise => Some("madvise"),
            ThpPolicy::Never => Some("never"),
        }
    }
}

/// The host's THP policy, under a sysfs root (`/sys` in production).
#[derive(Debug)]
pub struct Thp {
    knobs: Knobs,
    /// Why the gateway does not set the policy, when it does not.
    pub unmanaged_reason: Option<String>,
}

impl Thp {
    pub fn new(sysfs: &Path) -> Thp {
        Thp {
            knobs: Knobs::new(sysfs.join("kernel/mm/transparent_hugepage")),
            unmanaged_reason: Some("not asked to set the THP policy".into()),
        }
    }

    /// Sets the host's policy; where it cannot be written, records why and changes nothing.
    pub fn apply(&mut self, policy: ThpPolicy) {
        let Some(word) = policy.as_kernel() else {
            self.unmanaged_reason =
                Some("memory.thp = \"leave\": the host's policy is kept".into());
            return;
        };
        self.unmanaged_reason = match self.knobs.set(&[("enabled", word.to_owned())]) {
            Ok(()) if self.policy().as_deref() == Some(word) => None,
            Ok(()) => {
                self.knobs.restore();
                Some(format!(
                    "{} did not take {word:?}",
                    self.knobs.dir().join("enabled").display()
                ))
            }
            Err(e) if e.ends_with("does not exist") => Some(format!("{e}: no THP in this kernel")),
            Err(e) => Some(e),
        };
    }

    /// Puts back the policy [`Thp::apply`] replaced.
    pub fn restore(&mut self) {
        self.knobs.restore();
    }

    /// The policy in force (`always`, `madvise` or `never`).
    pub fn policy(&self) -> Option<String> {
        selected(&self.knobs.read("enabled")?).map(str::to_owned)
    }

    /// Anonymous memory in huge pages now, host-wide (`AnonHugePages` of `/proc/meminfo`).
    pub fn anon_huge_bytes() -> Option<u64> {
        super::proc_kib("/proc/meminfo", "AnonHugePages:").map(|kib| kib * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's file takes one word and shows the whole list with the choice in brackets.
    fn kernel_like(dir: &Path, choice: &str) {
        let list = ["always", "madvise", "never"]
            .map(|w| {
                if w == choice {
                    format!("[{w}]")
                } else {
                    w.to_owned()
                }
            })
            .join(" ");
        std::fs::write(dir.join("enabled"), list).unwrap();
    }

    #[test]
    fn apply_then_restore() {
        let sys = tempfile::tempdir().unwrap();
        let dir = sys.path().join("kernel/mm/transparent_hugepage");
        std::fs::create_dir_all(&dir).unwrap();
        kernel_like(&dir, "madvise");
        let mut thp = Thp::new(sys.path());
        assert_eq!(thp.policy().as_deref(), Some("madvise"));

        // A plain file keeps the word written, which is not the kernel's list: refused.
        thp.apply(ThpPolicy::Never);
        assert!(thp
            .unmanaged_reason
            .as_deref()
            .unwrap()
            .contains("did not take"));
        assert_eq!(
            std::fs::read_to_string(dir.join("enabled")).unwrap(),
            "madvise",
            "the chosen word written back, as the kernel takes it"
        );

        thp.apply(ThpPolicy::Leave);
        assert!(thp.unmanaged_reason.as_deref().unwrap().contains("leave"));

        std::fs::remove_file(dir.join("enabled")).unwrap();
        thp.apply(ThpPolicy::Always);
        assert!(thp.unmanaged_reason.as_deref().unwrap().contains("no THP"));
        assert_eq!(thp.policy(), None);
    }

    #[test]
    fn selected_word() {
        assert_eq!(selected("always [madvise] never"), Some("madvise"));
        assert_eq!(selected("[always] madvise never\n"), Some("always"));
        assert_eq!(selected("always madvise never"), None);
    }
}
