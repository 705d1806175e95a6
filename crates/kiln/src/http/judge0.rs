//! Judge0 CE 1.13.1, drop-in: submissions (waited for or run in the background, kept in an
//! embedded store so that a restart loses none), batches, languages, statuses and the info
//! endpoints, with Judge0's field names, units and status ids, served by the same catalog and
//! executor as `/api/v1/execute`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use kiln_api::{ExecuteRequest, ExecuteResponse, FileSpec, LimitsRequest, RunStatus};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::warn;

use super::execute::{read_body, run};
use super::{AppState, Holds};

/// Judge0's own limit on one batch.
pub const MAX_BATCH: usize = 20;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("judge0_submissions");

/// The ids Judge0 users hard-code, and the catalog runtime each one means.
pub const LANGUAGES: [(u32, &str, &str); 7] = [
    (46, "bash", "Bash"),
    (50, "c", "C (GCC"),
    (54, "c++", "C++ (GCC"),
    // The Judge0 Python SDK resolves its C++ alias to 52 (C++ GCC 7.4.0 in Judge0 CE).
    (52, "c++", "C++ (GCC"),
    (63, "javascript", "JavaScript (Node.js"),
    (71, "python", "Python"),
    // Python 2 in Judge0; here the only Python there is, for clients that ask for 70.
    (70, "python", "Python"),
];

const STATUSES: [&str; 14] = [
    "In Queue",
    "Processing",
    "Accepted",
    "Wrong Answer",
    "Time Limit Exceeded",
    "Compilation Error",
    "Runtime Error (SIGSEGV)",
    "Runtime Error (SIGXFSZ)",
    "Runtime Error (SIGFPE)",
    "Runtime Error (SIGABRT)",
    "Runtime Error (NZEC)",
    "Runtime Error (Other)",
    "Internal Error",
    "Exec Format Error",
];

/// Submissions by token, on disk (or only in memory without a path).
#[derive(Debug)]
pub struct Store {
    db: Option<Database>,
    /// Those not on disk: all of them without a store, else those whose write failed.
    memory: std::sync::Mutex<HashMap<String, Vec<u8>>>,
}

impl Store {
    pub fn open(path: Option<&std::path::Path>) -> Store {
        let db = path.and_then(|p| {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match Database::create(p) {
                Ok(db) => Some(db),
                Err(e) => {
                    warn!(path = %p.display(), error = %e, "Judge0 store not opened; submissions kept in memory only");
                    None
                }
            }
        });
        Store {
            db,
            memory: Default::default(),
        }
    }

    /// On disk where there is a store; in memory only without one, or when a write fails.
    fn put(&self, s: &Submission) {
        let bytes = serde_json::to_vec(s).expect("serialisable");
        let on_disk = self.db.as_ref().is_some_and(|db| {
            let write = || -> Result<(), String> {
                let tx = db.begin_write().map_err(|e| e.to_string())?;
                tx.open_table(TABLE)
                    .map_err(|e| e.to_string())?
                    .insert(s.token.as_str(), bytes.as_slice())
                    .map_err(|e| e.to_string())?;
                tx.commit().map_err(|e| e.to_string())
            };
            write()
                .inspect_err(|e| warn!(error = %e, "Judge0 submission not stored on disk"))
                .is_ok()
        });
        let mut memory = self.memory.lock().expect("store lock");
        if on_disk {
            // The disk has the newer copy now.
            memory.remove(&s.token);
        } else {
            memory.insert(s.token.clone(), bytes);
        }
    }

    fn get(&self, token: &str) -> Option<Submission> {
        if let Some(b) = self.memory.lock().expect("store lock").get(token) {
            return serde_json::from_slice(b).ok();
        }
        let db = self.db.as_ref()?;
        let tx = db.begin_read().ok()?;
        let table = tx.open_table(TABLE).ok()?;
        let v = table.get(token).ok()??;
        serde_json::from_slice(v.value()).ok()
    }

    /// Submissions a previous run of the gateway accepted but did not finish.
    fn unfinished(&self) -> Vec<Submission> {
        let Some(db) = &self.db else {
            return Vec::new();
        };
        let Ok(tx) = db.begin_read() else {
            return Vec::new();
        };
        let Ok(table) = tx.open_table(TABLE) else {
            return Vec::new();
        };
        let Ok(iter) = table.iter() else {
            return Vec::new();
        };
        iter.filter_map(|e| e.ok())
            .filter_map(|(_, v)| serde_json::from_slice::<Submission>(v.value()).ok())
            .filter(|s| s.status_id <= 2)
            .collect()
    }
}

