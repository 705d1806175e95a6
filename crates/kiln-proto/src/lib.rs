//! The job protocol between the Kiln host and `kiln-init`, the PID 1 of every sandbox.
//!
//! The host writes exactly one [`Job`] frame on the sandbox's stdin; kiln-init answers on its
//! stdout with any number of [`Event::Stdout`] / [`Event::Stderr`] frames and ends with one
//! [`Event::Exit`]. A job with a [`Compile`] step first gets the compiler's
//! [`Event::CompileStdout`] / [`Event::CompileStderr`] and one [`Event::CompileExit`]; a compile
//! that fails (any status but `ok`, or a non-zero exit code) ends the job there, without an
//! `Exit`. An [`Job::interactive`] job keeps the host's channel open the other way too: after
//! the job frame the host may send [`Input`] frames — more stdin, its end, a signal for the
//! program — until the exit frame. Every frame is
//!
//! ```text
//! u32 little-endian length of what follows | u8 kind | payload
//! ```
//!
//! Payloads are built from fixed-width little-endian integers and length-prefixed byte strings.
//! Decoding never panics and never trusts a length: a truncated, oversized or malformed frame is an
//! [`DecodeError`]. This crate depends on `std` alone so that the static kiln-init can use it.

mod codec;
mod frame;

pub use codec::DecodeError;
pub use frame::{read_frame, write_frame, FrameDecoder, FrameKind};

use codec::{Reader, Writer};

/// Bumped whenever the encoding of a [`Job`] or an [`Event`] changes. kiln-init refuses a job
/// whose version differs from its own, so that a stale binary never misreads a frame.
pub const PROTOCOL_VERSION: u32 = 3;

/// The largest job frame kiln-init accepts (files and stdin travel inside it).
pub const MAX_JOB_FRAME: usize = 256 << 20;

/// The largest event frame the host accepts. kiln-init sends output in chunks far below this.
pub const MAX_EVENT_FRAME: usize = 4 << 20;

/// One run, as kiln-init receives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// The program and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Variables set on top of the sandbox's own environment.
    pub env: Vec<(String, String)>,
    /// Bytes written to the program's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Files written under the working directory before the program starts.
    pub files: Vec<FileEntry>,
    /// Wall-clock limit of the run; kiln-init kills every process of the sandbox when it passes.
    pub timeout_ms: u64,
    /// Limit on stdout and stderr together; the run is killed when it is exceeded.
    pub output_bytes: u64,
    /// A step before the run, in the same sandbox and working directory (a compiler).
    pub compile: Option<Compile>,
    /// The program's stdin stays open after `stdin`: the host sends more as [`Input`] frames
    /// while the program runs, and closes it with [`Input::StdinEof`] (or by closing the
    /// channel).
    pub interactive: bool,
}

/// What the host sends kiln-init after an interactive job's frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes for the program's stdin.
    Stdin(Vec<u8>),
    /// No more stdin: the program reads its end of file once what came before is consumed.
    StdinEof,
    /// A signal for every process of the run (the program's process group).
    Signal(i32),
}

impl Input {
    /// Encodes the input as one complete frame.
    pub fn to_frame(&self) -> Vec<u8> {
        match self {
            Input::Stdin(b) => frame::encode(FrameKind::StdinData, b),
            Input::StdinEof => frame::encode(FrameKind::StdinEof, &[]),
            Input::Signal(sig) => frame::encode(FrameKind::Signal, &sig.to_le_bytes()),
        }
    }

    /// Decodes an input frame's payload.
    pub fn decode(kind: FrameKind, payload: &[u8]) -> Result<Input, DecodeError> {
        match kind {
            FrameKind::StdinData => Ok(Input::Stdin(payload.to_vec())),
            FrameKind::StdinEof => {
                Reader::new(payload).finish()?;
                Ok(Input::StdinEof)
            }
            FrameKind::Signal => {
                let mut r = Reader::new(payload);
                let sig = r.u32()? as i32;
                r.finish()?;
                if !(1..=64).contains(&sig) {
                    return Err(DecodeError::BadValue("signal", sig as u64));
                }
                Ok(Input::Signal(sig))
            }
            other => Err(DecodeError::UnexpectedKind(other as u8)),
        }
    }
}

