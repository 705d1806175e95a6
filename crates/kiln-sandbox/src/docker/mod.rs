//! The Docker backend, through bollard.
//!
//! Every container runs kiln-init as its entrypoint (the host binary bind-mounted read-only at
//! [`INIT_MOUNT`]) with stdin attached before it starts. See [`container_body`] for the security
//! defaults every sandbox gets.

pub mod baseline;
mod config;
mod image;
mod sandbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use tracing::{info, info_span, warn, Instrument};

pub use config::{
    container_body, DockerConfig, CHANNEL_MOUNT, INIT_MOUNT, LABEL_GATEWAY, LABEL_MANAGED,
};
pub use sandbox::DockerSandbox;

use crate::{Backend, Error, Result, Sandbox, SandboxSpec};

/// The engine API version spoken when the daemon cannot be asked (Debian bookworm's docker.io).
const FALLBACK_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// A Docker engine reached through its API socket.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    /// Made on first use, so that a gateway starts while the engine (or its socket) is not
    /// there yet and answers [`Error::Unavailable`] until it is.
    docker: Arc<tokio::sync::OnceCell<Docker>>,
    config: Arc<DockerConfig>,
    /// Background removals in flight, shared with every sandbox's guard.
    removals: Arc<sandbox::RemovalStats>,
}

impl DockerBackend {
    /// A backend for the engine at `config.host` (`unix://…` or `tcp://…`). Tries to connect
    /// at once; an engine that is down is not an error here.
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        if let Some(dir) = &config.channel_dir {
            prepare_channel_dir(dir)?;
        }
        let backend = DockerBackend {
            docker: Arc::new(tokio::sync::OnceCell::new()),
            config: Arc::new(config),
            removals: Arc::default(),
        };
        if let Err(e) = backend.client().await {
            warn!(error = %e, "Docker engine not reachable yet");
        }
        Ok(backend)
    }

    /// The bollard client, connected and with an agreed API version.
    pub async fn client(&self) -> Result<&Docker> {
        self.docker.get_or_try_init(|| connect(&self.config)).await
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }
}

/// Makes the directory for channel sockets and clears sockets a previous gateway left there.
fn prepare_channel_dir(dir: &std::path::Path) -> Result<()> {
    let err = |e: std::io::Error| Error::Engine {
        op: "prepare channel directory",
        id: dir.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    for entry in std::fs::read_dir(dir).map_err(err)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "sock") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

async fn connect(config: &DockerConfig) -> Result<Docker> {
    let timeout = config.api_timeout.as_secs().max(1);
    let host = config.host.as_str();
    let docker = if let Some(addr) = host.strip_prefix("tcp://").or(host.strip_prefix("http://")) {
        Docker::connect_with_http(addr, timeout, &FALLBACK_API)
    } else {
        Docker::connect_with_unix(host, timeout, &FALLBACK_API)
    }
    .map_err(|e| Error::Unavailable(format!("cannot use Docker host {host}: {e}")))?;
    match tokio::time::timeout(Duration::from_secs(3), docker.negotiate_version()).await {
        Ok(Ok(d)) => {
            info!(host, api = %d.client_version(), "connected to the Docker engine");
            Ok(d)
        }
        Ok(Err(e)) => Err(Error::Unavailable(format!("Docker at {host}: {e}"))),
        Err(_) => Err(Error::Unavailable(format!(
            "Docker at {host} did not answer"
        ))),
    }
}

/// Starts a created container.
pub(crate) async fn start(docker: &Docker, id: &str) -> Result<()> {
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|e| engine_error("start", id, e))
}