/// A submission as kept: what was asked (decoded) and what came of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Submission {
    token: String,
    source_code: String,
    language_id: u32,
    stdin: Option<String>,
    expected_output: Option<String>,
    command_line_arguments: Option<String>,
    cpu_time_limit: Option<f64>,
    wall_time_limit: Option<f64>,
    memory_limit: Option<u64>,
    redirect_stderr_to_stdout: bool,
    /// Appended to the compile command, split at whitespace.
    #[serde(default)]
    compiler_options: Option<String>,
    /// Where the finished submission is PUT.
    #[serde(default)]
    callback_url: Option<String>,
    /// A zip of files written beside the source (base64).
    #[serde(default)]
    additional_files: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    compile_output: Option<String>,
    message: Option<String>,
    exit_code: Option<i32>,
    exit_signal: Option<i32>,
    status_id: u32,
    created_at: String,
    finished_at: Option<String>,
    time: Option<String>,
    wall_time: Option<String>,
    memory: Option<u64>,
}

/// Rails-style errors: 422 `{"field": ["message"]}`; other errors `{"error": …}`.
#[derive(Debug)]
pub(super) struct Judge0Error(StatusCode, Value);

impl IntoResponse for Judge0Error {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn field_error(field: &str, message: &str) -> Judge0Error {
    Judge0Error(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ field: [message] }),
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Judge0Error {
    Judge0Error(status, json!({ "error": message.into() }))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct Params {
    base64_encoded: Option<String>,
    wait: Option<String>,
    fields: Option<String>,
    tokens: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v == "true" || v == "1")
}

/// `2026-12-04T20:12:00.123Z`.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

fn token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn decode_field(v: &Value, name: &str, b64: bool) -> Result<Option<String>, Judge0Error> {
    let s = match v.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if !b64 {
        return Ok(Some(s));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.replace(['\n', '\r'], ""))
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{name} is not valid base64"),
            )
        })?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn number(v: &Value, name: &str) -> Result<Option<f64>, Judge0Error> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| field_error(name, "is not a number")),
        Some(_) => Err(field_error(name, "is not a number")),
    }
}

