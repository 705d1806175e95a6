//! Framing: `u32 LE length | u8 kind | payload`, where the length counts the kind byte too.

use std::io::{self, Read, Write};

use crate::DecodeError;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Job = 1,
    Stdout = 2,
    Stderr = 3,
    Exit = 4,
    CompileStdout = 5,
    CompileStderr = 6,
    CompileExit = 7,
    StdinData = 8,
    StdinEof = 9,
    Signal = 10,
}

impl FrameKind {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => FrameKind::Job,
            2 => FrameKind::Stdout,
            3 => FrameKind::Stderr,
            4 => FrameKind::Exit,
            5 => FrameKind::CompileStdout,
            6 => FrameKind::CompileStderr,
            7 => FrameKind::CompileExit,
            8 => FrameKind::StdinData,
            9 => FrameKind::StdinEof,
            10 => FrameKind::Signal,
            other => return Err(DecodeError::UnexpectedKind(other)),
        })
    }
}

pub(crate) fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).expect("frame below 4 GiB");
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    out
}

fn check_len(len: usize, max: usize) -> Result<(), DecodeError> {
    if len == 0 {
        return Err(DecodeError::Truncated);
    }
    // The kind byte is not payload; `len - 1` cannot overflow where `max + 1` could.
    if len - 1 > max {
        return Err(DecodeError::TooLarge { len, max });
    }
    Ok(())
}

/// Reads one whole frame from a blocking reader. `Ok(None)` on a clean end of stream before the
/// first byte; a stream that ends inside a frame is an `UnexpectedEof` error.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    check_len(len, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let kind =
        FrameKind::from_u8(body[0]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    body.remove(0);
    Ok(Some((kind, body)))
}

/// Writes one frame built by `Job::to_frame`, `Event::to_frame` or `Input::to_frame`.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

/// An incremental decoder for a byte stream that arrives in arbitrary chunks (the host reading
/// kiln-init's frames; kiln-init reading an interactive job's input frames).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames whose payload is above `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. An error is final: the
    /// stream is out of step and nothing after it can be trusted.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, DecodeError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        check_len(len, self.max)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(self.buf[4])?;
        let payload = self.buf[5..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some((kind, payload)))
    }

    /// Bytes received that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}
