//! Piston v2, drop-in: `GET /api/v2/runtimes` and `POST /api/v2/execute` with Piston's shapes
//! and semantics, served by the same catalog and executor as `/api/v1/execute`.
//!
//! Differences that clients can see are few: `output` is stdout followed by stderr (Kiln keeps
//! the streams apart, not their interleaving), both limits of a compiled language share one
//! sandbox and so one memory limit (the larger), and `cpu_time`/`memory` come from the
//! sandbox's cgroup.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_api::{
    Encoding, ExecSpec, ExecuteRequest, ExecuteResponse, FileSpec, LimitsRequest, RunStatus,
    StageResult,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::execute::{read_body, run};
use super::AppState;

mod connect;
pub(super) use connect::connect;

/// A Piston error: 400 (or the status of the underlying error) with `{"message": …}`.
#[derive(Debug)]
pub(super) struct PistonError(StatusCode, pub(super) String);

impl IntoResponse for PistonError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

impl From<ApiError> for PistonError {
    fn from(e: ApiError) -> Self {
        let (status, body, _) = e.parts();
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        PistonError(status, body.error.message)
    }
}

fn bad(message: impl Into<String>) -> PistonError {
    PistonError(StatusCode::BAD_REQUEST, message.into())
}

/// `GET /api/v2/runtimes`.
pub(super) async fn runtimes(State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .inner
        .catalog
        .runtimes
        .iter()
        .map(|r| json!({"language": r.name, "version": r.version, "aliases": r.aliases}))
        .collect();
    Json(Value::Array(list))
}

#[derive(Debug, Deserialize)]
struct PistonRequest {
    language: Option<Value>,
    version: Option<Value>,
    files: Option<Value>,
    #[serde(default)]
    stdin: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    compile_timeout: Option<Value>,
    run_timeout: Option<Value>,
    compile_memory_limit: Option<Value>,
    run_memory_limit: Option<Value>,
    /// pistonapi (PyPI) sends `timeout` for the run.
    timeout: Option<Value>,
    // Accepted and ignored, as Piston's own limits that Kiln does not keep apart.
    #[serde(default, rename = "compile_cpu_time")]
    _compile_cpu_time: Option<Value>,
    #[serde(default, rename = "run_cpu_time")]
    _run_cpu_time: Option<Value>,
}

/// A JSON body, or the form encoding some clients send (pistonapi on PyPI posts a form with
/// `files=<code>` and repeated `args`).
fn decode(headers: &HeaderMap, bytes: &[u8]) -> Result<PistonRequest, PistonError> {
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // `curl -d '{…}'` labels a JSON body as a form: the body says what it is.
    let looks_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !form || looks_json {
        return serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("request body is not valid JSON: {e}")));
    }
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        let (k, v) = (k.into_owned(), Value::String(v.into_owned()));
        let list = matches!(k.as_str(), "args" | "files");
        match map.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            Some(_) => {}
            None if list => {
                map.insert(k, Value::Array(vec![v]));
            }
            None => {
                map.insert(k, v);
            }
        }
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| bad(e.to_string()))
}

fn string(v: &Option<Value>, name: &str) -> Result<Option<String>, PistonError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{name} is required as a string"))),
    }
}

/// A number of milliseconds or bytes; `-1` (or absent) is the default.
fn number(v: &Option<Value>, name: &str) -> Result<Option<u64>, PistonError> {
    let n = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if n < 0.0 => Ok(None),
        Some(n) if n.is_finite() => Ok(Some(n as u64)),
        _ => Err(bad(format!("{name} must be a number"))),
    }
}