/// A request body turned into a stored submission (status In Queue), or Judge0's 422.
fn submission(state: &AppState, v: &Value, b64: bool) -> Result<Submission, Judge0Error> {
    let source_code = decode_field(v, "source_code", b64)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field_error("source_code", "can't be blank"))?;
    let language_id = match v.get("language_id") {
        None | Some(Value::Null) => return Err(field_error("language_id", "can't be blank")),
        Some(x) => {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| field_error("language_id", "is not a number"))? as u32
        }
    };
    if runtime_of(state, language_id).is_none() {
        return Err(field_error(
            "language_id",
            &format!("language with id {language_id} doesn't exist"),
        ));
    }
    let max_s = state.inner.policy.maxima.timeout_ms as f64 / 1000.0;
    let cpu_time_limit = number(v, "cpu_time_limit")?;
    let wall_time_limit = number(v, "wall_time_limit")?;
    for (name, limit) in [
        ("cpu_time_limit", cpu_time_limit),
        ("wall_time_limit", wall_time_limit),
    ] {
        if let Some(l) = limit {
            if !(0.0..=max_s).contains(&l) {
                return Err(field_error(
                    name,
                    &format!("must be less than or equal to {max_s}"),
                ));
            }
        }
    }
    let max_kb = state.inner.policy.maxima.memory_mb * 1024;
    let memory_limit = number(v, "memory_limit")?.map(|m| m as u64);
    if memory_limit.is_some_and(|m| m > max_kb) {
        return Err(field_error(
            "memory_limit",
            &format!("must be less than or equal to {max_kb}"),
        ));
    }
    let compiler_options = decode_field(v, "compiler_options", b64)?
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty());
    if let Some(o) = &compiler_options {
        if o.chars().count() > 512 {
            return Err(field_error(
                "compiler_options",
                "is too long (maximum is 512 characters)",
            ));
        }
        if runtime_of(state, language_id).is_some_and(|rt| rt.compile.is_none()) {
            return Err(field_error(
                "compiler_options",
                &format!(
                    "setting compiler options is only allowed for compiled languages (bad language id: {language_id})"
                ),
            ));
        }
    }
    let callback_url = decode_field(v, "callback_url", false)?.filter(|u| !u.is_empty());
    if let Some(url) = &callback_url {
        if !state.inner.judge0_callbacks {
            return Err(field_error(
                "callback_url",
                "setting callback URL is not allowed",
            ));
        }
        match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "http" && u.host().is_some() => {}
            Ok(u) if u.scheme() == "https" => {
                return Err(field_error(
                    "callback_url",
                    "https is not supported by this server (it has no TLS client); use http",
                ))
            }
            _ => return Err(field_error("callback_url", "is not a valid URL")),
        }
    }
    let additional_files = additional_files(v)?;
    let s = Submission {
        token: token(),
        source_code,
        language_id,
        compiler_options,
        callback_url,
        additional_files,
        stdin: decode_field(v, "stdin", b64)?,
        expected_output: decode_field(v, "expected_output", b64)?,
        command_line_arguments: decode_field(v, "command_line_arguments", false)?,
        cpu_time_limit,
        wall_time_limit,
        memory_limit,
        redirect_stderr_to_stdout: v
            .get("redirect_stderr_to_stdout")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status_id: 1,
        created_at: timestamp(),
        ..Submission::default()
    };
    if s.additional_files.is_some() {
        // Checked now as the run will see them (beside the source, within the limits), so that
        // a bad archive is a 422 rather than an Internal Error later.
        // Other faults (stdin, args…) are the run's to report, as without a zip.
        if let Err(Unrunnable { field, message }) = spec_of(state, &s) {
            if field == "additional_files" || field.starts_with("files") {
                return Err(field_error("additional_files", &message));
            }
        }
    }
    Ok(s)
}

/// `additional_files`: a zip, base64-encoded (whatever `base64_encoded` says: JSON cannot carry
/// it otherwise), kept as sent.
fn additional_files(v: &Value) -> Result<Option<String>, Judge0Error> {
    let Some(text) = decode_field(v, "additional_files", false)?.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(text.replace(['\n', '\r'], "")))
}

/// The files of an `additional_files` zip, within the server's limits on the number of files
/// and their size (a request body's). Directories are implied by the paths; a path that leaves
/// the working directory or a link is refused.
fn unzip(state: &AppState, zip: &[u8]) -> Result<Vec<FileSpec>, String> {
    // One file of the run is the source.
    unzip_within(
        zip,
        state.inner.policy.max_files.saturating_sub(1),
        state.inner.max_body_bytes,
    )
}

/// A zip entry's name as a path inside the working directory (`./a/../b` is `b`), or `None`
/// for one that is absolute or leaves it.
fn inside(name: &str) -> Option<String> {
    if name.starts_with('/') || name.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn unzip_within(zip: &[u8], max_files: usize, max_bytes: usize) -> Result<Vec<FileSpec>, String> {
    use std::io::Read as _;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .map_err(|e| format!("is not a zip archive: {e}"))?;
    let mut files = Vec::new();
    let mut total = 0usize;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("cannot be read: {e}"))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .name()
            .map_err(|e| format!("holds a name that cannot be read: {e}"))?
            .into_owned();
        if entry.is_symlink() {
            return Err(format!("holds a link ({name}), which is not taken"));
        }
        let Some(path) = inside(&name) else {
            return Err(format!("holds a path outside its directory ({name})"));
        };
        if files.len() == max_files {
            return Err(format!("holds more than {max_files} files"));
        }
        let room = max_bytes - total;
        let mut content = Vec::new();
        (&mut entry)
            .take(room as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|e| format!("cannot be unpacked ({name}): {e}"))?;
        total += content.len();
        if total > max_bytes {
            return Err(format!("unpacks to more than {max_bytes} bytes"));
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        files.push(FileSpec {
            path: Some(path),
            content: base64::engine::general_purpose::STANDARD.encode(content),
            encoding: kiln_api::Encoding::Base64,
            mode: executable.then_some(kiln_api::FileMode::Number(0o755)),
        });
    }
    Ok(files)
}

