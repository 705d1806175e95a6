use std::path::PathBuf;
use std::time::Duration;

use kiln_sandbox::docker::DockerConfig;
use serde::Deserialize;

use super::ConfigError;

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_USER: &str = "65534:65534";
pub const DEFAULT_GATEWAY_ID: &str = "kiln";
pub const DEFAULT_PULL_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_KILL_GRACE_MS: u64 = 2_000;
pub const DEFAULT_CHANNEL_DIR: &str = "/run/kiln";

/// How the gateway talks to kiln-init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A unix socket per sandbox, bind-mounted into it: no engine on the path of a run. Needs
    /// the engine on this host (`docker.host` a `unix://` socket).
    Socket,
    /// The container's stdin and stdout, attached through the engine.
    Attach,
}

/// The Docker engine and how sandboxes are made on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    pub host: String,
    /// The static kiln-init binary on the host; empty means `kiln-init` next to this executable.
    pub init_path: Option<PathBuf>,
    pub user: String,
    /// Labels this gateway's sandboxes; on start the gateway removes those a previous run left.
    pub gateway_id: String,
    pub pull_timeout_ms: u64,
    /// How long past a run's timeout the gateway waits for kiln-init before killing the sandbox.
    pub kill_grace_ms: u64,
    /// `socket` (default where the engine is local) or `attach`.
    pub channel: ChannelKind,
    /// Where channel sockets are made; each gateway uses a directory of its own below it.
    pub channel_dir: PathBuf,
}

impl Default for DockerSection {
    fn default() -> Self {
        DockerSection {
            host: DEFAULT_HOST.into(),
            init_path: None,
            user: DEFAULT_USER.into(),
            gateway_id: DEFAULT_GATEWAY_ID.into(),
            pull_timeout_ms: DEFAULT_PULL_TIMEOUT_MS,
            kill_grace_ms: DEFAULT_KILL_GRACE_MS,
            channel: ChannelKind::Socket,
            channel_dir: PathBuf::from(DEFAULT_CHANNEL_DIR),
        }
    }
}

impl DockerSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let ok = match self.user.split_once(':') {
            Some((u, g)) => numeric(u) && numeric(g) && u.parse::<u32>().is_ok_and(|u| u != 0),
            None => false,
        };
        if !ok {
            return Err(ConfigError::Invalid(
                "docker.user must be a numeric non-root uid:gid such as 65534:65534".into(),
            ));
        }
        if self.gateway_id.is_empty() || self.gateway_id.contains(['=', ',']) {
            return Err(ConfigError::Invalid(
                "docker.gateway_id must be a plain name".into(),
            ));
        }
        Ok(())
    }

    /// Whether the engine is reached over the network (and so cannot share a socket file).
    pub fn is_remote(&self) -> bool {
        self.host.starts_with("tcp://") || self.host.starts_with("http://")
    }

    /// The kiln-init path to bind-mount: absolute, since Docker needs one.
    pub fn resolved_init_path(&self) -> PathBuf {
        let p = self.init_path.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("kiln-init")))
                .unwrap_or_else(|| PathBuf::from("kiln-init"))
        });
        std::fs::canonicalize(&p).unwrap_or(p)
    }

    pub fn to_backend_config(&self) -> DockerConfig {
        DockerConfig {
            host: self.host.clone(),
            init_path: self.resolved_init_path(),
            user: self.user.clone(),
            gateway_id: self.gateway_id.clone(),
            pull_timeout: Duration::from_millis(self.pull_timeout_ms),
            kill_grace: Duration::from_millis(self.kill_grace_ms),
            // A socket on this host is no use to a remote engine: attach there.
            channel_dir: (self.channel == ChannelKind::Socket && !self.is_remote())
                .then(|| self.channel_dir.join(&self.gateway_id)),
            ..DockerConfig::default()
        }
    }
}
