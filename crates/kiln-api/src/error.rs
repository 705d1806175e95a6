use serde::{Deserialize, Serialize};

/// The body of every error answer: `{"error": {"code", "message", ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `code` is stable and meant for programs; `message` is for people and may change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// The request field at fault, as a dotted path (`limits.memory_mb`, `files[2].path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a limit above the server's maximum: that maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<serde_json::Value>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
                maximum: None,
            },
        }
    }
}

/// A request that is well-formed JSON but not acceptable; answered with 422.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    /// `invalid_field`, `missing_field`, `limit_exceeded` or `network_not_allowed`.
    pub code: &'static str,
    pub field: String,
    pub message: String,
    pub maximum: Option<serde_json::Value>,
}

impl ValidationError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            code: "invalid_field",
            field: field.into(),
            message: message.into(),
            maximum: None,
        }
    }

    pub(crate) fn missing(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            code: "missing_field",
            ..Self::invalid(field, message)
        }
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

impl From<ValidationError> for ErrorBody {
    fn from(e: ValidationError) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: e.code.to_owned(),
                message: e.message,
                field: Some(e.field),
                maximum: e.maximum,
            },
        }
    }
}
