use serde::{Deserialize, Serialize};

/// The answer of a run that took place, whatever its exit code (HTTP 200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecuteResponse {
    /// stdout as text. Bytes that are not UTF-8 are replaced by U+FFFD here, and the exact bytes
    /// are in `stdout_base64`, flagged by `invalid_utf8.stdout`.
    pub stdout: String,
    pub stderr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    /// `None` when the program was killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, e.g. `"SIGKILL"`.
    pub signal: Option<String>,
    pub status: RunStatus,
    /// From the request's arrival to the answer, in milliseconds.
    pub duration_ms: f64,
    pub timings: Timings,
    pub truncated: Truncated,
    pub invalid_utf8: InvalidUtf8,
    pub sandbox: SandboxInfo,
    pub usage: Usage,
    #[serde(default)]
    pub cache: CacheInfo,
    /// The catalog's runtime, when the request named a `language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeInfo>,
    /// The runtime's compile step, when it has one; the top-level fields are the run's. A
    /// compile that fails skips the run: `status` is then `compile_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<StageResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuntimeInfo {
    pub language: String,
    pub version: String,
}

/// What one step (the compile) printed and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// `ok`, `timeout`, `oom`, `output_limit` or `signal`, as for a run.
    pub status: RunStatus,
    pub duration_ms: f64,
    pub usage: Usage,
}

/// Where the answer came from: `tier` is `l1`, `l2` or `l3` for a cached answer and `null` for
/// a run; `key` is the run's cache key when caching was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CacheInfo {
    pub tier: Option<String>,
    pub key: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The program ended by itself.
    Ok,
    /// The wall-clock limit passed and the run was killed.
    Timeout,
    /// The memory limit was hit and the kernel killed a process of the run.
    Oom,
    /// stdout and stderr together passed the output limit and the run was killed.
    OutputLimit,
    /// A signal that none of the above explains ended the program.
    Signal,
    /// The runtime's compile step failed; the program did not run (see `compile`).
    CompileError,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Timeout => "timeout",
            RunStatus::Oom => "oom",
            RunStatus::OutputLimit => "output_limit",
            RunStatus::Signal => "signal",
            RunStatus::CompileError => "compile_error",
        }
    }
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// Waiting for a free run slot.
    pub queue_ms: f64,
    /// Getting a started sandbox with kiln-init waiting for its job (create, attach, start).
    pub sandbox_ms: f64,
    /// From writing the job to receiving its exit frame.
    pub run_ms: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Truncated {
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvalidUtf8 {
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxInfo {
    pub id: String,
    pub start: StartKind,
    /// The id of the image the sandbox ran (`sha256:…`), where the backend reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// Whether the sandbox was waiting in a pool (`warm`) or made for this run (`cold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartKind {
    Cold,
    Warm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// User plus system CPU time of the run's processes.
    pub cpu_ms: Option<u64>,
    /// Peak memory of the sandbox.
    pub memory_peak_bytes: Option<u64>,
}

/// Linux's signals by number, with the other names some of them go by.
const SIGNALS: &[(i32, &str)] = &[
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (6, "SIGIOT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (17, "SIGCLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (29, "SIGPOLL"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
    (31, "SIGUNUSED"),
];

/// The conventional name of a signal number (`9` → `"SIGKILL"`), or `"SIG<n>"` for others.
pub fn signal_name(signo: i32) -> String {
    SIGNALS
        .iter()
        .find(|(n, _)| *n == signo)
        .map_or_else(|| format!("SIG{signo}"), |(_, name)| (*name).to_owned())
}

/// The number of a signal named `SIGINT` or `INT` (any case), or given as its number (`"2"`).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_uppercase();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let full = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    SIGNALS.iter().find(|(_, s)| *s == full).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(signal_name(40), "SIG40");
        assert_eq!(signal_number("SIGINT"), Some(2));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("SIGCLD"), Some(17));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGINFO"), None);
        assert_eq!(signal_number("0"), None);
        for (n, name) in SIGNALS {
            assert_eq!(signal_number(name), Some(*n));
        }
    }
}
