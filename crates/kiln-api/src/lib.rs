//! Wire types of Kiln's HTTP API (v1) and their validation.
//!
//! A request arrives as an [`ExecuteRequest`], is checked against the server's [`Policy`] by
//! [`ExecuteRequest::validate`] and comes out as an [`ExecSpec`] whose every field is concrete
//! (defaults filled in, files decoded, limits within the maxima). Responses are
//! [`ExecuteResponse`] or an [`ErrorBody`]. The crate knows nothing of sandboxes or HTTP servers.

mod error;
mod limits;
mod request;
mod response;
mod runtime;
mod validate;

pub use error::{ErrorBody, ErrorDetail, ValidationError};
pub use limits::{Limits, LimitsRequest, Policy};
pub use request::{CacheMode, Encoding, ExecuteRequest, FileMode, FileSpec};
pub use response::{
    signal_name, signal_number, CacheInfo, ExecuteResponse, InvalidUtf8, RunStatus, RuntimeInfo,
    SandboxInfo, StageResult, StartKind, Timings, Truncated, Usage,
};
pub use runtime::{version_matches, Catalog, Runtime};
pub use validate::{CompileSpec, ExecSpec, ResolvedFile, DEFAULT_WORKDIR};
