/// Output of one stream, capped on the host side too: kiln-init enforces the limit, but the host
/// never trusts a sandbox to do so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Collected {
    /// Appends `chunk`, keeping the total of this stream and `other` within `limit`.
    /// Returns what was kept of it.
    pub(crate) fn push<'a>(&mut self, chunk: &'a [u8], other_len: usize, limit: u64) -> &'a [u8] {
        let room = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.bytes.len() + other_len);
        if chunk.len() > room {
            self.truncated = true;
        }
        let kept = &chunk[..chunk.len().min(room)];
        self.bytes.extend_from_slice(kept);
        kept
    }
}

/// Which stream a piece of live output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
    CompileStdout,
    CompileStderr,
}

/// What a watched run reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A piece of output, as it arrived.
    Output(StreamKind, Vec<u8>),
    /// The compile step ended; the run follows when it succeeded.
    CompileExit(kiln_proto::ExitReport),
}

/// Where a run's events go as they happen (besides the final result), for streaming.
pub type OutputTap = tokio::sync::mpsc::UnboundedSender<LiveEvent>;

/// Input for an interactive run while it runs (more stdin, its end, a signal). The sender
/// lives with the client's connection; when it is dropped, the program's stdin ends. Shared so
/// that a run retried on another sandbox (one lost before its job was written) takes it along.
pub type InputFeed =
    std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<kiln_proto::Input>>>;

/// A run watched as it goes: its output sent to `tap` as produced and, when `input` is set,
/// its stdin kept open for what arrives there.
#[derive(Debug, Clone)]
pub struct Live {
    pub tap: OutputTap,
    pub input: Option<InputFeed>,
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
