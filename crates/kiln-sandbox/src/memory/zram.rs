//! zram swap: a compressed swap device in memory, into which the cold pages of idle pooled
//! sandboxes and of their shims are moved ([`page_out`](super::page_out)).
//!
//! The gateway uses a zram swap device the host already has, or makes one (`hot_add`, algorithm,
//! size, a swap signature, `swapon` with a priority) and takes it down again at shutdown
//! (`swapoff`, `reset`, `hot_remove`). What a job may use does not change: Docker gives every
//! sandbox a memory+swap limit equal to its memory limit, so a page in zram still counts
//! against the job's limit and the kernel never swaps to let a job grow past it.

use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use super::knobs::selected;

const SWAP_FLAG_PREFER: i32 = 0x8000;
const SWAP_FLAG_PRIO_MASK: i32 = 0x7fff;

/// The device the gateway makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZramSettings {
    pub size_bytes: u64,
    /// `lz4`, `lzo-rle`, `zstd`…: one of those the kernel lists in `comp_algorithm`.
    pub algorithm: String,
    /// Swap priority, 0–32767; above any disk swap so that zram fills first.
    pub priority: i32,
}

/// `mm_stat` of the device, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZramStats {
    /// What was stored, uncompressed.
    pub orig_data_size: u64,
    /// The same, compressed.
    pub compr_data_size: u64,
    /// Memory the device takes, its allocator's overhead included.
    pub mem_used_total: u64,
    /// Pages stored as one repeated value (zero pages, mostly), which take no space.
    pub same_pages: u64,
}

#[derive(Debug)]
struct Device {
    index: u32,
    /// Made by `hot_add`: removed at shutdown.
    added: bool,
    /// Set up and swapped on by the gateway: swapped off and reset at shutdown.
    ours: bool,
}

/// The zram swap device in use, under a sysfs root and a `/dev` directory.
#[derive(Debug)]
pub struct Zram {
    sysfs: PathBuf,
    dev: PathBuf,
    swaps: PathBuf,
    device: Option<Device>,
    /// Why there is no device in use, when there is none.
    pub reason: Option<String>,
}

impl Zram {
    pub fn new(sysfs: &Path) -> Zram {
        Zram {
            sysfs: sysfs.to_owned(),
            dev: PathBuf::from("/dev"),
            swaps: PathBuf::from("/proc/swaps"),
            device: None,
            reason: Some("memory.zram = \"off\"".into()),
        }
    }

    fn block(&self, index: u32) -> PathBuf {
        self.sysfs.join(format!("block/zram{index}"))
    }

    /// `/dev/zramN` of the device in use.
    pub fn device_path(&self) -> Option<PathBuf> {
        let d = self.device.as_ref()?;
        Some(self.dev.join(format!("zram{}", d.index)))
    }

    /// Whether the gateway made the device (and will take it down).
    pub fn owned(&self) -> bool {
        self.device.as_ref().is_some_and(|d| d.ours)
    }

    /// Uses a zram swap device the host has on, else makes one. On failure nothing is left
    /// behind and [`Zram::reason`] says why.
    pub fn setup(&mut self, settings: &ZramSettings) {
        if let Some(index) = self.active_zram_swap() {
            self.device = Some(Device {
                index,
                added: false,
                ours: false,
            });
            self.reason = None;
            return;
        }
        let control = self.sysfs.join("class/zram-control/hot_add");
        let index: u32 = match std::fs::read_to_string(&control) {
            Ok(s) => match s.trim().parse() {
                Ok(i) => i,
                Err(_) => {
                    self.reason = Some(format!("{} gave {s:?}", control.display()));
                    return;
                }
            },
            Err(e) => {
                self.reason = Some(format!(
                    "cannot read {}: {e} (is the zram module loaded?)",
                    control.display()
                ));
                return;
            }
        };
        let mut device = Device {
            index,
            added: true,
            ours: true,
        };
        match self.make_swap(index, settings) {
            Ok(()) => {
                self.device = Some(device);
                self.reason = None;
            }
            Err(e) => {
                self.take_down(&mut device);
                self.reason = Some(e);
            }
        }
    }