fn runtime_of(state: &AppState, id: u32) -> Option<&kiln_api::Runtime> {
    let (_, name, _) = LANGUAGES.iter().find(|(i, _, _)| *i == id)?;
    state.inner.catalog.find(name, None)
}

/// Judge0's comparison: trailing whitespace of every line and trailing newlines do not count.
fn same_output(expected: &str, got: &str) -> bool {
    let strip = |t: &str| {
        t.split('\n')
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_owned()
    };
    strip(expected) == strip(got)
}

/// Runs the submission and records how it ended; `Err` gives it back when it could not run
/// now but may later (the engine down, the server full or shutting down).
async fn execute(
    state: &AppState,
    mut s: Submission,
    holds: Option<Holds>,
) -> Result<Submission, Submission> {
    let received = Instant::now();
    let result = match spec_of(state, &s) {
        Ok(spec) => match run(state, spec, received, holds).await {
            Ok(res) => Ok(res),
            Err(super::error::ApiError::Sandbox(e)) if e.is_transient() => return Err(s),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.describe()),
    };
    s.finished_at = Some(timestamp());
    match result {
        Ok(res) => record(&mut s, &res),
        Err(e) => {
            s.status_id = 13;
            s.message = Some(e);
        }
    }
    Ok(s)
}

/// Why a submission cannot run: the field at fault (`additional_files`, or the execute
/// request's: `files[1].path`, `stdin`…) and the message (Rails-style, without the field, for
/// `additional_files`; the execute request's own otherwise).
struct Unrunnable {
    field: String,
    message: String,
}

impl Unrunnable {
    fn zip(message: String) -> Self {
        Unrunnable {
            field: "additional_files".into(),
            message,
        }
    }

    /// The submission's `message` when it could not run.
    fn describe(self) -> String {
        if self.field == "additional_files" {
            format!("additional_files {}", self.message)
        } else {
            self.message
        }
    }
}

/// The run a submission asks for, validated as `/api/v1/execute` validates a request.
fn spec_of(state: &AppState, s: &Submission) -> Result<kiln_api::ExecSpec, Unrunnable> {
    let rt = runtime_of(state, s.language_id).ok_or_else(|| Unrunnable {
        field: "language_id".into(),
        message: "language no longer available".into(),
    })?;
    let limit_ms = s
        .wall_time_limit
        .or(s.cpu_time_limit.map(|c| c * 2.0))
        .map(|sec| (sec * 1000.0).ceil() as u64);
    let args = s
        .command_line_arguments
        .as_deref()
        .map(|a| a.split_whitespace().map(str::to_owned).collect());
    let mut files = vec![FileSpec {
        path: Some(rt.source_file.clone()),
        content: s.source_code.clone(),
        ..FileSpec::default()
    }];
    if let Some(zip) = &s.additional_files {
        let zip = base64::engine::general_purpose::STANDARD
            .decode(zip)
            .map_err(|_| Unrunnable::zip("is not base64".into()))?;
        let extra = unzip(state, &zip).map_err(Unrunnable::zip)?;
        // As Judge0's `unzip -n`: the source is never overwritten.
        files.extend(
            extra
                .into_iter()
                .filter(|f| f.path.as_deref() != Some(rt.source_file.as_str())),
        );
    }
    let request = ExecuteRequest {
        language: Some(rt.name.clone()),
        version: Some(rt.version.clone()),
        files: Some(files),
        stdin: s.stdin.clone(),
        args,
        limits: Some(LimitsRequest {
            timeout_ms: limit_ms.map(|ms| ms.max(1)),
            memory_mb: s.memory_limit.map(|kb| kb.div_ceil(1024).max(1)),
            ..LimitsRequest::default()
        }),
        ..ExecuteRequest::default()
    };
    let mut spec = request
        .validate_with(&state.inner.policy, &state.inner.catalog)
        .map_err(|e| Unrunnable {
            field: e.field,
            message: e.message,
        })?;
    if let (Some(c), Some(opts)) = (spec.compile.as_mut(), &s.compiler_options) {
        // After the runtime's own flags: gcc takes the last of conflicting ones.
        c.argv.extend(opts.split_whitespace().map(str::to_owned));
    }
    Ok(spec)
}