/// The compile step of a [`Job`]: no stdin, the job's environment and output limit, its own
/// time limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compile {
    pub argv: Vec<String>,
    pub timeout_ms: u64,
}

impl ExitReport {
    /// Whether a compile step that ended so lets the run go on.
    pub fn succeeded(&self) -> bool {
        self.status == Status::Ok && self.code == Some(0)
    }
}

/// A file of a [`Job`]. `path` is relative to the working directory and already validated by the
/// host; kiln-init checks it again and never follows a symlink while writing it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileEntry {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// The program ended by itself (whatever its exit code).
    #[default]
    Ok,
    /// The wall-clock limit passed and kiln-init killed the run.
    Timeout,
    /// The kernel's OOM killer killed a process of the run (the memory limit was hit).
    Oom,
    /// stdout and stderr together passed the output limit and kiln-init killed the run.
    OutputLimit,
    /// The program was ended by a signal that none of the above explains.
    Signal,
}

impl Status {
    /// The stable name used on the wire of the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Timeout => "timeout",
            Status::Oom => "oom",
            Status::OutputLimit => "output_limit",
            Status::Signal => "signal",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Timeout => 1,
            Status::Oom => 2,
            Status::OutputLimit => 3,
            Status::Signal => 4,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Status::Ok,
            1 => Status::Timeout,
            2 => Status::Oom,
            3 => Status::OutputLimit,
            4 => Status::Signal,
            other => return Err(DecodeError::BadValue("status", u64::from(other))),
        })
    }
}

/// The last frame of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitReport {
    pub status: Status,
    /// Exit code when the program exited by itself; `None` when it was killed by a signal.
    pub code: Option<i32>,
    /// The signal number that ended the program, if one did.
    pub signal: Option<i32>,
    /// User plus system CPU time of every process of the run.
    pub cpu_ms: u64,
    /// Peak memory of the sandbox's cgroup, or the largest RSS of the run's processes.
    pub memory_peak_bytes: Option<u64>,
    /// From the program's start to its end, measured by kiln-init.
    pub run_us: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// What kiln-init sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitReport),
    CompileStdout(Vec<u8>),
    CompileStderr(Vec<u8>),
    CompileExit(ExitReport),
}

impl Job {
    /// Encodes the job as one complete frame, ready to be written on the sandbox's stdin.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(PROTOCOL_VERSION);
        w.u32(len_u32(self.argv.len()));
        for a in &self.argv {
            w.bytes(a.as_bytes());
        }
        w.u32(len_u32(self.env.len()));
        for (k, v) in &self.env {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
        w.bytes(&self.stdin);
        w.u32(len_u32(self.files.len()));
        for f in &self.files {
            w.bytes(f.path.as_bytes());
            w.u32(f.mode);
            w.bytes(&f.content);
        }
        w.u64(self.timeout_ms);
        w.u64(self.output_bytes);
        match &self.compile {
            None => w.u8(0),
            Some(c) => {
                w.u8(1);
                w.u32(len_u32(c.argv.len()));
                for a in &c.argv {
                    w.bytes(a.as_bytes());
                }
                w.u64(c.timeout_ms);
            }
        }
        w.u8(u8::from(self.interactive));
        frame::encode(FrameKind::Job, &w.into_inner())
    }

