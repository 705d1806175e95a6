use serde::Deserialize;

use super::ConfigError;
use crate::http::KeySpec;

/// API keys. None listed: no authentication (keep the port private). Each key is stored as
/// its SHA-256 (`kiln hash-key`), never in clear.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    #[serde(default = "default_rate")]
    pub rate_per_sec: f64,
    #[serde(default = "default_burst")]
    pub burst: f64,
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    #[serde(default)]
    pub admin: bool,
}

fn default_rate() -> f64 {
    10.0
}
fn default_burst() -> f64 {
    20.0
}
fn default_concurrent() -> usize {
    8
}

impl AuthSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, k) in self.keys.iter().enumerate() {
            let ok = k.sha256.len() == 64 && k.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "auth.keys[{i}].sha256 must be 64 hex digits (kiln hash-key prints it)"
                )));
            }
            if !(k.rate_per_sec > 0.0 && k.burst >= 1.0 && k.max_concurrent >= 1) {
                return Err(ConfigError::Invalid(format!(
                    "auth.keys[{i}]: rate_per_sec > 0, burst >= 1 and max_concurrent >= 1"
                )));
            }
        }
        Ok(())
    }

    pub fn specs(&self) -> Vec<KeySpec> {
        self.keys
            .iter()
            .map(|k| KeySpec {
                name: k.name.clone(),
                sha256: k.sha256.to_ascii_lowercase(),
                rate_per_sec: k.rate_per_sec,
                burst: k.burst,
                max_concurrent: k.max_concurrent,
                admin: k.admin,
            })
            .collect()
    }
}