/// [`execute`], trying again a while when the submission could not run now.
async fn execute_patiently(state: &AppState, s: Submission, holds: Option<Holds>) -> Submission {
    let mut s = s;
    for attempt in 0..30 {
        match execute(state, s, holds.clone()).await {
            Ok(done) => return done,
            Err(back) => s = back,
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            200 * (attempt + 1).min(10),
        ))
        .await;
    }
    s.status_id = 13;
    s.finished_at = Some(timestamp());
    s.message = Some("the server could not run it: no sandbox could be had in time".into());
    s
}

fn record(s: &mut Submission, res: &ExecuteResponse) {
    let text = |t: &str| (!t.is_empty()).then(|| t.to_owned());
    s.time = Some(format!(
        "{:.3}",
        res.usage.cpu_ms.unwrap_or(0) as f64 / 1000.0
    ));
    s.wall_time = Some(format!("{:.3}", res.timings.run_ms / 1000.0));
    s.memory = res.usage.memory_peak_bytes.map(|b| b / 1024);
    if let Some(c) = &res.compile {
        let out = format!("{}{}", c.stdout, c.stderr);
        s.compile_output = text(&out);
    }
    let (stdout, stderr) = if s.redirect_stderr_to_stdout {
        (format!("{}{}", res.stdout, res.stderr), String::new())
    } else {
        (res.stdout.clone(), res.stderr.clone())
    };
    s.stdout = text(&stdout);
    s.stderr = text(&stderr);
    s.exit_code = res.exit_code;
    s.exit_signal = res.signal.as_deref().and_then(kiln_api::signal_number);
    s.status_id = match res.status {
        RunStatus::CompileError => 6,
        RunStatus::Timeout => 5,
        RunStatus::Oom => 12,
        RunStatus::OutputLimit => 12,
        RunStatus::Signal => match s.exit_signal {
            Some(11) => 7,
            Some(25) => 8,
            Some(8) => 9,
            Some(6) => 10,
            _ => 12,
        },
        _ if res.exit_code != Some(0) => 11,
        _ => match &s.expected_output {
            Some(e) if !same_output(e, s.stdout.as_deref().unwrap_or("")) => 4,
            _ => 3,
        },
    };
    s.message = match res.status {
        RunStatus::Oom => Some("Memory limit exceeded".into()),
        RunStatus::OutputLimit => Some("Output limit exceeded".into()),
        RunStatus::Signal => res.signal.as_ref().map(|sig| format!("Killed by {sig}")),
        _ if s.status_id == 11 => Some(format!(
            "Exited with error status {}",
            res.exit_code.unwrap_or(0)
        )),
        _ => None,
    };
}

const DEFAULT_FIELDS: [&str; 8] = [
    "stdout",
    "time",
    "memory",
    "stderr",
    "token",
    "compile_output",
    "message",
    "status",
];