    /// Decodes the payload of a [`FrameKind::Job`] frame.
    pub fn decode(payload: &[u8]) -> Result<Job, DecodeError> {
        let mut r = Reader::new(payload);
        let version = r.u32()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version {
                expected: PROTOCOL_VERSION,
                found: version,
            });
        }
        let argc = r.count()?;
        let mut argv = Vec::with_capacity(argc);
        for _ in 0..argc {
            argv.push(r.string()?);
        }
        let envc = r.count()?;
        let mut env = Vec::with_capacity(envc);
        for _ in 0..envc {
            env.push((r.string()?, r.string()?));
        }
        let stdin = r.bytes()?.to_vec();
        let filec = r.count()?;
        let mut files = Vec::with_capacity(filec);
        for _ in 0..filec {
            files.push(FileEntry {
                path: r.string()?,
                mode: r.u32()?,
                content: r.bytes()?.to_vec(),
            });
        }
        let timeout_ms = r.u64()?;
        let output_bytes = r.u64()?;
        let compile = match r.u8()? {
            0 => None,
            1 => {
                let n = r.count()?;
                let mut argv = Vec::with_capacity(n);
                for _ in 0..n {
                    argv.push(r.string()?);
                }
                Some(Compile {
                    argv,
                    timeout_ms: r.u64()?,
                })
            }
            other => return Err(DecodeError::BadValue("compile flag", u64::from(other))),
        };
        let interactive = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(DecodeError::BadValue("interactive flag", u64::from(other))),
        };
        let job = Job {
            argv,
            env,
            stdin,
            files,
            timeout_ms,
            output_bytes,
            compile,
            interactive,
        };
        r.finish()?;
        Ok(job)
    }
}

impl Event {
    /// Encodes the event as one complete frame.
    pub fn to_frame(&self) -> Vec<u8> {
        match self {
            Event::Stdout(b) => frame::encode(FrameKind::Stdout, b),
            Event::Stderr(b) => frame::encode(FrameKind::Stderr, b),
            Event::CompileStdout(b) => frame::encode(FrameKind::CompileStdout, b),
            Event::CompileStderr(b) => frame::encode(FrameKind::CompileStderr, b),
            Event::Exit(x) => frame::encode(FrameKind::Exit, &x.encode()),
            Event::CompileExit(x) => frame::encode(FrameKind::CompileExit, &x.encode()),
        }
    }

    /// Decodes an event frame's payload.
    pub fn decode(kind: FrameKind, payload: &[u8]) -> Result<Event, DecodeError> {
        match kind {
            FrameKind::Stdout => Ok(Event::Stdout(payload.to_vec())),
            FrameKind::Stderr => Ok(Event::Stderr(payload.to_vec())),
            FrameKind::CompileStdout => Ok(Event::CompileStdout(payload.to_vec())),
            FrameKind::CompileStderr => Ok(Event::CompileStderr(payload.to_vec())),
            FrameKind::Exit => Ok(Event::Exit(ExitReport::decode(payload)?)),
            FrameKind::CompileExit => Ok(Event::CompileExit(ExitReport::decode(payload)?)),
            FrameKind::Job | FrameKind::StdinData | FrameKind::StdinEof | FrameKind::Signal => {
                Err(DecodeError::UnexpectedKind(kind as u8))
            }
        }
    }
}

impl ExitReport {
    fn encode(&self) -> Vec<u8> {
        let x = self;
        let mut w = Writer::default();
        w.u8(x.status.to_u8());
        w.opt_i32(x.code);
        w.opt_i32(x.signal);
        w.u64(x.cpu_ms);
        w.opt_u64(x.memory_peak_bytes);
        w.u64(x.run_us);
        w.u8(u8::from(x.stdout_truncated) | (u8::from(x.stderr_truncated) << 1));
        w.into_inner()
    }

    fn decode(payload: &[u8]) -> Result<ExitReport, DecodeError> {
        let mut r = Reader::new(payload);
        let status = Status::from_u8(r.u8()?)?;
        let code = r.opt_i32()?;
        let signal = r.opt_i32()?;
        let cpu_ms = r.u64()?;
        let memory_peak_bytes = r.opt_u64()?;
        let run_us = r.u64()?;
        let flags = r.u8()?;
        if flags > 3 {
            return Err(DecodeError::BadValue("truncation flags", u64::from(flags)));
        }
        r.finish()?;
        Ok(ExitReport {
            status,
            code,
            signal,
            cpu_ms,
            memory_peak_bytes,
            run_us,
            stdout_truncated: flags & 1 != 0,
            stderr_truncated: flags & 2 != 0,
        })
    }
}

fn len_u32(n: usize) -> u32 {
    // A job is far below 4 GiB: MAX_JOB_FRAME bounds it before it is ever encoded.
    u32::try_from(n).expect("count fits in u32")
}

#[cfg(test)]
mod tests;
