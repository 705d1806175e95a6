use kiln_api::{Limits, LimitsRequest, Policy};
use serde::Deserialize;

use super::ConfigError;

pub const DEFAULT_MAX_FILES: usize = 1000;

/// Defaults for what a request leaves out (`[limits.default]`), and the most a request may ask
/// for (`[limits.max]`). A key left out falls back to [`Limits::DEFAULT`] and [`Limits::MAXIMUM`];
/// a default left out is also lowered to the configured maximum.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub default: LimitsRequest,
    pub max: LimitsRequest,
    pub max_files: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            default: LimitsRequest::default(),
            max: LimitsRequest::default(),
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl LimitsSection {
    pub fn maxima(&self) -> Limits {
        self.max.resolve(&Limits::MAXIMUM)
    }

    pub fn defaults(&self) -> Limits {
        self.default
            .resolve(&Limits::DEFAULT.clamped(&self.maxima()))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.maxima()
            .check(&Limits::MAXIMUM_CONFIGURABLE, "limits.max.")
            .map_err(|e| ConfigError::Invalid(e.message))?;
        self.defaults()
            .check(&self.maxima(), "limits.default.")
            .map_err(|e| {
                ConfigError::Invalid(format!(
                    "{} (defaults must lie within limits.max)",
                    e.message
                ))
            })
    }
}

/// Whether runs may ask for a network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    pub allow: bool,
}

impl super::Config {
    /// The policy requests are validated against.
    pub fn policy(&self) -> Policy {
        Policy {
            defaults: self.limits.defaults(),
            maxima: self.limits.maxima(),
            allow_network: self.network.allow,
            max_files: self.limits.max_files,
            default_cache: self.cache.default_mode,
        }
    }
}
