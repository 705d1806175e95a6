//! The bare engine API sequence a user would write without Kiln, for benchmarks to compare
//! against: create → start → wait → remove, with the same image and no network.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{engine_error, DockerBackend};
use crate::Result;

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
    let id = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .map_err(|e| engine_error("create", image, e))?
        .id;
    let run = async {
        docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| engine_error("start", &id, e))?;
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
