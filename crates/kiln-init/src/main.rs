//! kiln-init: PID 1 of every Kiln sandbox.
//!
//! Reads one job frame from stdin, writes the job's files, runs the program and answers on
//! stdout with its output as frames and a final exit frame (see `kiln-proto`). Exit code 2 means
//! no valid job arrived (the message is on stderr); 1 that the host's stream broke. When PID 1
//! exits, the kernel kills whatever is left in the container.

mod cgroup;
mod files;
mod run;
mod supervise;
mod sys;

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::process::exit;

use kiln_proto::{read_frame, Event, FrameKind, Job, MAX_JOB_FRAME};

/// Frames to the host, written straight to fd 1: no buffer of std's may hold one back.
#[derive(Debug)]
pub struct Output {
    fd: RawFd,
}

impl Output {
    pub fn send(&mut self, event: &Event) -> io::Result<()> {
        sys::write_all(self.fd, &event.to_frame())
    }
}

fn read_job() -> Result<Job, String> {
    // Unbuffered: stdin stays open after the frame and nothing past it may be consumed.
    let mut stdin = sys::FdReader(0);
    match read_frame(&mut stdin, MAX_JOB_FRAME) {
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

fn main() {
    sys::harden();
    let job = match read_job() {
        Ok(job) => job,
        Err(msg) => {
            complain(&msg);
            exit(2);
        }
    };
    let mut out = Output { fd: 1 };
    if let Err(e) = run::run(&job, &mut out) {
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