/// The submission as Judge0 shows it, restricted to `fields` (`*` for all).
fn view(state: &AppState, s: &Submission, fields: Option<&str>, b64: bool) -> Value {
    let enc = |t: &Option<String>| -> Value {
        match t {
            None => Value::Null,
            Some(t) if b64 => Value::String(base64::engine::general_purpose::STANDARD.encode(t)),
            Some(t) => Value::String(t.clone()),
        }
    };
    let language = runtime_of(state, s.language_id)
        .map(|rt| json!({"id": s.language_id, "name": language_name(s.language_id, rt)}));
    let all = json!({
        "source_code": enc(&Some(s.source_code.clone())),
        "language_id": s.language_id,
        "stdin": enc(&s.stdin),
        "expected_output": enc(&s.expected_output),
        "stdout": enc(&s.stdout),
        "status_id": s.status_id,
        "created_at": s.created_at,
        "finished_at": s.finished_at,
        "time": s.time,
        "memory": s.memory,
        "stderr": enc(&s.stderr),
        "token": s.token,
        "number_of_runs": 1,
        "cpu_time_limit": s.cpu_time_limit.map(|v| format!("{v:.1}")),
        "cpu_extra_time": "1.0",
        "wall_time_limit": s.wall_time_limit.map(|v| format!("{v:.1}")),
        "memory_limit": s.memory_limit,
        "stack_limit": null,
        "max_processes_and_or_threads": null,
        "enable_per_process_and_thread_time_limit": false,
        "enable_per_process_and_thread_memory_limit": false,
        "max_file_size": null,
        "compile_output": enc(&s.compile_output),
        "exit_code": s.exit_code,
        "exit_signal": s.exit_signal,
        "message": enc(&s.message),
        "wall_time": s.wall_time,
        "compiler_options": s.compiler_options,
        "command_line_arguments": s.command_line_arguments,
        "redirect_stderr_to_stdout": s.redirect_stderr_to_stdout,
        "callback_url": s.callback_url,
        // Base64 either way: a zip is not text.
        "additional_files": s.additional_files,
        "enable_network": false,
        "status": {"id": s.status_id, "description": STATUSES[(s.status_id as usize).clamp(1, 14) - 1]},
        "language": language,
    });
    let wanted: Vec<&str> = match fields {
        Some("*") => return all,
        Some(f) => f
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect(),
        None => DEFAULT_FIELDS.to_vec(),
    };
    let mut out = Map::new();
    for f in wanted {
        if let Some(v) = all.get(f) {
            out.insert(f.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn language_name(id: u32, rt: &kiln_api::Runtime) -> String {
    let label = LANGUAGES
        .iter()
        .find(|(i, _, _)| *i == id)
        .map_or("", |l| l.2);
    if label.ends_with("(GCC") || label.ends_with("(Node.js") {
        format!("{label} {})", rt.version)
    } else {
        format!("{label} ({})", rt.version)
    }
}

/// Starts the run of `s` in the background; its result lands in the store.
fn spawn(state: &AppState, store: Arc<Store>, s: Submission) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut processing = s.clone();
        processing.status_id = 2;
        store.put(&processing);
        // Stored only once finished: a gateway that stops meanwhile leaves it Processing, and
        // the next one runs it (`resume`).
        let done = execute_patiently(&state, s, None).await;
        store.put(&done);
        call_back(&state, &done).await;
    });
}

/// Judge0's callback tries and the time each may take.
const CALLBACK_TRIES: u32 = 3;
const CALLBACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Judge0's callback: the finished submission (its default fields, base64-encoded) PUT to its
/// `callback_url`; tried again only when no answer came, as Judge0 does.
async fn call_back(state: &AppState, s: &Submission) {
    let Some(url) = &s.callback_url else { return };
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            // A callback goes where the submission said, not where that address sends it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()
    });
    let Some(client) = client else { return };
    let body = view(state, s, None, true);
    for attempt in 1..=CALLBACK_TRIES {
        match client.put(url).json(&body).send().await {
            Ok(_) => return,
            Err(e) => warn!(token = %s.token, attempt, error = %e, "callback failed"),
        }
    }
}

/// Re-runs what an earlier gateway accepted and did not finish.
pub fn resume(state: &AppState) {
    let store = state.inner.judge0.clone();
    for s in store.unfinished() {
        spawn(state, store.clone(), s);
    }
}

async fn body_json(state: &AppState, body: Body) -> Result<Value, Judge0Error> {
    let bytes = read_body(body, state)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// `POST /submissions`.
pub(super) async fn create(
    State(state): State<AppState>,
    Query(q): Query<Params>,
    holds: Option<axum::Extension<Holds>>,
    body: Body,
) -> Result<Response, Judge0Error> {
    let b64 = truthy(&q.base64_encoded);
    let v = body_json(&state, body).await?;
    let s = submission(&state, &v, b64)?;
    let store = state.inner.judge0.clone();
    if truthy(&q.wait) {
        store.put(&s);
        let done = execute_patiently(&state, s, holds.map(|axum::Extension(h)| h)).await;
        store.put(&done);
        // After the answer is made, not before it: the client waits for this one.
        let (cb_state, cb_done) = (state.clone(), done.clone());
        tokio::spawn(async move { call_back(&cb_state, &cb_done).await });
        let shown = view(&state, &done, q.fields.as_deref(), b64);
        return Ok((StatusCode::CREATED, Json(shown)).into_response());
    }
    store.put(&s);
    let token = s.token.clone();
    spawn(&state, store, s);
    Ok((StatusCode::CREATED, Json(json!({ "token": token }))).into_response())
}

/// `GET /submissions/{token}`.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<Value>, Judge0Error> {
    let s = state
        .inner
        .judge0
        .get(&token)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(view(
        &state,
        &s,
        q.fields.as_deref(),
        truthy(&q.base64_encoded),
    )))
}

