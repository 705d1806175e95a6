//! What a tier stores: `b"KC1\0"`, the first 8 bytes of the payload's SHA-256, the payload.

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"KC1\0";
const HEADER: usize = 12;

/// A stored entry that does not check out (truncated, wrong format, checksum mismatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt cache entry: {0}")]
pub struct Corrupt(pub &'static str);

fn digest(payload: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&digest(payload));
    out.extend_from_slice(payload);
    out
}

pub(crate) fn open(stored: &[u8]) -> Result<&[u8], Corrupt> {
    if stored.len() < HEADER {
        return Err(Corrupt("shorter than its header"));
    }
    if &stored[..4] != MAGIC {
        return Err(Corrupt("unknown format"));
    }
    let payload = &stored[HEADER..];
    if stored[4..HEADER] != digest(payload) {
        return Err(Corrupt("checksum mismatch"));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_entries_open_and_damaged_ones_do_not() {
        let sealed = seal(b"{\"stdout\":\"hi\"}");
        assert_eq!(open(&sealed).unwrap(), b"{\"stdout\":\"hi\"}");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(open(&flipped), Err(Corrupt("checksum mismatch")));
        assert_eq!(open(&sealed[..5]), Err(Corrupt("shorter than its header")));
        assert_eq!(open(b"garbage-garbage!"), Err(Corrupt("unknown format")));
    }
}