fn files(v: &Option<Value>) -> Result<Vec<FileSpec>, PistonError> {
    let list = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(bad("files is required as an array")),
    };
    list.iter()
        .enumerate()
        .map(|(i, f)| {
            // A bare string (a form-encoded client) is a file's content.
            let (name, content, encoding) = match f {
                Value::String(s) => (None, s.clone(), None),
                Value::Object(o) => (
                    o.get("name").and_then(Value::as_str).map(str::to_owned),
                    o.get("content")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("files[{i}].content is required as a string")))?
                        .to_owned(),
                    o.get("encoding").and_then(Value::as_str).map(str::to_owned),
                ),
                _ => return Err(bad(format!("files[{i}] is required as an object"))),
            };
            let (content, encoding) = match encoding.as_deref() {
                None | Some("utf8") => (content, Encoding::Utf8),
                Some("base64") => (content, Encoding::Base64),
                Some("hex") => {
                    use base64::Engine as _;
                    let bytes = hex(&content)
                        .ok_or_else(|| bad(format!("files[{i}].content is not hex")))?;
                    (
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                        Encoding::Base64,
                    )
                }
                Some(other) => {
                    return Err(bad(format!(
                        "files[{i}].encoding {other:?} is not one of utf8, base64, hex"
                    )))
                }
            };
            Ok(FileSpec {
                path: Some(name.unwrap_or_else(|| format!("file{i}.code"))),
                content,
                encoding,
                ..FileSpec::default()
            })
        })
        .collect()
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `POST /api/v2/execute`.
pub(super) async fn execute(
    State(state): State<AppState>,
    holds: Option<axum::Extension<super::Holds>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, PistonError> {
    let received = Instant::now();
    let bytes = read_body(body, &state).await?;
    let req = decode(&headers, &bytes)?;
    let (spec, language, version) = validate(&state, &req)?;
    let res = run(&state, spec, received, holds.map(|axum::Extension(h)| h)).await?;
    Ok(Json(answer(&language, &version, &res)))
}

/// The run a Piston request asks for, with the runtime's language and version.
fn validate(
    state: &AppState,
    req: &PistonRequest,
) -> Result<(ExecSpec, String, String), PistonError> {
    let language = string(&req.language, "language")?
        .ok_or_else(|| bad("language is required as a string"))?;
    let version =
        string(&req.version, "version")?.ok_or_else(|| bad("version is required as a string"))?;
    let files = files(&req.files)?;
    let stdin = match &req.stdin {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("stdin must be a string")),
    };
    let args = match &req.args {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>, PistonError>>()?,
        ),
        Some(_) => return Err(bad("args must be an array")),
    };
    let catalog = &state.inner.catalog;
    let Some(runtime) = catalog.find(&language, Some(&version)) else {
        return Err(bad(format!("{language}-{version} runtime is unknown")));
    };
    let policy = &state.inner.policy;
    let max_ms = policy.maxima.timeout_ms;
    let max_bytes = policy.maxima.memory_mb << 20;
    let check = |v: Option<u64>, name: &str, max: u64| match v {
        Some(n) if n > max => Err(bad(format!(
            "{name} cannot exceed the configured limit of {max}"
        ))),
        _ => Ok(v),
    };
    let run_timeout = check(
        number(&req.run_timeout, "run_timeout")?.or(number(&req.timeout, "timeout")?),
        "run_timeout",
        max_ms,
    )?;
    let compile_timeout = check(
        number(&req.compile_timeout, "compile_timeout")?,
        "compile_timeout",
        max_ms,
    )?;
    let run_memory = check(
        number(&req.run_memory_limit, "run_memory_limit")?,
        "run_memory_limit",
        max_bytes,
    )?;
    let compile_memory = check(
        number(&req.compile_memory_limit, "compile_memory_limit")?,
        "compile_memory_limit",
        max_bytes,
    )?;
    // One sandbox for both steps: the larger limit, in whole MiB.
    let memory = match (
        run_memory,
        compile_memory.filter(|_| runtime.compile.is_some()),
    ) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0)).div_ceil(1 << 20).max(1)),
    };
    let request = ExecuteRequest {
        language: Some(runtime.name.clone()),
        version: Some(runtime.version.clone()),
        files: Some(files),
        stdin,
        args,
        compile_timeout_ms: compile_timeout.filter(|_| runtime.compile.is_some()),
        limits: Some(LimitsRequest {
            timeout_ms: run_timeout,
            memory_mb: memory,
            ..LimitsRequest::default()
        }),
        ..ExecuteRequest::default()
    };
    let spec = request
        .validate_with(policy, catalog)
        .map_err(ApiError::from)?;
    Ok((spec, runtime.name.clone(), runtime.version.clone()))
}