/// `POST /submissions/batch`: `{"submissions": [...]}` → a token or the errors of each.
pub(super) async fn create_batch(
    State(state): State<AppState>,
    Query(q): Query<Params>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), Judge0Error> {
    let b64 = truthy(&q.base64_encoded);
    let v = body_json(&state, body).await?;
    let Some(items) = v.get("submissions").and_then(Value::as_array) else {
        return Err(field_error("submissions", "can't be blank"));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("number of submissions in a batch should be between 1 and {MAX_BATCH}"),
        ));
    }
    let store = state.inner.judge0.clone();
    let mut out = Vec::new();
    for item in items {
        match submission(&state, item, b64) {
            Ok(s) => {
                out.push(json!({"token": s.token}));
                store.put(&s);
                spawn(&state, store.clone(), s);
            }
            Err(Judge0Error(_, errors)) => out.push(errors),
        }
    }
    Ok((StatusCode::CREATED, Json(Value::Array(out))))
}

/// `GET /submissions/batch?tokens=a,b`.
pub(super) async fn show_batch(
    State(state): State<AppState>,
    Query(q): Query<Params>,
) -> Result<Json<Value>, Judge0Error> {
    let tokens: Vec<&str> = q
        .tokens
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() || tokens.len() > MAX_BATCH {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("number of tokens should be between 1 and {MAX_BATCH}"),
        ));
    }
    let b64 = truthy(&q.base64_encoded);
    let list: Vec<Value> = tokens
        .iter()
        .map(|t| match state.inner.judge0.get(t) {
            Some(s) => view(&state, &s, q.fields.as_deref(), b64),
            None => Value::Null,
        })
        .collect();
    Ok(Json(json!({ "submissions": list })))
}

/// `GET /languages`.
pub(super) async fn languages(State(state): State<AppState>) -> Json<Value> {
    let mut list: Vec<Value> = LANGUAGES
        .iter()
        .filter_map(|(id, _, _)| {
            let rt = runtime_of(&state, *id)?;
            Some(json!({"id": id, "name": language_name(*id, rt)}))
        })
        .collect();
    list.sort_by_key(|v| v["id"].as_u64());
    Json(Value::Array(list))
}

/// `GET /languages/{id}`.
pub(super) async fn language(
    State(state): State<AppState>,
    Path(id): Path<u32>,
) -> Result<Json<Value>, Judge0Error> {
    let rt = runtime_of(&state, id).ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(json!({
        "id": id,
        "name": language_name(id, rt),
        "is_archived": false,
        "source_file": rt.source_file,
        "compile_cmd": rt.compile.as_ref().map(|c| c.join(" ")),
        "run_cmd": rt.run.join(" "),
    })))
}

/// `GET /statuses`.
pub(super) async fn statuses() -> Json<Value> {
    Json(Value::Array(
        STATUSES
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"id": i + 1, "description": d}))
            .collect(),
    ))
}

/// `GET /about`.
pub(super) async fn about() -> Json<Value> {
    Json(json!({
        "version": "1.13.1",
        "homepage": "https://github.com/judge0/judge0 (served by Kiln)",
        "source_code": "https://github.com/judge0/judge0",
        "maintainer": "Kiln",
    }))
}

