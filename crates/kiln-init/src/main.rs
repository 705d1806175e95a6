//! kiln-init: PID 1 of every Kiln sandbox.
//!
//! Reads one job frame from stdin, writes the job's files, runs the program and answers on
//! stdout with its output as frames and a final exit frame (see `kiln-proto`); an interactive
//! job's further stdin arrives as input frames on the same channel while the program runs. Exit code 2 means
//! no valid job arrived (the message is on stderr); 1 that the host's stream broke. When PID 1
//! exits, the kernel kills whatever is left in the container.

mod cgroup;
mod files;
mod run;
mod supervise;
mod sys;

use std::io::{self, Write};
use std::os::fd::{IntoRawFd, RawFd};
use std::process::exit;

use kiln_proto::{read_frame, Event, FrameKind, Job, MAX_JOB_FRAME};

/// Frames to the host, written straight to fd 1: no buffer of std's may hold one back.
#[derive(Debug)]
pub struct Output {
    fd: RawFd,
    /// While a job's compile step runs, its output and exit go out as the compile's.
    pub compiling: bool,
}

impl Output {
    pub fn send(&mut self, event: &Event) -> io::Result<()> {
        let relabelled;
        let event = match (self.compiling, event) {
            (true, Event::Stdout(b)) => {
                relabelled = Event::CompileStdout(b.clone());
                &relabelled
            }
            (true, Event::Stderr(b)) => {
                relabelled = Event::CompileStderr(b.clone());
                &relabelled
            }
            (true, Event::Exit(x)) => {
                relabelled = Event::CompileExit(x.clone());
                &relabelled
            }
            _ => event,
        };
        sys::write_all(self.fd, &event.to_frame())
    }
}

fn read_job(fd: RawFd) -> Result<Job, String> {
    // Unbuffered: the channel stays open after the frame and nothing past it may be consumed.
    let mut input = sys::FdReader(fd);
    match read_frame(&mut input, MAX_JOB_FRAME) {
        Ok(Some((FrameKind::Job, payload))) => {
            Job::decode(&payload).map_err(|e| format!("bad job frame: {e}"))
        }
        Ok(Some((kind, _))) => Err(format!("expected a job frame, got {kind:?}")),
        Ok(None) => Err("no job frame: stdin is closed".to_owned()),
        Err(e) => Err(format!("cannot read the job frame: {e}")),
    }
}

/// `eprintln!` would panic if stderr is gone; init must not.
fn complain(msg: &str) {
    let _ = writeln!(io::stderr(), "kiln-init: {msg}");
}

/// What the command line asks for: `[--channel PATH] [--ksm] [--no-thp]`.
#[derive(Debug, Default)]
struct Options {
    channel: Option<String>,
    ksm: bool,
    no_thp: bool,
}

fn options() -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--channel" => opts.channel = Some(args.next().ok_or("--channel needs a path")?),
            "--ksm" => opts.ksm = true,
            "--no-thp" => opts.no_thp = true,
            other => {
                return Err(format!(
                    "unexpected argument {other:?}; usage: kiln-init [--channel PATH] [--ksm] [--no-thp]"
                ))
            }
        }
    }
    Ok(opts)
}

/// The host's channel: with `--channel PATH`, a unix socket the host listens on (bind-mounted
/// into the sandbox), used both ways; otherwise stdin for the job and stdout for the frames.
fn channel(path: Option<&str>) -> Result<(RawFd, RawFd), String> {
    let Some(path) = path else { return Ok((0, 1)) };
    // The host listens before the sandbox starts; a few retries cover a slow bind only.
    let mut last = None;
    for _ in 0..50 {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(stream) => {
                let fd = stream.into_raw_fd();
                return Ok((fd, fd));
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(format!(
        "cannot connect to the host at {path}: {}",
        last.expect("tried")
    ))
}

fn main() {
    sys::harden();
    let opts = match options() {
        Ok(o) => o,
        Err(msg) => {
            complain(&msg);
            exit(2);
        }
    };
    if opts.ksm {
        // Inherited across fork and exec: every process of the run is a KSM candidate. A
        // kernel without it (before 6.4) refuses; the run goes on unmerged.
        sys::memory_merge();
    }
    if opts.no_thp {
        // Also inherited: the run's memory stays in 4 KiB pages, which KSM can merge and
        // which a small heap does not round up to 2 MiB.
        sys::thp_disable();
    }
    let (input, output) = match channel(opts.channel.as_deref()) {
        Ok(fds) => fds,
        Err(msg) => {
            complain(&msg);
            exit(2);
        }
    };
    let job = match read_job(input) {
        Ok(job) => job,
        Err(msg) => {
            complain(&msg);
            exit(2);
        }
    };
    let mut out = Output {
        fd: output,
        compiling: false,
    };
    let feed = job.interactive.then(|| supervise::Feed::new(input));
    if let Err(e) = run::run(&job, &mut out, feed) {
        complain(&format!("cannot report the run: {e}"));
        exit(1);
    }
    exit(0);
}

/// A fresh, empty directory for a unit test.
#[cfg(test)]
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-init-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
