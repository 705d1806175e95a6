use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_api::{ErrorBody, ValidationError};
use tracing::{error, warn};

/// Everything the HTTP edge answers with other than a result. Each variant has one status code
/// and one stable `code`; internal faults are logged with their cause and answered without it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    BodyTimeout(Duration),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::Error),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("this route speaks WebSocket only: {0}")]
    NotWebSocket(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after) = self.parts();
        let mut res = (status, Json(body)).into_response();
        if let Some(after) = retry_after {
            let secs = after.as_secs().max(1).to_string();
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs).expect("digits"),
            );
        }
        res
    }
}

impl ApiError {
    /// The status, the body and the `Retry-After` this error is answered with; a batch item
    /// that fails carries the same body.
    pub fn parts(self) -> (StatusCode, ErrorBody, Option<Duration>) {
        use kiln_sandbox::Error as S;
        let message = self.to_string();
        let (status, body, retry_after) = match self {
            ApiError::BadJson(_) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new("invalid_json", message),
                None,
            ),
            ApiError::Invalid(v) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorBody::from(v), None),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new("payload_too_large", message),
                None,
            ),
            ApiError::BodyRead(_) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new("bad_body", message),
                None,
            ),
            ApiError::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorBody::new("body_timeout", message),
                None,
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorBody::new("not_found", message),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody::new("method_not_allowed", message),
                None,
            ),
            ApiError::NotWebSocket(_) => (
                StatusCode::UPGRADE_REQUIRED,
                ErrorBody::new("websocket_required", message),
                None,
            ),
            ApiError::Sandbox(S::ImageNotFound { .. }) => (
                StatusCode::NOT_FOUND,
                ErrorBody::new("image_not_found", message),
                None,
            ),
            ApiError::Sandbox(S::Invalid { field, detail }) => {
                let mut b = ErrorBody::new("invalid_field", format!("{field}: {detail}"));
                b.error.field = Some(field.to_owned());
                (StatusCode::UNPROCESSABLE_ENTITY, b, None)
            }
            ApiError::Sandbox(S::Unavailable(ref cause)) => {
                error!(cause = %cause, "Docker engine unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new(
                        "docker_unavailable",
                        "the Docker engine cannot be reached; try again later",
                    ),
                    Some(Duration::from_secs(5)),
                )
            }
            ApiError::Sandbox(ref e @ S::Interrupted { .. }) => {
                warn!(cause = %e, "run interrupted");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new(
                        "sandbox_lost",
                        "the sandbox was stopped from outside before the run finished (the \
                         engine restarted, say); the run may have partly happened",
                    ),
                    Some(Duration::from_secs(1)),
                )
            }
            ApiError::Sandbox(S::AtCapacity { retry_after, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new("at_capacity", message),
                Some(retry_after),
            ),
            ApiError::Sandbox(ref e @ S::Lost { .. }) => {
                warn!(cause = %e, "sandbox lost before the run");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new(
                        "sandbox_lost",
                        "the sandbox was stopped from outside before the run started (the engine \
                         restarted, say); nothing ran: try again",
                    ),
                    Some(Duration::from_secs(1)),
                )
            }
            ApiError::Sandbox(ref e @ (S::Engine { .. } | S::Protocol { .. })) => {
                error!(cause = %e, "run failed");
                internal()
            }
            ApiError::Internal(ref cause) => {
                error!(cause = %cause, "internal error");
                internal()
            }
        };
        (status, body, retry_after)
    }
}

fn internal() -> (StatusCode, ErrorBody, Option<Duration>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorBody::new(
            "internal",
            "the run failed inside the server; the cause is in the server's log",
        ),
        None,
    )
}