/// `GET /config_info`: the limits as Judge0 names them.
pub(super) async fn config_info(State(state): State<AppState>) -> Json<Value> {
    let p = &state.inner.policy;
    let secs = |ms: u64| ms as f64 / 1000.0;
    Json(json!({
        "maintenance_mode": false,
        "enable_wait_result": true,
        "enable_compiler_options": true,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": true,
        "enable_submission_delete": false,
        "enable_callbacks": state.inner.judge0_callbacks,
        "callbacks_max_tries": CALLBACK_TRIES,
        "callbacks_timeout": CALLBACK_TIMEOUT.as_secs_f64(),
        "enable_additional_files": true,
        "max_queue_size": 100,
        "cpu_time_limit": secs(p.defaults.timeout_ms),
        "max_cpu_time_limit": secs(p.maxima.timeout_ms),
        "cpu_extra_time": 1.0,
        "max_cpu_extra_time": 5.0,
        "wall_time_limit": secs(p.defaults.timeout_ms),
        "max_wall_time_limit": secs(p.maxima.timeout_ms),
        "memory_limit": p.defaults.memory_mb * 1024,
        "max_memory_limit": p.maxima.memory_mb * 1024,
        "stack_limit": 64000,
        "max_stack_limit": 128000,
        "max_processes_and_or_threads": p.defaults.pids,
        "max_max_processes_and_or_threads": p.maxima.pids,
        "enable_per_process_and_thread_time_limit": false,
        "allow_enable_per_process_and_thread_time_limit": false,
        "enable_per_process_and_thread_memory_limit": false,
        "allow_enable_per_process_and_thread_memory_limit": false,
        "max_file_size": p.defaults.tmp_mb * 1024,
        "max_max_file_size": p.maxima.tmp_mb * 1024,
        "number_of_runs": 1,
        "max_number_of_runs": 1,
        "redirect_stderr_to_stdout": false,
        "max_extract_size": state.inner.max_body_bytes / 1024,
        "enable_batched_submissions": true,
        "max_submission_batch_size": MAX_BATCH,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": false,
        "allow_enable_network": false,
        "enable_network": false,
    }))
}

/// `GET /system_info`.
pub(super) async fn system_info() -> Json<Value> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .unwrap_or_default();
    Json(json!({
        "Architecture": std::env::consts::ARCH,
        "CPU(s)": cpus.to_string(),
        "Mem": format!("{mem} kB"),
        "Engine": "Kiln (Docker)",
    }))
}

#[cfg(test)]
mod tests {
    /// A zip of `(path, content)` entries, or links where `link` says so.
    fn zip_of(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        use std::io::Write as _;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (path, content, link) in entries {
            if *link {
                w.add_symlink(*path, "/etc/passwd", opts).unwrap();
            } else {
                w.start_file(*path, opts).unwrap();
                w.write_all(content).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn additional_files_are_bounded() {
        let ok = zip_of(&[("a.txt", b"hello", false), ("d/b.txt", b"", false)]);
        let files = unzip_within(&ok, 2, 5).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.clone().unwrap()).collect();
        assert_eq!(paths, ["a.txt", "d/b.txt"]);
        assert_eq!(
            unzip_within(&ok, 1, 100).unwrap_err(),
            "holds more than 1 files"
        );
        assert_eq!(
            unzip_within(&ok, 2, 4).unwrap_err(),
            "unpacks to more than 4 bytes"
        );
        // A bomb: 8 MiB of zeros compress to a few KiB; unpacking stops past the limit.
        let bomb = zip_of(&[("zeros", &vec![0u8; 8 << 20], false)]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            unzip_within(&bomb, 10, 1 << 20).unwrap_err(),
            format!("unpacks to more than {} bytes", 1 << 20)
        );
        let link = zip_of(&[("passwd", b"", true)]);
        assert!(unzip_within(&link, 10, 100).unwrap_err().contains("link"));
        let dotted = zip_of(&[("./d/../a.txt", b"x", false)]);
        let files = unzip_within(&dotted, 10, 100).unwrap();
        assert_eq!(files[0].path.as_deref(), Some("a.txt"));
        let out = zip_of(&[("../x", b"x", false)]);
        assert!(unzip_within(&out, 10, 100).unwrap_err().contains("outside"));
        assert!(unzip_within(b"PK nonsense", 10, 100)
            .unwrap_err()
            .starts_with("is not a zip archive"));
    }

    use super::*;

    #[test]
    fn output_compared_as_judge0_does() {
        assert!(same_output("42\n", "42"));
        assert!(same_output("a  \nb\n\n", "a\nb"));
        assert!(!same_output("a\nb", "a\n b"));
        assert!(!same_output("42", "43"));
    }

    #[test]
    fn tokens_are_uuids_and_timestamps_rails_like() {
        let t = token();
        assert_eq!(t.len(), 36);
        assert_eq!(&t[14..15], "4");
        assert_ne!(token(), t);
        let ts = timestamp();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(
            ts.starts_with("20") && ts.ends_with('Z') && &ts[10..11] == "T",
            "{ts}"
        );
    }
}
