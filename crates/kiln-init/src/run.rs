//! One run, start to end: files, spawn, supervision, exit report.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kiln_proto::{Event, ExitReport, Job, Status};

use crate::supervise::{Feed, Spawned, Supervisor};
use crate::{cgroup, files, sys, Output};

/// Runs the job and sends every frame of it, the exit frame last. With a compile step, that
/// runs first and its frames go out as the compile's; a compile that fails ends the job after
/// its exit frame. An error means the frames could not be written; the run has been killed by
/// then.
///
/// `feed` is the host's input for an interactive job; only the run step reads it (the compile
/// step has no stdin), so what the host sends early waits in the channel.
pub fn run(job: &Job, out: &mut Output, mut feed: Option<Feed>) -> io::Result<()> {
    if let Err(e) = files::write_files(Path::new("."), &job.files) {
        return refuse(out, &format!("kiln-init: {e}\n"), 126).map(drop);
    }
    let mut cpu_before = 0;
    if let Some(compile) = &job.compile {
        out.compiling = true;
        let step = Step {
            argv: &compile.argv,
            env: &job.env,
            stdin: &[],
            feed: None,
            timeout_ms: compile.timeout_ms,
            output_bytes: job.output_bytes,
            cpu_before: 0,
        };
        let compiled = step.run(out);
        out.compiling = false;
        let compiled = compiled?;
        if !compiled.succeeded() {
            return Ok(());
        }
        cpu_before = compiled.cpu_ms;
    }
    let step = Step {
        argv: &job.argv,
        env: &job.env,
        stdin: &job.stdin,
        feed: feed.as_mut(),
        timeout_ms: job.timeout_ms,
        output_bytes: job.output_bytes,
        cpu_before,
    };
    step.run(out).map(drop)
}

/// One program of a job: the compile step or the run itself.
struct Step<'a> {
    argv: &'a [String],
    env: &'a [(String, String)],
    stdin: &'a [u8],
    feed: Option<&'a mut Feed>,
    timeout_ms: u64,
    output_bytes: u64,
    /// CPU time of the children reaped before this step (the compile's), not this step's.
    cpu_before: u64,
}

impl Step<'_> {
    /// Spawns, supervises and reports the program; returns what its exit frame said.
    fn run(self, out: &mut Output) -> io::Result<ExitReport> {
        let job = self;
        let Some((prog, args)) = job.argv.split_first() else {
            return refuse(out, "kiln-init: cannot run: empty argv\n", 127);
        };

        // Before the spawn, so that no exit of the program can slip past the signalfd.
        let sigfd = sys::sigchld_fd()?;
        let cgroup = Path::new(cgroup::ROOT);
        let oom_before = cgroup::oom_kills(cgroup);

        let mut cmd = Command::new(prog);
        cmd.args(args)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: `child_setup` runs between fork and exec and makes only async-signal-safe
        // syscalls on its own stack; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(child_setup);
        }
        let start = Instant::now();
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                // As shells do: 127 when there is no such program, 126 when it exists but cannot
                // be run (not executable, argument list too long, bad format…).
                let code = if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                return refuse(out, &format!("kiln-init: cannot run '{prog}': {e}\n"), code);
            }
        };
        let pid = child.id() as libc::pid_t;
        let spawned = match pipes(pid, child) {
            Ok(s) => s,
            Err(e) => {
                sys::kill_run(pid);
                return Err(e);
            }
        };
        let deadline = start.checked_add(Duration::from_millis(job.timeout_ms));
        let sup = Supervisor::new(
            spawned,
            sigfd,
            job.stdin,
            job.feed,
            deadline,
            job.output_bytes,
            out,
        );
        let ended = match sup.run() {
            Ok(ended) => ended,
            Err(e) => {
                sys::kill_run(pid);
                return Err(e);
            }
        };

        let oom = match (oom_before, cgroup::oom_kills(cgroup)) {
            (Some(before), Some(after)) => after > before,
            _ => false,
        };
        let usage = sys::children_usage();
        let exit = ExitStatus::from_raw(ended.wait_status);
        let status = if ended.timed_out {
            Status::Timeout
        } else if ended.limit_hit {
            Status::OutputLimit
        } else if oom {
            Status::Oom
        } else if exit.signal().is_some() {
            Status::Signal
        } else {
            Status::Ok
        };
        let run_us = ended.reaped_at.saturating_duration_since(start).as_micros();
        let report = ExitReport {
            status,
            code: exit.code(),
            signal: exit.signal(),
            cpu_ms: usage.cpu_ms.saturating_sub(job.cpu_before),
            memory_peak_bytes: cgroup::memory_peak(cgroup)
                .or((usage.maxrss_bytes > 0).then_some(usage.maxrss_bytes)),
            run_us: u64::try_from(run_us).unwrap_or(u64::MAX),
            stdout_truncated: ended.stdout_truncated,
            stderr_truncated: ended.stderr_truncated,
        };
        out.send(&Event::Exit(report.clone()))?;
        Ok(report)
    }
}

/// Reports a run that never started as if the program had failed, the way a shell would.
fn refuse(out: &mut Output, msg: &str, code: i32) -> io::Result<ExitReport> {
    let report = ExitReport {
        status: Status::Ok,
        code: Some(code),
        ..ExitReport::default()
    };
    out.send(&Event::Stderr(msg.as_bytes().to_vec()))?;
    out.send(&Event::Exit(report.clone()))?;
    Ok(report)
}

fn pipes(pid: libc::pid_t, mut child: std::process::Child) -> io::Result<Spawned> {
    let missing = || io::Error::other("child pipe missing");
    let stdin = OwnedFd::from(child.stdin.take().ok_or_else(missing)?);
    let stdout = OwnedFd::from(child.stdout.take().ok_or_else(missing)?);
    let stderr = OwnedFd::from(child.stderr.take().ok_or_else(missing)?);
    for fd in [&stdin, &stdout, &stderr] {
        sys::set_nonblocking(fd.as_raw_fd())?;
    }
    Ok(Spawned {
        pid,
        stdin,
        stdout,
        stderr,
    })
}

/// Between fork and exec: undo what init set up for itself, and make the program the OOM
/// killer's first choice so that a memory-hungry run never takes PID 1 with it.
fn child_setup() -> io::Result<()> {
    // SAFETY: only async-signal-safe syscalls on stack data and a static string; the sigset is
    // initialised by sigemptyset before use.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // init is non-dumpable, which makes /proc/self root-owned until exec; writing
        // oom_score_adj needs it to be ours again.
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"1000".as_ptr().cast(), 4);
            libc::close(fd);
        }
    }
    Ok(())
}
