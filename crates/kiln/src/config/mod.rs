//! Server configuration: one TOML file, then the environment, then flags.
//!
//! Every section has named defaults and validates itself. Any key can be overridden without a
//! file: `KILN__LIMITS__MAX__MEMORY_MB=1024` in the environment or `--set limits.max.memory_mb=1024`
//! on the command line; the common ones also have their own flags (`kiln serve --help`).

mod auth;
mod cache;
mod docker;
mod limits;
mod memory;
mod pool;
mod runtimes;
mod server;

use std::path::Path;

use serde::Deserialize;

pub use auth::{AuthSection, KeyEntry};
pub use cache::CacheSection;
pub use docker::{ChannelKind, DockerSection};
pub use limits::{LimitsSection, NetworkSection};
pub use memory::{HostPolicy, MemorySection, SandboxThp, Switch, ThpHost};
pub use pool::{PoolEntry, PoolSection};
pub use runtimes::RuntimesSection;
pub use server::ServerSection;

/// The whole configuration of `kiln serve`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub docker: DockerSection,
    pub limits: LimitsSection,
    pub network: NetworkSection,
    pub images: ImagesSection,
    pub pool: PoolSection,
    pub cache: CacheSection,
    pub memory: MemorySection,
    pub runtimes: RuntimesSection,
    pub auth: AuthSection,
    pub judge0: Judge0Section,
}

/// The Judge0 API: where submissions are kept ("" or unset: in memory only), and whether a
/// submission may name a `callback_url` the gateway PUTs its result to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Judge0Section {
    pub store_path: Option<std::path::PathBuf>,
    pub callbacks: bool,
}

impl Default for Judge0Section {
    fn default() -> Self {
        Judge0Section {
            store_path: Some("/var/lib/kiln/judge0.redb".into()),
            callbacks: true,
        }
    }
}

/// Images the gateway expects to be present; `/ready` reports each.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    pub required: Vec<String>,
}

impl Default for ImagesSection {
    fn default() -> Self {
        ImagesSection {
            required: vec!["kiln/busybox".into()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Parse(String),
    #[error("config override {0:?} is not of the form section.key=value")]
    Override(String),
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `file` (if any), then applies `KILN__A__B=v` variables from `env`, then `overrides`
    /// (`a.b=v`), then validates every section.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut tree = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        for (k, v) in env {
            if let Some(path) = k.strip_prefix("KILN__") {
                let path = path.to_ascii_lowercase().replace("__", ".");
                set(&mut tree, &path, &v)?;
            }
        }
        for o in overrides {
            let (path, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::Override(o.clone()))?;
            set(&mut tree, path.trim(), v.trim())?;
        }
        let config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.docker.validate()?;
        self.limits.validate()?;
        self.cache.validate()?;
        self.memory.validate()?;
        self.pool_config()?;
        self.thp_by_image()?;
        self.runtimes.catalog()?;
        self.auth.validate()?;
        Ok(())
    }

    /// The Docker backend's configuration; `ksm`: kiln-init marks runs mergeable.
    pub fn backend_config(
        &self,
        ksm: bool,
    ) -> Result<kiln_sandbox::docker::DockerConfig, ConfigError> {
        Ok(kiln_sandbox::docker::DockerConfig {
            ksm,
            thp: self.memory.sandbox_thp == SandboxThp::Allow,
            thp_by_image: self.thp_by_image()?,
            ..self.docker.to_backend_config()
        })
    }

    /// The pools' own huge-page choices, by image: one image, one choice.
    fn thp_by_image(&self) -> Result<std::collections::HashMap<String, bool>, ConfigError> {
        let mut map = std::collections::HashMap::new();
        for (i, e) in self.pool.pools.iter().enumerate() {
            let Some(thp) = e.thp else { continue };
            let allow = thp == SandboxThp::Allow;
            if map
                .insert(e.image.clone(), allow)
                .is_some_and(|had| had != allow)
            {
                return Err(ConfigError::Invalid(format!(
                    "pool.pools[{i}].thp: another pool of {} chose otherwise; huge pages are \
                     chosen per image",
                    e.image
                )));
            }
        }
        Ok(map)
    }

    /// The warm pool's configuration, `None` when pooling is off.
    pub fn pool_config(&self) -> Result<Option<kiln_sandbox::pool::PoolConfig>, ConfigError> {
        self.pool
            .to_pool_config(&self.limits.defaults(), &self.limits.maxima())
    }
}

/// Sets `path` (dotted) in `tree` to `raw`, read as a TOML value where it parses as one (numbers,
/// booleans, arrays) and as a string otherwise.
fn set(tree: &mut toml::Table, path: &str, raw: &str) -> Result<(), ConfigError> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.len() < 2 || keys.iter().any(|k| k.is_empty()) {
        return Err(ConfigError::Override(format!("{path}={raw}")));
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut node = tree;
    for k in &keys[..keys.len() - 1] {
        node = node
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Override(format!("{path}={raw}")))?;
    }
    node.insert(keys[keys.len() - 1].to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
