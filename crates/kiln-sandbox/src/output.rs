/// Output of one stream, capped on the host side too: kiln-init enforces the limit, but the host
/// never trusts a sandbox to do so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Collected {
    /// Appends `chunk`, keeping the total of this stream and `other` within `limit`.
    pub(crate) fn push(&mut self, chunk: &[u8], other_len: usize, limit: u64) {
        let room = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.bytes.len() + other_len);
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_caps_both_streams_together() {
        let mut out = Collected::default();
        out.push(b"hello", 0, 8);
        assert_eq!(
            (out.bytes.as_slice(), out.truncated),
            (&b"hello"[..], false)
        );
        out.push(b"world", 2, 8);
        assert_eq!(
            (out.bytes.as_slice(), out.truncated),
            (&b"hellow"[..], true)
        );
        out.push(b"more", 2, 8);
        assert_eq!(out.bytes, b"hellow");
    }
}
