use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Resource limits of one run, every field concrete.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit of the program, from its start.
    pub timeout_ms: u64,
    /// Memory of the whole sandbox (no swap), tmpfs contents included.
    pub memory_mb: u64,
    /// CPU share, in cores.
    pub cpus: f64,
    /// Processes and threads in the sandbox, kiln-init included.
    pub pids: u64,
    /// stdout and stderr together.
    pub output_bytes: u64,
    /// Size of each tmpfs (`/tmp` and the working directory).
    pub tmp_mb: u64,
}

impl Limits {
    /// What a run gets when it names no limit.
    pub const DEFAULT: Limits = Limits {
        timeout_ms: 10_000,
        memory_mb: 256,
        cpus: 1.0,
        pids: 64,
        output_bytes: 1 << 20,
        tmp_mb: 64,
    };

    /// The most a request may ask for unless the server's config says otherwise.
    pub const MAXIMUM: Limits = Limits {
        timeout_ms: 300_000,
        memory_mb: 4096,
        cpus: 2.0,
        pids: 1024,
        output_bytes: 64 << 20,
        tmp_mb: 1024,
    };

    /// The most a server's config may allow.
    pub const MAXIMUM_CONFIGURABLE: Limits = Limits {
        timeout_ms: 24 * 3_600_000,
        memory_mb: 1 << 20,
        cpus: 1024.0,
        pids: 1 << 22,
        output_bytes: 1 << 32,
        tmp_mb: 1 << 20,
    };

    /// Each field of `self` lowered to `max`'s where it is above.
    pub fn clamped(&self, max: &Limits) -> Limits {
        Limits {
            timeout_ms: self.timeout_ms.min(max.timeout_ms),
            memory_mb: self.memory_mb.min(max.memory_mb),
            cpus: self.cpus.min(max.cpus),
            pids: self.pids.min(max.pids),
            output_bytes: self.output_bytes.min(max.output_bytes),
            tmp_mb: self.tmp_mb.min(max.tmp_mb),
        }
    }

    /// The smallest value each limit may take; below these a sandbox cannot start at all.
    pub const MINIMUM: Limits = Limits {
        timeout_ms: 1,
        memory_mb: 8,
        cpus: 0.01,
        pids: 4,
        output_bytes: 0,
        tmp_mb: 1,
    };

    /// Checks that each field lies within `[MINIMUM, max]`; `prefix` names the section in errors.
    pub fn check(&self, max: &Limits, prefix: &str) -> Result<(), ValidationError> {
        let min = Limits::MINIMUM;
        let ints = [
            (
                "timeout_ms",
                self.timeout_ms,
                min.timeout_ms,
                max.timeout_ms,
            ),
            ("memory_mb", self.memory_mb, min.memory_mb, max.memory_mb),
            ("pids", self.pids, min.pids, max.pids),
            (
                "output_bytes",
                self.output_bytes,
                min.output_bytes,
                max.output_bytes,
            ),
            ("tmp_mb", self.tmp_mb, min.tmp_mb, max.tmp_mb),
        ];
        for (name, v, lo, hi) in ints {
            check_one(
                prefix,
                name,
                v as f64,
                lo as f64,
                hi as f64,
                serde_json::json!(hi),
            )?;
        }
        check_one(
            prefix,
            "cpus",
            self.cpus,
            min.cpus,
            max.cpus,
            serde_json::json!(max.cpus),
        )
    }
}

fn check_one(
    prefix: &str,
    name: &str,
    v: f64,
    lo: f64,
    hi: f64,
    hi_json: serde_json::Value,
) -> Result<(), ValidationError> {
    let field = format!("{prefix}{name}");
    if !v.is_finite() || v < lo {
        return Err(ValidationError::invalid(
            field.clone(),
            format!("{field} must be at least {lo}"),
        ));
    }
    if v > hi {
        return Err(ValidationError {
            code: "limit_exceeded",
            message: format!("{field} is {v}, above the server's maximum of {hi}"),
            field,
            maximum: Some(hi_json),
        });
    }
    Ok(())
}

/// Limits as a request gives them: each one optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_mb: Option<u64>,
}

impl LimitsRequest {
    /// Fills what the request left out from `defaults`.
    pub fn resolve(&self, defaults: &Limits) -> Limits {
        Limits {
            timeout_ms: self.timeout_ms.unwrap_or(defaults.timeout_ms),
            memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            cpus: self.cpus.unwrap_or(defaults.cpus),
            pids: self.pids.unwrap_or(defaults.pids),
            output_bytes: self.output_bytes.unwrap_or(defaults.output_bytes),
            tmp_mb: self.tmp_mb.unwrap_or(defaults.tmp_mb),
        }
    }
}

/// What the server allows: the limits' defaults and maxima, and whether runs may have a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub defaults: Limits,
    pub maxima: Limits,
    pub allow_network: bool,
    /// Most files one request may carry.
    pub max_files: usize,
    /// How a request that names no `cache` mode uses the cache.
    pub default_cache: crate::CacheMode,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            defaults: Limits::DEFAULT,
            maxima: Limits::MAXIMUM,
            allow_network: false,
            max_files: 1000,
            default_cache: crate::CacheMode::Off,
        }
    }
}
