//! The single-threaded poll loop of a run: feeds the program's stdin (from the job, and for an
//! interactive job from the host's input frames as they come), forwards its output as frames
//! the moment it arrives, reaps children (as PID 1, orphans land on init) and enforces the
//! deadline and the output limit.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use kiln_proto::{Event, FrameDecoder, Input, MAX_EVENT_FRAME};
use libc::{c_int, pid_t};

use crate::sys;
use crate::Output;

const CHUNK: usize = 64 * 1024;

/// Reads per stream once the program has exited. After the kill nothing should write any more,
/// but a process that escaped it (outside a container) could keep a pipe full forever.
const DRAIN_READS: usize = 64;

/// Stdin the host has sent but the program has not read yet, beyond which kiln-init stops
/// reading the host's input (the host then waits) until the program catches up.
const MAX_PENDING_STDIN: usize = 8 << 20;

/// An interactive job's input: frames the host sends on its channel while the program runs.
#[derive(Debug)]
pub struct Feed {
    fd: RawFd,
    decoder: FrameDecoder,
    /// Whether more stdin may come: not after the host's end of stdin or of the channel.
    stdin_open: bool,
    /// Whether the host's channel is open (signals may come after the end of stdin).
    open: bool,
}

impl Feed {
    /// Input read from `fd`, the channel the job came on (blocking; read only when readable).
    pub fn new(fd: RawFd) -> Self {
        Feed {
            fd,
            decoder: FrameDecoder::new(MAX_EVENT_FRAME),
            stdin_open: true,
            open: true,
        }
    }
}

/// The pipes of a freshly spawned program, parent ends.
#[derive(Debug)]
pub struct Spawned {
    pub pid: pid_t,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How the loop ended.
#[derive(Debug)]
pub struct Ended {
    pub wait_status: c_int,
    pub reaped_at: Instant,
    pub timed_out: bool,
    pub limit_hit: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug)]
struct Stream {
    fd: Option<OwnedFd>,
    truncated: bool,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Signal,
    Stream(usize),
    Stdin,
    Feed,
}

#[derive(Debug)]
pub struct Supervisor<'a> {
    pid: pid_t,
    sigfd: OwnedFd,
    deadline: Option<Instant>,
    stdin: Option<OwnedFd>,
    /// Bytes for stdin not yet written.
    pending: VecDeque<u8>,
    /// The host's input while the program runs (interactive jobs); stdin stays open while
    /// it is.
    feed: Option<&'a mut Feed>,
    /// stdout, stderr.
    streams: [Stream; 2],
    forwarded: u64,
    limit: u64,
    limit_hit: bool,
    main: Option<(c_int, Instant)>,
    out: &'a mut Output,
}

impl<'a> Supervisor<'a> {
    pub fn new(
        child: Spawned,
        sigfd: OwnedFd,
        stdin_data: &[u8],
        feed: Option<&'a mut Feed>,
        deadline: Option<Instant>,
        output_bytes: u64,
        out: &'a mut Output,
    ) -> Self {
        let mut sup = Supervisor {
            pid: child.pid,
            sigfd,
            deadline,
            stdin: Some(child.stdin),
            pending: stdin_data.iter().copied().collect(),
            feed: feed.filter(|f| f.open),
            streams: [
                Stream {
                    fd: Some(child.stdout),
                    truncated: false,
                },
                Stream {
                    fd: Some(child.stderr),
                    truncated: false,
                },
            ],
            forwarded: 0,
            limit: output_bytes,
            limit_hit: false,
            main: None,
            out,
        };
        // Closing an unneeded stdin at once gives the program its EOF right away.
        sup.close_stdin_if_done();
        sup
    }

