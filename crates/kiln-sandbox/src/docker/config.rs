use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};

use crate::SandboxSpec;

/// Where kiln-init appears inside every sandbox.
pub const INIT_MOUNT: &str = "/.kiln/init";
/// Where the host's channel socket appears inside a sandbox, when the socket channel is used.
pub const CHANNEL_MOUNT: &str = "/.kiln/channel";
/// Marks a container as Kiln's.
pub const LABEL_MANAGED: &str = "dev.kiln.managed";
/// Names the gateway that made a container, so that its next start removes what it left behind.
pub const LABEL_GATEWAY: &str = "dev.kiln.gateway";

const MIB: i64 = 1 << 20;

/// How the Docker backend reaches the engine and builds containers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub host: String,
    /// Path on the host of the static kiln-init binary.
    pub init_path: PathBuf,
    /// Numeric `uid:gid` the sandbox runs as; it also owns the tmpfs mounts.
    pub user: String,
    /// Written into [`LABEL_GATEWAY`]; orphans are removed by this value.
    pub gateway_id: String,
    /// How long pulling a missing image may take before the run is answered with an error.
    pub pull_timeout: Duration,
    /// Timeout of each engine API call.
    pub api_timeout: Duration,
    /// How long past a job's own timeout the host waits for the exit frame before it kills the
    /// container itself.
    pub kill_grace: Duration,
    /// With a directory, the job travels over a unix socket made there and bind-mounted into
    /// the sandbox, straight between the gateway and kiln-init; without, over the container's
    /// attached stdin and stdout, through the engine. The socket needs the engine on this host.
    pub channel_dir: Option<PathBuf>,
    /// Have kiln-init mark every process of a run mergeable by KSM (`PR_SET_MEMORY_MERGE`).
    pub ksm: bool,
    /// Whether runs may get transparent huge pages (else kiln-init sets `PR_SET_THP_DISABLE`),
    /// for images not in `thp_by_image`.
    pub thp: bool,
    /// The same choice for particular images (from the pools' configuration).
    pub thp_by_image: HashMap<String, bool>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".into(),
            init_path: PathBuf::from("kiln-init"),
            user: "65534:65534".into(),
            gateway_id: "kiln".into(),
            pull_timeout: Duration::from_secs(60),
            api_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(2),
            channel_dir: None,
            ksm: false,
            thp: true,
            thp_by_image: HashMap::new(),
        }
    }
}

