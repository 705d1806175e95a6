//! Little-endian integers and length-prefixed byte strings, with bounds-checked reads.

use std::fmt;

/// Why a frame or payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ended before a field was complete.
    Truncated,
    /// Bytes were left after the last field.
    TrailingBytes(usize),
    /// A frame's length is above the limit for its direction.
    TooLarge { len: usize, max: usize },
    /// A frame's kind byte is unknown or not expected here.
    UnexpectedKind(u8),
    /// A string field is not UTF-8.
    NotUtf8,
    /// A field holds a value outside its range.
    BadValue(&'static str, u64),
    /// The job was encoded by another protocol version.
    Version { expected: u32, found: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "frame truncated"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the last field"),
            DecodeError::TooLarge { len, max } => write!(f, "frame of {len} bytes exceeds {max}"),
            DecodeError::UnexpectedKind(k) => write!(f, "unexpected frame kind {k}"),
            DecodeError::NotUtf8 => write!(f, "string field is not UTF-8"),
            DecodeError::BadValue(field, v) => write!(f, "bad value {v} for {field}"),
            DecodeError::Version { expected, found } => {
                write!(f, "protocol version {found}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).expect("field below 4 GiB"));
        self.0.extend_from_slice(b);
    }
    pub(crate) fn opt_i32(&mut self, v: Option<i32>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8)
    }
    /// A element count; each element takes at least 4 bytes, so a count larger than what is left
    /// is rejected before anything is allocated for it.
    pub(crate) fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.buf.len() / 4 {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    pub(crate) fn opt_i32(&mut self) -> Result<Option<i32>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()? as i32)),
            t => Err(DecodeError::BadValue("option tag", u64::from(t))),
        }
    }
    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            t => Err(DecodeError::BadValue("option tag", u64::from(t))),
        }
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}