/// Maps a bollard error to ours: transport failures mean the engine is unavailable.
pub(crate) fn engine_error(op: &'static str, id: &str, e: bollard::errors::Error) -> Error {
    use bollard::errors::Error as B;
    match e {
        B::DockerResponseServerError {
            status_code,
            message,
        } => Error::Engine {
            op,
            id: id.to_owned(),
            detail: format!("{status_code}: {message}"),
        },
        B::JsonDataError { .. } | B::JsonSerdeError { .. } | B::DockerStreamError { .. } => {
            Error::Engine {
                op,
                id: id.to_owned(),
                detail: e.to_string(),
            }
        }
        other => Error::Unavailable(format!("{op}: {other}")),
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn ping(&self) -> Result<()> {
        self.client()
            .await?
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.client().await?.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(engine_error("inspect image", image, e)),
        }
    }

    async fn has_image(&self, image: &str) -> Result<bool> {
        match self.client().await?.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(engine_error("inspect image", image, e)),
        }
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>> {
        let t0 = Instant::now();
        let docker = self.client().await?;
        // The socket exists before the container does: kiln-init connects as it starts.
        let socket = match &self.config.channel_dir {
            Some(dir) => Some(ChannelSocket::bind(dir, &self.config.user)?),
            None => None,
        };
        let body = container_body(
            &self.config,
            spec,
            socket.as_ref().map(|s| s.path.as_path()),
        );
        let create = |body| {
            let opts = CreateContainerOptionsBuilder::default().build();
            docker.create_container(Some(opts), body)
        };
        let created = match create(body.clone()).await {
            Ok(c) => c,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                image::pull(docker, &spec.image, self.config.pull_timeout).await?;
                create(body)
                    .await
                    .map_err(|e| engine_error("create", &spec.image, e))?
            }
            // The engine answers 400 for a reference it cannot parse; other 400s (a CPU limit
            // above the host's cores, say) are the server's configuration, not the request's.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400,
                message,
            }) if message.contains("reference") || message.contains("repository") => {
                return Err(Error::Invalid {
                    field: "image",
                    detail: message,
                })
            }
            Err(e) => return Err(engine_error("create", &spec.image, e)),
        };
        let id = created.id;
        let span = info_span!("sandbox", id = %short(&id), backend = "docker");
        // From here on the container exists: the guard removes it whatever happens next.
        let guard = sandbox::RemoveGuard::new(
            docker.clone(),
            id.clone(),
            span.clone(),
            self.removals.clone(),
        );
        async {
            info!(image = %spec.image, create_ms = ms(t0), "created");
            let attached = match socket {
                Some(_) => None,
                None => {
                    let opts = AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build();
                    Some(
                        docker
                            .attach_container(&id, Some(opts))
                            .await
                            .map_err(|e| engine_error("attach", &id, e))?,
                    )
                }
            };
            info!("starting");
            start(docker, &id).await?;
            let channel = match (socket, attached) {
                (Some(socket), _) => {
                    sandbox::Channel::socket(socket.accept(docker, &id, CONNECT_TIMEOUT).await?)
                }
                (None, Some(a)) => sandbox::Channel::attach(a.output, a.input),
                (None, None) => unreachable!("attached when there is no socket"),
            };
            // The image the container really runs: a tag may have moved since it was resolved
            // elsewhere (the result cache stores an answer only under the id that produced it).
            let image_id = docker
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .ok()
                .and_then(|c| c.image);
            info!(launch_ms = ms(t0), "started");
            Ok(Box::new(DockerSandbox::new(
                guard,
                channel,
                self.config.clone(),
                image_id,
            )) as Box<dyn Sandbox>)
        }
        .instrument(span)
        .await
    }

    fn pending_removals(&self) -> usize {
        self.removals
            .pending
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn removals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.removals.done.load(Relaxed),
            self.removals.failed.load(Relaxed),
        )
    }

    async fn remove_orphans(&self) -> Result<usize> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_GATEWAY}={}", self.config.gateway_id),
            ],
        );
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let docker = self.client().await?;
        let found = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_error("list", "orphans", e))?;
        let mut removed = 0;
        for c in found {
            let Some(id) = c.id else { continue };
            let opts = RemoveContainerOptionsBuilder::default().force(true).build();
            match docker.remove_container(&id, Some(opts)).await {
                Ok(()) => removed += 1,
                Err(e) => warn!(id = %short(&id), error = %e, "cannot remove orphaned sandbox"),
            }
        }
        if removed > 0 {
            info!(
                removed,
                "removed sandboxes left behind by a previous gateway"
            );
        }
        Ok(removed)
    }
}