/// The container for `spec`: kiln-init as entrypoint with stdin open, and the security defaults:
/// no network unless asked for, read-only root with size-limited tmpfs for `/tmp` and the working
/// directory, every capability dropped, `no-new-privileges`, a non-root user, pids, memory (no
/// swap) and CPU limits. Docker's default seccomp profile stays in force: nothing here relaxes it.
///
/// `channel` is the host path of the sandbox's channel socket, or `None` to talk over the
/// attached stdin and stdout.
pub fn container_body(
    config: &DockerConfig,
    spec: &SandboxSpec,
    channel: Option<&std::path::Path>,
) -> ContainerCreateBody {
    let limits = &spec.limits;
    // The tmpfs roots belong to the sandbox's user: Docker copies an image's directory (and
    // the one it makes for WorkingDir) onto the tmpfs with its mode, so `mode=` alone would
    // leave a root-owned 0755 /workspace that the job cannot write. `exec`: programs compiled
    // in the working directory must run.
    let (uid, gid) = config
        .user
        .split_once(':')
        .unwrap_or((&config.user, &config.user));
    let tmpfs_opts = format!(
        "rw,exec,nosuid,nodev,size={}m,uid={uid},gid={gid},mode=1777",
        limits.tmp_mb
    );
    let mut tmpfs = HashMap::new();
    tmpfs.insert("/tmp".to_owned(), tmpfs_opts.clone());
    tmpfs.insert(spec.workdir.clone(), tmpfs_opts);
    let memory = i64::try_from(limits.memory_mb).unwrap_or(i64::MAX / MIB) * MIB;
    let mut labels = HashMap::new();
    labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
    labels.insert(LABEL_GATEWAY.to_owned(), config.gateway_id.clone());
    let mut binds = vec![format!("{}:{INIT_MOUNT}:ro", config.init_path.display())];
    // Read-only is no obstacle to connecting: the kernel checks it for files, not sockets.
    let attach = channel.is_none();
    let mut cmd = match channel {
        Some(path) => {
            binds.push(format!("{}:{CHANNEL_MOUNT}:ro", path.display()));
            vec!["--channel".to_owned(), CHANNEL_MOUNT.to_owned()]
        }
        None => Vec::new(),
    };
    if config.ksm {
        cmd.push("--ksm".to_owned());
    }
    if !config
        .thp_by_image
        .get(&spec.image)
        .copied()
        .unwrap_or(config.thp)
    {
        cmd.push("--no-thp".to_owned());
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec![INIT_MOUNT.to_owned()]),
        cmd: Some(cmd),
        env: Some(vec![format!("HOME={}", spec.workdir)]),
        working_dir: Some(spec.workdir.clone()),
        user: Some(config.user.clone()),
        labels: Some(labels),
        attach_stdin: Some(attach),
        attach_stdout: Some(attach),
        attach_stderr: Some(attach),
        open_stdin: Some(attach),
        stdin_once: Some(attach),
        tty: Some(false),
        network_disabled: Some(!spec.network),
        host_config: Some(HostConfig {
            binds: Some(binds),
            network_mode: Some(if spec.network { "bridge" } else { "none" }.to_owned()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((limits.cpus * 1e9) as i64),
            pids_limit: Some(i64::try_from(limits.pids).unwrap_or(i64::MAX)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::Limits;

    #[test]
    fn body_carries_every_security_default() {
        let spec = SandboxSpec {
            image: "kiln/busybox".into(),
            workdir: "/workspace".into(),
            limits: Limits::DEFAULT,
            network: false,
        };
        let body = container_body(&DockerConfig::default(), &spec, None);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(hc.memory, Some(256 * MIB));
        assert_eq!(
            hc.memory_swap, hc.memory,
            "no swap: swap limit equals memory"
        );
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(64));
        let tmpfs = hc.tmpfs.unwrap();
        for dir in ["/workspace", "/tmp"] {
            assert!(tmpfs[dir].contains("size=64m"), "{dir}: {}", tmpfs[dir]);
            assert!(
                tmpfs[dir].contains("uid=65534,gid=65534"),
                "{dir}: {}",
                tmpfs[dir]
            );
        }
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.entrypoint, Some(vec![INIT_MOUNT.to_owned()]));
        assert!(hc.binds.unwrap()[0].ends_with(":/.kiln/init:ro"));
        assert_eq!(body.labels.unwrap()[LABEL_MANAGED], "true");
        assert_eq!(body.open_stdin, Some(true));

        let sock = std::path::Path::new("/run/kiln/x.sock");
        let body = container_body(&DockerConfig::default(), &spec, Some(sock));
        assert_eq!(
            body.cmd,
            Some(vec!["--channel".to_owned(), CHANNEL_MOUNT.to_owned()])
        );
        assert!(body
            .host_config
            .unwrap()
            .binds
            .unwrap()
            .contains(&"/run/kiln/x.sock:/.kiln/channel:ro".to_owned()));
        assert_eq!(body.open_stdin, Some(false));
    }

    #[test]
    fn ksm_and_thp_flags_follow_the_config_and_the_image() {
        let spec = |image: &str| SandboxSpec {
            image: image.into(),
            workdir: "/workspace".into(),
            limits: Limits::DEFAULT,
            network: false,
        };
        let mut config = DockerConfig {
            ksm: true,
            thp: false,
            ..DockerConfig::default()
        };
        config.thp_by_image.insert("kiln/python".into(), true);
        let cmd =
            |image: &str, c: &DockerConfig| container_body(c, &spec(image), None).cmd.unwrap();
        assert_eq!(cmd("kiln/busybox", &config), ["--ksm", "--no-thp"]);
        assert_eq!(cmd("kiln/python", &config), ["--ksm"]);
        config.ksm = false;
        config.thp = true;
        config.thp_by_image.insert("kiln/python".into(), false);
        assert!(cmd("kiln/busybox", &config).is_empty());
        assert_eq!(cmd("kiln/python", &config), ["--no-thp"]);
    }
}
