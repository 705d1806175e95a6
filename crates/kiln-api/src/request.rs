use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::LimitsRequest;

/// `POST /api/v1/execute`. Every field is optional at the serde level so that validation, not the
/// decoder, names what is missing; unknown fields are refused so that a typo never goes unseen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"image": "kiln/busybox", "command": "echo hello", "stdin": "", "limits": {"timeout_ms": 5000}}))]
pub struct ExecuteRequest {
    /// A Docker image reference; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A command line run by `/bin/sh -c`. Exactly one of `command` and `argv` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// An exact argv; `argv[0]` is looked up in the image's `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileSpec>>,
    /// Absolute path of the working directory (a fresh tmpfs); default `/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    /// Whether to read (`use`) or only write (`refresh`) the result cache; the server's default
    /// when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheMode>,
    /// A runtime of the catalog by name or alias (`python`, `c++`), instead of `image` and
    /// `command`/`argv`: the catalog supplies the image and the commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// A version selector for `language`: exact, `*`, or `3.x`; the highest match by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The program's source, written to the runtime's source file (else the first of `files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Arguments after the runtime's run command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Time limit of the runtime's compile step; the runtime's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_timeout_ms: Option<u64>,
}

/// How a run uses the result cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Neither read nor write.
    #[default]
    Off,
    /// Answer from the cache when it holds the result; store a new `ok` result.
    Use,
    /// Run anyway and store the new `ok` result.
    Refresh,
}

/// A file written under the working directory before the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Relative to the working directory; absolute paths and `..` are refused.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits, as a number (`493`) or an octal string (`"0755"`); default `0644`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum FileMode {
    Number(u32),
    Octal(String),
}