/// How long a started sandbox's kiln-init may take to connect to its channel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A sandbox's channel socket on the host, listening until kiln-init connects; the file is
/// removed when this is dropped, so that nothing else can connect later.
struct ChannelSocket {
    path: std::path::PathBuf,
    listener: tokio::net::UnixListener,
}

impl ChannelSocket {
    fn bind(dir: &std::path::Path, user: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let io = |op: &'static str, e: std::io::Error| Error::Engine {
            op,
            id: dir.display().to_string(),
            detail: e.to_string(),
        };
        let path = dir.join(format!(
            "{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).map_err(|e| io("bind channel", e))?;
        let socket = ChannelSocket { path, listener };
        // Only the sandbox's user may connect (connecting needs write permission).
        let (uid, gid) = user.split_once(':').unwrap_or((user, user));
        std::os::unix::fs::chown(&socket.path, uid.parse().ok(), gid.parse().ok())
            .map_err(|e| io("chown channel", e))?;
        Ok(socket)
    }

    /// Waits for kiln-init to connect; a container that exits first (kiln-init could not
    /// start, say) ends the wait at once.
    async fn accept(
        self,
        docker: &Docker,
        id: &str,
        timeout: Duration,
    ) -> Result<tokio::net::UnixStream> {
        use bollard::query_parameters::WaitContainerOptionsBuilder;
        use futures_util::StreamExt;
        // What the container's end says: killed by a signal (the engine stopping it, say) or
        // the wait broken (the engine went away), rather than kiln-init failing by itself.
        let exited = async {
            let opts = WaitContainerOptionsBuilder::default().build();
            let mut wait = docker.wait_container(id, Some(opts));
            match wait.next().await {
                Some(Ok(w)) => matches!(w.status_code, 137 | 143),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    matches!(code, 137 | 143)
                }
                Some(Err(_)) | None => true,
            }
        };
        // Only the sandbox's own kiln-init may have the channel: anything else on the host that
        // runs as the sandbox's user could connect first and would otherwise get the job.
        let from_the_sandbox = async {
            loop {
                let (stream, _) = self.listener.accept().await?;
                if peer_in_container(&stream, id) {
                    return Ok::<_, std::io::Error>(stream);
                }
                warn!(id = %short(id), "refused a channel connection from outside the sandbox");
            }
        };
        tokio::select! {
            accepted = tokio::time::timeout(timeout, from_the_sandbox) => match accepted {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(Error::Engine {
                    op: "accept channel",
                    id: id.to_owned(),
                    detail: e.to_string(),
                }),
                Err(_) => Err(Error::Lost {
                    id: id.to_owned(),
                    detail: format!("kiln-init did not connect within {} s", timeout.as_secs()),
                }),
            },
            killed = exited => if killed {
                // Nothing of the job reached it: running it in another sandbox is safe.
                Err(Error::Lost {
                    id: id.to_owned(),
                    detail: "the sandbox was stopped from outside before kiln-init connected".into(),
                })
            } else {
                Err(Error::Protocol {
                    id: id.to_owned(),
                    detail: "the sandbox exited before kiln-init connected; see `docker logs`".into(),
                })
            },
        }
    }
}

/// Whether the process at the other end of `stream` lives in container `id`'s cgroup.
fn peer_in_container(stream: &tokio::net::UnixStream, id: &str) -> bool {
    let Some(pid) = stream.peer_cred().ok().and_then(|c| c.pid()) else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
}

impl Drop for ChannelSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The 12-character form of a container id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn ms(t0: Instant) -> f64 {
    (t0.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