    /// The index of a zram device that is already swap, from `/proc/swaps`.
    fn active_zram_swap(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.swaps).ok()?;
        text.lines().skip(1).find_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix("/dev/zram")?
                .parse()
                .ok()
        })
    }

    fn make_swap(&self, index: u32, s: &ZramSettings) -> Result<(), String> {
        let block = self.block(index);
        let write = |name: &str, value: &str| {
            std::fs::write(block.join(name), value).map_err(|e| {
                format!(
                    "cannot write {value:?} to {}: {e}",
                    block.join(name).display()
                )
            })
        };
        let algorithms = std::fs::read_to_string(block.join("comp_algorithm")).unwrap_or_default();
        if !algorithms
            .split_whitespace()
            .any(|w| w.trim_matches(['[', ']']) == s.algorithm)
        {
            return Err(format!(
                "compression algorithm {:?} is not one of this kernel's: {}",
                s.algorithm,
                algorithms.trim()
            ));
        }
        write("comp_algorithm", &s.algorithm)?;
        write("disksize", &s.size_bytes.to_string())?;
        let path = self.dev.join(format!("zram{index}"));
        if !path.exists() {
            make_node(&path, &block)?;
        }
        write_swap_signature(&path, s.size_bytes)?;
        let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path");
        let flags = SWAP_FLAG_PREFER | (s.priority & SWAP_FLAG_PRIO_MASK);
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::swapon(c.as_ptr(), flags) } != 0 {
            return Err(format!(
                "swapon {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Swaps off (the pages come back into memory), resets and removes a device the gateway
    /// made; leaves a host's own device alone.
    pub fn teardown(&mut self) {
        if let Some(mut d) = self.device.take() {
            self.take_down(&mut d);
        }
        self.reason = Some("taken down at shutdown".into());
    }

    fn take_down(&self, d: &mut Device) {
        if !d.ours {
            return;
        }
        let path = self.dev.join(format!("zram{}", d.index));
        let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path");
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call. It fails
        // harmlessly (EINVAL) when the device is not swap yet.
        unsafe { libc::swapoff(c.as_ptr()) };
        let _ = std::fs::write(self.block(d.index).join("reset"), "1");
        if d.added {
            let _ = std::fs::write(
                self.sysfs.join("class/zram-control/hot_remove"),
                d.index.to_string(),
            );
        }
    }

    /// The device's `mm_stat`; `None` without a device.
    pub fn stats(&self) -> Option<ZramStats> {
        let d = self.device.as_ref()?;
        let text = std::fs::read_to_string(self.block(d.index).join("mm_stat")).ok()?;
        let f: Vec<u64> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        Some(ZramStats {
            orig_data_size: *f.first()?,
            compr_data_size: *f.get(1)?,
            mem_used_total: *f.get(2)?,
            same_pages: f.get(5).copied().unwrap_or(0) * 4096,
        })
    }

    /// The device's algorithm and size, for the report.
    pub fn describe(&self) -> Option<(String, u64)> {
        let d = self.device.as_ref()?;
        let block = self.block(d.index);
        let alg = std::fs::read_to_string(block.join("comp_algorithm")).ok()?;
        let size = std::fs::read_to_string(block.join("disksize")).ok()?;
        Some((selected(&alg)?.to_owned(), size.trim().parse().ok()?))
    }
}

/// `/dev/zramN` from the `major:minor` in sysfs, where devtmpfs did not make it.
fn make_node(path: &Path, block: &Path) -> Result<(), String> {
    let dev = std::fs::read_to_string(block.join("dev")).map_err(|e| e.to_string())?;
    let (major, minor) = dev
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("bad device number {dev:?}"))?;
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mknod {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// What `mkswap` writes: version 1, the last usable page, no bad pages, a label, and the
/// `SWAPSPACE2` magic at the end of the first page.
fn swap_header(size_bytes: u64, page: usize) -> Vec<u8> {
    let mut h = vec![0u8; page];
    let last_page = (size_bytes / page as u64).saturating_sub(1) as u32;
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    // nr_badpages stays 0; uuid left zero; volume label:
    h[1052..1056].copy_from_slice(b"kiln");
    h[page - 10..].copy_from_slice(b"SWAPSPACE2");
    h
}

fn write_swap_signature(path: &Path, size_bytes: u64) -> Result<(), String> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    f.write_all(&swap_header(size_bytes, page))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write swap signature on {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_mkswaps_layout() {
        let h = swap_header(64 << 20, 4096);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_ne_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_ne_bytes(h[1028..1032].try_into().unwrap()),
            (64 << 20) / 4096 - 1
        );
        assert!(h[..1024].iter().all(|b| *b == 0), "boot block left empty");
    }

    #[test]
    fn uses_an_existing_zram_swap_and_never_takes_it_down() {
        let dir = tempfile::tempdir().unwrap();
        let swaps = dir.path().join("swaps");
        std::fs::write(
            &swaps,
            "Filename\tType\tSize\tUsed\tPriority\n/dev/zram3  partition\t1024\t0\t100\n",
        )
        .unwrap();
        let block = dir.path().join("block/zram3");
        std::fs::create_dir_all(&block).unwrap();
        std::fs::write(block.join("mm_stat"), "8192 1024 4096 0 4096 1 0 0 0\n").unwrap();
        let mut z = Zram::new(dir.path());
        z.swaps = swaps;
        z.setup(&ZramSettings {
            size_bytes: 1 << 20,
            algorithm: "lz4".into(),
            priority: 100,
        });
        assert_eq!(z.reason, None);
        assert!(!z.owned());
        assert_eq!(z.device_path(), Some(PathBuf::from("/dev/zram3")));
        let s = z.stats().unwrap();
        assert_eq!(
            (
                s.orig_data_size,
                s.compr_data_size,
                s.mem_used_total,
                s.same_pages
            ),
            (8192, 1024, 4096, 4096)
        );
        std::fs::write(block.join("reset"), "0").unwrap();
        z.teardown();
        assert_eq!(
            std::fs::read_to_string(block.join("reset")).unwrap(),
            "0",
            "not reset"
        );
    }

    #[test]
    fn no_zram_module_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut z = Zram::new(dir.path());
        z.swaps = dir.path().join("none");
        z.setup(&ZramSettings {
            size_bytes: 1 << 20,
            algorithm: "lz4".into(),
            priority: 100,
        });
        assert!(
            z.reason.as_deref().unwrap().contains("zram module"),
            "{:?}",
            z.reason
        );
        assert_eq!(z.device_path(), None);
    }
}