    /// Runs the loop until the program has exited or been killed. An error means the frames
    /// could not be written to the host; the run is then still alive and the caller kills it.
    pub fn run(mut self) -> io::Result<Ended> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if self.main.is_some() {
                // Background processes die with the run; what they and the program wrote
                // before is still in the pipes. Their EOF is not waited for.
                sys::kill_run(self.pid);
                self.drain(&mut buf)?;
                return Ok(self.ended(false));
            }
            if self.limit_hit {
                sys::kill_run(self.pid);
                self.wait_main()?;
                return Ok(self.ended(false));
            }
            let timeout = match self.deadline {
                None => -1,
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        sys::kill_run(self.pid);
                        self.wait_main()?;
                        return Ok(self.ended(true));
                    }
                    poll_timeout(deadline - now)
                }
            };

            let mut fds = [libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            }; 5];
            let mut slots = [Slot::Signal; 5];
            let mut n = 0;
            let mut add = |fd: &OwnedFd, events: i16, slot: Slot| {
                fds[n].fd = fd.as_raw_fd();
                fds[n].events = events;
                slots[n] = slot;
                n += 1;
            };
            add(&self.sigfd, libc::POLLIN, Slot::Signal);
            for (i, s) in self.streams.iter().enumerate() {
                if let Some(fd) = &s.fd {
                    add(fd, libc::POLLIN, Slot::Stream(i));
                }
            }
            if let (Some(fd), false) = (&self.stdin, self.pending.is_empty()) {
                add(fd, libc::POLLOUT, Slot::Stdin);
            }
            if let Some(feed) = &self.feed {
                if self.pending.len() < MAX_PENDING_STDIN {
                    fds[n].fd = feed.fd;
                    fds[n].events = libc::POLLIN;
                    slots[n] = Slot::Feed;
                    n += 1;
                }
            }
            match sys::poll(&mut fds[..n], timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for (pfd, slot) in fds[..n].iter().zip(slots) {
                if pfd.revents == 0 {
                    continue;
                }
                match slot {
                    Slot::Signal => self.reap(),
                    Slot::Stream(i) => {
                        self.read_stream(i, &mut buf)?;
                    }
                    Slot::Stdin => self.feed_stdin(),
                    Slot::Feed => self.read_feed(&mut buf)?,
                }
                if self.limit_hit {
                    break;
                }
            }
        }
    }

    fn ended(&self, timed_out: bool) -> Ended {
        // Every way out of the loop has reaped the program first.
        let (wait_status, reaped_at) = self.main.unwrap_or((0, Instant::now()));
        Ended {
            wait_status,
            reaped_at,
            timed_out,
            limit_hit: self.limit_hit,
            stdout_truncated: self.streams[0].truncated,
            stderr_truncated: self.streams[1].truncated,
        }
    }

    /// Reaps everything that has exited: the program, and orphans re-parented to PID 1.
    fn reap(&mut self) {
        sys::drain_signalfd(self.sigfd.as_raw_fd());
        while let Ok(Some((pid, status))) = sys::waitpid(-1, true) {
            if pid == self.pid {
                self.main = Some((status, Instant::now()));
            }
        }
    }

    /// After the kill: the program is gone or about to be, so a blocking wait is short.
    fn wait_main(&mut self) -> io::Result<()> {
        if self.main.is_none() {
            if let Some((_, status)) = sys::waitpid(self.pid, false)? {
                self.main = Some((status, Instant::now()));
            }
        }
        Ok(())
    }

    /// Reads once from a stream and forwards what came. `Ok(true)` if bytes were read.
    fn read_stream(&mut self, i: usize, buf: &mut [u8]) -> io::Result<bool> {
        let Some(fd) = &self.streams[i].fd else {
            return Ok(false);
        };
        match sys::read(fd.as_raw_fd(), buf) {
            Ok(0) => {
                self.streams[i].fd = None;
                Ok(false)
            }
            Ok(n) => {
                self.forward(i, &buf[..n])?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            // Any other error on a pipe means nothing more will come from it.
            Err(_) => {
                self.streams[i].fd = None;
                Ok(false)
            }
        }
    }

    /// Sends a chunk, cut at the output limit; passing the limit ends the run.
    fn forward(&mut self, i: usize, chunk: &[u8]) -> io::Result<()> {
        let room = self.limit.saturating_sub(self.forwarded);
        let take = usize::try_from(room).map_or(chunk.len(), |r| r.min(chunk.len()));
        if take > 0 {
            let part = chunk[..take].to_vec();
            let event = if i == 0 {
                Event::Stdout(part)
            } else {
                Event::Stderr(part)
            };
            self.out.send(&event)?;
            self.forwarded += take as u64;
        }
        if take < chunk.len() {
            self.streams[i].truncated = true;
            self.limit_hit = true;
        }
        Ok(())
    }

    /// Whatever is readable now, stdout then stderr, still within the output limit.
    fn drain(&mut self, buf: &mut [u8]) -> io::Result<()> {
        for i in 0..self.streams.len() {
            for _ in 0..DRAIN_READS {
                if self.limit_hit || !self.read_stream(i, buf)? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn feed_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            return;
        };
        match sys::write(fd.as_raw_fd(), self.pending.as_slices().0) {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // EPIPE: the program closed its stdin and does not want the rest.
            Err(_) => {
                self.stdin = None;
                self.pending.clear();
            }
        }
        self.close_stdin_if_done();
    }

    /// Stdin ends once everything for it is written and nothing more can come.
    fn close_stdin_if_done(&mut self) {
        let more = self.feed.as_ref().is_some_and(|f| f.stdin_open);
        if self.pending.is_empty() && !more {
            self.stdin = None;
        }
    }

    /// Reads what the host sent: stdin for the program, its end, or a signal. The host's
    /// channel ending is the end of stdin too. An error means the host broke the protocol.
    fn read_feed(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let Some(feed) = self.feed.as_deref_mut() else {
            return Ok(());
        };
        let n = sys::read(feed.fd, buf).unwrap_or(0);
        if n == 0 {
            feed.open = false;
            feed.stdin_open = false;
        }
        feed.decoder.push(&buf[..n]);
        let invalid = |e: kiln_proto::DecodeError| io::Error::new(io::ErrorKind::InvalidData, e);
        while let Some((kind, payload)) = feed.decoder.next_frame().map_err(invalid)? {
            match Input::decode(kind, &payload).map_err(invalid)? {
                // Once the program has closed its stdin, or the host has ended it, more stdin
                // is dropped.
                Input::Stdin(bytes) if self.stdin.is_some() && feed.stdin_open => {
                    self.pending.extend(bytes)
                }
                Input::Stdin(_) => {}
                Input::StdinEof => feed.stdin_open = false,
                Input::Signal(sig) => sys::signal_run(self.pid, sig),
            }
        }
        if !feed.open {
            self.feed = None;
        }
        self.close_stdin_if_done();
        Ok(())
    }
}

/// Rounded up, so the loop does not spin on zero-millisecond polls just before the deadline.
fn poll_timeout(left: Duration) -> c_int {
    c_int::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_rounds_up_and_saturates() {
        assert_eq!(poll_timeout(Duration::from_nanos(1)), 1);
        assert_eq!(poll_timeout(Duration::from_millis(300)), 300);
        assert_eq!(poll_timeout(Duration::from_micros(300_001)), 301);
        assert_eq!(poll_timeout(Duration::from_secs(u64::MAX / 4)), c_int::MAX);
    }
}
