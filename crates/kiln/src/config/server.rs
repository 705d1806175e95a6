use serde::Deserialize;

use super::ConfigError;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
pub const DEFAULT_MAX_CONCURRENT: usize = 8;
pub const DEFAULT_QUEUE_SIZE: usize = 64;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;

/// The HTTP side: where to listen, how large a body may be, how many runs at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub max_body_bytes: usize,
    /// Runs in progress at once.
    pub max_concurrent: usize,
    /// Runs waiting for a slot; beyond this a request is answered 503 at once.
    pub queue_size: usize,
    /// How long a run may wait for a slot before it is answered 503.
    pub queue_timeout_ms: u64,
    /// How long in-flight runs may take to finish on SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Most requests in one `POST /api/v1/execute/batch`.
    pub max_batch: usize,
    /// How long a client may take to send a request's headers before its connection is closed.
    pub header_timeout_ms: u64,
    /// How long a request's body may take to arrive before it is answered 408.
    pub body_timeout_ms: u64,
    /// Open client connections at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: DEFAULT_LISTEN.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            queue_size: DEFAULT_QUEUE_SIZE,
            queue_timeout_ms: DEFAULT_QUEUE_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            max_batch: crate::http::DEFAULT_MAX_BATCH,
            header_timeout_ms: 10_000,
            body_timeout_ms: crate::http::DEFAULT_BODY_TIMEOUT.as_millis() as u64,
            max_connections: 4096,
        }
    }
}

impl ServerSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "server.listen {:?} is not an address such as 0.0.0.0:8080",
                self.listen
            )));
        }
        if self.max_concurrent == 0 {
            return Err(ConfigError::Invalid(
                "server.max_concurrent must be at least 1".into(),
            ));
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 || self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.header_timeout_ms, body_timeout_ms and max_connections must be at least 1"
                    .into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}
