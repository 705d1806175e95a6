//! Sandboxes for Kiln: the [`Backend`] trait, its Docker implementation, and the [`Executor`]
//! that admits runs, gets each a fresh sandbox and turns what kiln-init reports into a response.
//!
//! Lifecycle of a sandbox: [`Backend::launch`] creates it, attaches to its stdin and output and
//! starts it, leaving kiln-init waiting for its job; [`Sandbox::run`] writes the job and reads
//! frames until the exit frame. A sandbox serves exactly one run and is removed when it is
//! dropped, in the background, whatever happened before: success, error, timeout, or a caller
//! that went away.

mod backend;
pub mod docker;
mod error;
mod executor;
pub mod memory;
pub mod metrics;
mod output;
pub mod pool;

pub use backend::{Backend, RunOutcome, Sandbox, SandboxSpec, StageOutcome};
pub use error::{Error, Result};
pub use executor::{Admission, Executor, ExecutorConfig};
pub use kiln_proto::{Input, PROTOCOL_VERSION};
pub use output::{Collected, InputFeed, Live, LiveEvent, OutputTap, StreamKind};
