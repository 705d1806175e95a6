//! The bare engine API sequence a user would write without Kiln, for benchmarks to compare
//! against: create → start → wait → remove, with the same image and no network.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{engine_error, start, DockerBackend};
use crate::Result;

/// Creates a plain container running `argv` with no network, as `docker run --network none` would.
async fn create(
    backend: &DockerBackend,
    image: &str,
    argv: &[&str],
    network_disabled: bool,
) -> Result<String> {
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
        network_disabled: Some(network_disabled),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(backend
        .client()
        .await?
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .map_err(|e| engine_error("create", image, e))?
        .id)
}

/// Runs `argv` in a new container through the bare API and returns its exit code.
/// `network_disabled` also sets the container's `NetworkDisabled`, as Kiln does, which spares the
/// engine the network sandbox that `--network none` still builds.
pub async fn create_start_wait_remove(
    backend: &DockerBackend,
    image: &str,
    argv: &[&str],
    network_disabled: bool,
) -> Result<i64> {
    let docker = backend.client().await?;
    let id = create(backend, image, argv, network_disabled).await?;
    let run = async {
        start(docker, &id).await?;
        let mut wait =
            docker.wait_container(&id, Some(WaitContainerOptionsBuilder::default().build()));
        let mut code = 0;
        while let Some(r) = wait.next().await {
            match r {
                Ok(w) => code = w.status_code,
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                Err(e) => return Err(engine_error("wait", &id, e)),
            }
        }
        Ok(code)
    }
    .await;
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&id, Some(opts))
        .await
        .map_err(|e| engine_error("remove", &id, e))?;
    run
}

/// A long-running container for the `docker exec` baseline: the usual "warm" approach of
/// running each command in one container that stays up.
pub async fn start_exec_target(backend: &DockerBackend, image: &str) -> Result<String> {
    let docker = backend.client().await?;
    let id = create(backend, image, &["sleep", "3600"], false).await?;
    start(docker, &id).await?;
    Ok(id)
}

/// `docker exec` through the API: create the exec, start it attached, read its output, and ask
/// for its exit code. Returns the exit code and stdout.
pub async fn exec(backend: &DockerBackend, id: &str, argv: &[&str]) -> Result<(i64, Vec<u8>)> {
    use bollard::exec::StartExecResults;
    use bollard::models::ExecConfig;
    let docker = backend.client().await?;
    let exec = docker
        .create_exec(
            id,
            ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| engine_error("create exec", id, e))?;
    let mut stdout = Vec::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| engine_error("start exec", id, e))?
    {
        while let Some(item) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } =
                item.map_err(|e| engine_error("exec output", id, e))?
            {
                stdout.extend_from_slice(&message);
            }
        }
    }
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| engine_error("inspect exec", id, e))?
        .exit_code
        .unwrap_or(-1);
    Ok((code, stdout))
}

/// Removes a container made by [`start_exec_target`].
pub async fn remove(backend: &DockerBackend, id: &str) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    backend
        .client()
        .await?
        .remove_container(id, Some(opts))
        .await
        .map_err(|e| engine_error("remove", id, e))
}

/// What an attached container writes, as the engine multiplexes it.
pub type AttachOutput = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

/// A container attached as `docker run -i` attaches: its stdin written, its stdout read, for
/// the interactive baseline. Remove it with [`remove`].
pub struct Attached {
    pub id: String,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pub output: AttachOutput,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached").field("id", &self.id).finish()
    }
}

/// Starts `argv` in a plain container with its stdin open and attached.
pub async fn start_attached(
    backend: &DockerBackend,
    image: &str,
    argv: &[&str],
) -> Result<Attached> {
    use bollard::query_parameters::AttachContainerOptionsBuilder;
    let docker = backend.client().await?;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
        network_disabled: Some(true),
        open_stdin: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .map_err(|e| engine_error("create", image, e))?
        .id;
    let opts = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stream(true)
        .build();
    let attached = docker
        .attach_container(&id, Some(opts))
        .await
        .map_err(|e| engine_error("attach", &id, e))?;
    start(docker, &id).await?;
    Ok(Attached {
        id,
        input: attached.input,
        output: attached.output,
    })
}
