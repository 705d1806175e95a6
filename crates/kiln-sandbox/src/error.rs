use std::time::Duration;

/// Why a run could not take place or could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is not present and could not be pulled.
    #[error("image {image} not found and could not be pulled: {detail}")]
    ImageNotFound { image: String, detail: String },
    /// The engine refused a field of the request (an image reference it cannot parse, say).
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// The sandbox engine (the Docker daemon) cannot be reached.
    #[error("sandbox engine unavailable: {0}")]
    Unavailable(String),
    /// Every run slot is busy and the queue is full, or the wait for a slot timed out.
    #[error("server at capacity: {reason}")]
    AtCapacity {
        reason: &'static str,
        retry_after: Duration,
    },
    /// The engine refused an operation on a sandbox.
    #[error("{op} of sandbox {id} failed: {detail}")]
    Engine {
        op: &'static str,
        id: String,
        detail: String,
    },
    /// The sandbox was gone before the job reached it: the job frame could not be written.
    /// Nothing of the job ran, so running it elsewhere is safe.
    #[error("sandbox {id} lost before the run: {detail}")]
    Lost { id: String, detail: String },
    /// The sandbox was stopped from outside while the job ran (the engine stopped or
    /// restarted, or someone removed the container): the job may have partly run.
    #[error("sandbox {id} was stopped before the run finished: {detail}")]
    Interrupted { id: String, detail: String },
    /// kiln-init broke the protocol, or the sandbox ended without an exit frame.
    #[error("sandbox {id}: {detail}")]
    Protocol { id: String, detail: String },
}

impl Error {
    /// Whether the run failed for a reason of the moment — the engine down, the server full or
    /// shutting down, the sandbox stopped from outside — so that trying again later may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::AtCapacity { .. }
                | Error::Unavailable(_)
                | Error::Lost { .. }
                | Error::Interrupted { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
