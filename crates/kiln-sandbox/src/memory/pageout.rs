//! Moving a process's cold pages out to swap (zram) from outside it: `process_madvise` with
//! `MADV_PAGEOUT` over its private mappings. The pages come back on the next touch; nothing
//! about the process changes but where its memory sits.

use std::io;

/// Most ranges per `process_madvise` call (the kernel's `UIO_MAXIOV` is 1024).
const BATCH: usize = 512;

/// The private mappings of `pid` worth advising, from `/proc/PID/maps`: not the kernel's
/// `[vsyscall]`/`[vvar]`/`[vdso]` pages, which cannot be paged.
fn private_ranges(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let name = l.split_whitespace().nth(5).unwrap_or("");
            if !perms.ends_with('p')
                || matches!(name, "[vsyscall]" | "[vvar]" | "[vdso]" | "[vvar_vclock]")
            {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (b > a).then_some((a, b - a))
        })
        .collect()
}

/// Asks the kernel to page out `pid`'s private memory; returns the bytes of the ranges it
/// went over (not the pages it moved: those are in the swap device's counters). Needs
/// `CAP_SYS_NICE` and ptrace-read access to the process (root on the host has both).
pub fn page_out(pid: u32) -> io::Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let ranges = private_ranges(&maps);
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned here only.
    let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut advised = 0u64;
    for chunk in ranges.chunks(BATCH) {
        let iov: Vec<libc::iovec> = chunk
            .iter()
            .map(|&(base, len)| libc::iovec {
                iov_base: base as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // SAFETY: `iov` points at `iov.len()` initialised iovecs that outlive the call; the
        // addresses are the other process's and only read by the kernel as ranges.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                iov.as_ptr(),
                iov.len(),
                libc::MADV_PAGEOUT,
                0u32,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // A mapping that went away in between (ENOMEM) ends this batch only.
            if e.raw_os_error() == Some(libc::ENOMEM) {
                continue;
            }
            return Err(e);
        }
        advised += rc as u64;
    }
    Ok(advised)
}

/// Memory of `pid` as `/proc/PID/smaps_rollup` counts it: (PSS in memory, swapped out), bytes.
pub fn resident_and_swapped(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = |key| super::kib_field(&text, key);
    Some((kib("Pss:")? * 1024, kib("Swap:").unwrap_or(0) * 1024))
}

/// The parent of `pid` on the host, from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_user_mappings() {
        let maps = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
00651000-00652000 rw-s 00051000 08:02 173521      /usr/bin/dbus-daemon
00e03000-00e24000 rw-p 00000000 00:00 0           [heap]
7ffc0d7b4000-7ffc0d7d5000 rw-p 00000000 00:00 0   [stack]
7ffc0d7fc000-7ffc0d7fe000 r--p 00000000 00:00 0   [vvar]
7ffc0d7fe000-7ffc0d800000 r-xp 00000000 00:00 0   [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";
        assert_eq!(
            private_ranges(maps),
            vec![
                (0x400000, 0x52000),
                (0xe03000, 0x21000),
                (0x7ffc0d7b4000, 0x21000)
            ]
        );
    }

    #[test]
    fn pages_out_a_child_of_ours() {
        // A process of our own with memory it wrote: the call must be accepted (the pages
        // only move where there is swap; that is the real-Docker test's business).
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let advised = page_out(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(advised.unwrap() > 0);
        assert!(page_out(u32::MAX / 2).is_err(), "no such process");
    }
}
