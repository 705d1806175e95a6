use crate::SandboxSpec;

/// What makes two sandboxes interchangeable: the image, the working directory, the limits that
/// apply to the container (memory, CPU, pids, tmpfs size) and the network. The job's own limits
/// (timeout, output) travel in the job frame and are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub image: String,
    pub workdir: String,
    pub memory_mb: u64,
    /// CPUs in thousandths, so that the key can be hashed.
    pub millicpus: u64,
    pub pids: u64,
    pub tmp_mb: u64,
    pub network: bool,
}

impl PoolKey {
    pub fn of(spec: &SandboxSpec) -> PoolKey {
        PoolKey {
            image: spec.image.clone(),
            workdir: spec.workdir.clone(),
            memory_mb: spec.limits.memory_mb,
            millicpus: (spec.limits.cpus * 1000.0).round() as u64,
            pids: spec.limits.pids,
            tmp_mb: spec.limits.tmp_mb,
            network: spec.network,
        }
    }

    /// A readable name for logs and metrics.
    pub fn name(&self) -> String {
        format!(
            "{} mem={}m cpus={} pids={} tmp={}m workdir={}{}",
            self.image,
            self.memory_mb,
            self.millicpus as f64 / 1000.0,
            self.pids,
            self.tmp_mb,
            self.workdir,
            if self.network { " net" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use kiln_api::Limits;

    use super::*;

    #[test]
    fn job_limits_are_not_part_of_the_key() {
        let spec = SandboxSpec {
            image: "kiln/busybox".into(),
            workdir: "/workspace".into(),
            limits: Limits::DEFAULT,
            network: false,
        };
        let mut other = spec.clone();
        other.limits.timeout_ms += 1;
        other.limits.output_bytes += 1;
        assert_eq!(PoolKey::of(&spec), PoolKey::of(&other));
        other.limits.memory_mb += 1;
        assert_ne!(PoolKey::of(&spec), PoolKey::of(&other));
        let mut net = spec.clone();
        net.network = true;
        assert_ne!(PoolKey::of(&spec), PoolKey::of(&net));
        assert_eq!(
            PoolKey::of(&spec).name(),
            "kiln/busybox mem=256m cpus=1 pids=64 tmp=64m workdir=/workspace"
        );
    }
}
