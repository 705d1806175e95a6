use std::time::Duration;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tracing::info;

use crate::{Error, Result};

/// Splits a reference into the engine's `fromImage` and `tag`. An empty tag would make the engine
/// pull every tag of the repository, so a reference without one means `latest`.
pub(crate) fn split_reference(reference: &str) -> (&str, &str) {
    if reference.contains('@') {
        return (reference, "");
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Pulls `image`, logging the engine's progress, within `timeout`.
pub(crate) async fn pull(docker: &Docker, image: &str, timeout: Duration) -> Result<()> {
    let (from, tag) = split_reference(image);
    info!(image, "image not present; pulling");
    let opts = CreateImageOptionsBuilder::default()
        .from_image(from)
        .tag(tag)
        .build();
    let progress = async {
        let mut stream = docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::ImageNotFound {
                image: image.to_owned(),
                detail: e.to_string(),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(Error::ImageNotFound {
                    image: image.to_owned(),
                    detail: detail.message.unwrap_or_else(|| "pull failed".into()),
                });
            }
            if let Some(status) = info.status {
                info!(image, status, "pull");
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, progress).await {
        Ok(r) => r,
        Err(_) => Err(Error::ImageNotFound {
            image: image.to_owned(),
            detail: format!("pull did not finish within {} s", timeout.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("kiln/python"), ("kiln/python", "latest"));
        assert_eq!(split_reference("debian:bookworm"), ("debian", "bookworm"));
        assert_eq!(split_reference("reg:5000/a/b"), ("reg:5000/a/b", "latest"));
        assert_eq!(split_reference("reg:5000/a/b:1.2"), ("reg:5000/a/b", "1.2"));
        assert_eq!(split_reference("a@sha256:00"), ("a@sha256:00", ""));
    }
}
