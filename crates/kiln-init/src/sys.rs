//! Thin wrappers over the syscalls init needs and std does not offer. The `unsafe` of the crate
//! lives here (and in `files.rs` and the child setup in `run.rs`), so the logic above stays safe.

use std::io;
use std::mem;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::{c_int, c_ulong, pid_t};

fn cvt(r: c_int) -> io::Result<c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Hardening of init itself; failures are ignored because none of them is needed for a run.
/// `PR_SET_MEMORY_MERGE`, from linux/prctl.h (6.4+); the libc crate may not name it yet.
const PR_SET_MEMORY_MERGE: libc::c_int = 67;

/// `prctl(option, 1, 0, 0, 0)`, best effort: a kernel without the option refuses.
fn prctl_on(option: libc::c_int) {
    // SAFETY: prctl with integer arguments reads no memory of ours.
    unsafe {
        libc::prctl(
            option,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        );
    }
}

/// Marks this process, and what it forks and execs, mergeable by KSM.
pub fn memory_merge() {
    prctl_on(PR_SET_MEMORY_MERGE);
}

/// No transparent huge pages for this process and what it forks and execs, whatever the
/// host's policy.
pub fn thp_disable() {
    prctl_on(libc::PR_SET_THP_DISABLE);
}

pub fn harden() {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prctl with integer arguments reads no memory of ours; setrlimit reads `no_core`,
    // which lives across the call.
    unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        );
        // Non-dumpable makes /proc/1 owned by root: the job (same uid) can then neither ptrace
        // init nor open /proc/1/fd/1 to forge frames on the host's stream. exec makes the job
        // itself dumpable again.
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        );
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    }
}

/// `read(2)`, retried on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, which is writable for the whole call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `write(2)`, retried on EINTR.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, which is readable for the whole call.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all of `buf`, waiting for room even if the fd was handed to us non-blocking.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut p = [libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                match poll(&mut p, -1) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An unbuffered reader on a raw fd, so that reading the job frame never takes a byte more.
#[derive(Debug)]
pub struct FdReader(pub RawFd);

impl io::Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(self.0, buf)
    }
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take and return plain integers.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `fds`, which the kernel may write for the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    cvt(n).map(|n| n as usize)
}

/// Blocks SIGCHLD and returns a signalfd for it: child exits then wake the poll loop instead of
/// interrupting it. The job's child unblocks every signal before exec.
pub fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before any other use; the
    // sets outlive the calls that read them; signalfd returns a fresh fd that we then own.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        cvt(libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut()))?;
        let fd = cvt(libc::signalfd(
            -1,
            &set,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Empties a non-blocking signalfd. Several exits may fold into one pending SIGCHLD, so the
/// caller reaps with `waitpid(-1)` afterwards rather than trusting the siginfo.
pub fn drain_signalfd(fd: RawFd) {
    let mut buf = [0u8; 8 * mem::size_of::<libc::signalfd_siginfo>()];
    while matches!(read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// `waitpid(2)`, retried on EINTR. `Ok(None)` when `nohang` and nothing has exited yet.
pub fn waitpid(pid: pid_t, nohang: bool) -> io::Result<Option<(pid_t, c_int)>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int the kernel writes into.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        match r {
            0 => return Ok(None),
            r if r > 0 => return Ok(Some((r, status))),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// SIGKILLs every process of the run. As PID 1 that is everything else in the container's pid
/// namespace, wherever it wandered (setsid, double fork); outside a container (tests) it is the
/// program's process group.
pub fn kill_run(pgid: pid_t) {
    // SAFETY: getpid and kill take and return plain integers.
    unsafe {
        if libc::getpid() == 1 {
            libc::kill(-1, libc::SIGKILL);
        } else if pgid > 0 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Sends `sig` to the run's process group (what the host asks for on behalf of a client).
pub fn signal_run(pgid: pid_t, sig: c_int) {
    if pgid > 0 {
        // SAFETY: kill takes and returns plain integers.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Resource use of all reaped descendants.
#[derive(Debug, Clone, Copy)]
pub struct ChildUsage {
    pub cpu_ms: u64,
    pub maxrss_bytes: u64,
}

pub fn children_usage() -> ChildUsage {
    // SAFETY: rusage is plain data; getrusage fills it and we read it only on success.
    let ru = unsafe {
        let mut ru: libc::rusage = mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) != 0 {
            return ChildUsage {
                cpu_ms: 0,
                maxrss_bytes: 0,
            };
        }
        ru
    };
    let ms = |tv: libc::timeval| tv.tv_sec.max(0) as u64 * 1000 + tv.tv_usec.max(0) as u64 / 1000;
    ChildUsage {
        cpu_ms: ms(ru.ru_utime) + ms(ru.ru_stime),
        maxrss_bytes: (ru.ru_maxrss.max(0) as u64).saturating_mul(1024),
    }
}