/// Piston's answer: `run` (and `compile` for a compiled language); a failed compile is copied
/// into `run`, as Piston does.
fn answer(language: &str, version: &str, res: &ExecuteResponse) -> Value {
    let mut out = json!({"language": language, "version": version, "run": ran(res)});
    if let Some(c) = &res.compile {
        let compile = compiled(c);
        if res.status == RunStatus::CompileError {
            out["run"] = compile.clone();
        }
        out["compile"] = compile;
    }
    out
}

/// Piston's `run` object of a result (before a failed compile is copied into it).
fn ran(res: &ExecuteResponse) -> Value {
    stage(
        &res.stdout,
        &res.stderr,
        res.exit_code,
        res.signal.as_deref(),
        res.status,
        res.usage.cpu_ms,
        res.timings.run_ms,
        res.usage.memory_peak_bytes,
    )
}

fn compiled(c: &StageResult) -> Value {
    stage(
        &c.stdout,
        &c.stderr,
        c.exit_code,
        c.signal.as_deref(),
        c.status,
        c.usage.cpu_ms,
        c.duration_ms,
        c.usage.memory_peak_bytes,
    )
}

#[allow(clippy::too_many_arguments)]
fn stage(
    stdout: &str,
    stderr: &str,
    code: Option<i32>,
    signal: Option<&str>,
    status: RunStatus,
    cpu_ms: Option<u64>,
    wall_ms: f64,
    memory: Option<u64>,
) -> Value {
    let (status, message) = match status {
        RunStatus::Timeout => (Some("TO"), Some("Timeout".to_owned())),
        RunStatus::OutputLimit => (Some("OL"), Some("Output limit exceeded".to_owned())),
        RunStatus::Oom => (Some("SG"), Some("Memory limit exceeded".to_owned())),
        RunStatus::Signal => (Some("SG"), signal.map(|s| format!("Killed by signal {s}"))),
        _ if code.is_some_and(|c| c != 0) => (
            Some("RE"),
            Some(format!("Process exited with code {}", code.unwrap_or(0))),
        ),
        _ => (None, None),
    };
    json!({
        "stdout": stdout,
        "stderr": stderr,
        "output": format!("{stdout}{stderr}"),
        "code": code,
        "signal": signal,
        "message": message,
        "status": status,
        "cpu_time": cpu_ms,
        "wall_time": wall_ms.round() as u64,
        "memory": memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ctype: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_TYPE, ctype.parse().unwrap());
        h
    }

    #[test]
    fn json_forms_and_json_labelled_as_forms() {
        let form = headers("application/x-www-form-urlencoded");
        let r = decode(
            &form,
            b"language=py&version=3.x&files=print(1)&args=a&args=b",
        )
        .unwrap();
        assert_eq!(r.language, Some(json!("py")));
        assert_eq!(r.files, Some(json!(["print(1)"])));
        assert_eq!(r.args, Some(json!(["a", "b"])));
        let r = decode(&form, br#" {"language": "py", "version": "*"}"#).unwrap();
        assert_eq!(r.version, Some(json!("*")));
        let r = decode(&HeaderMap::new(), br#"{"language": "c"}"#).unwrap();
        assert_eq!(r.language, Some(json!("c")));
        assert!(decode(&headers("text/plain"), b"nope").is_err());
        assert_eq!(hex("4142"), Some(b"AB".to_vec()));
        assert_eq!(hex("414"), None);
    }
}
