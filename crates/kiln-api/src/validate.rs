use std::collections::BTreeSet;

use base64::Engine as _;

use crate::{
    Catalog, Encoding, ExecuteRequest, FileMode, FileSpec, Limits, Policy, ValidationError,
};

/// Where a run starts, and where its files go, when the request names no `workdir`.
pub const DEFAULT_WORKDIR: &str = "/workspace";

const MAX_PATH: usize = 1024;
const MAX_ENV: usize = 1000;
const MAX_ARGS: usize = 10_000;
/// Places a working directory must not shadow: the kernel's views and Kiln's own mount.
const RESERVED_DIRS: [&str; 4] = ["/proc", "/sys", "/dev", "/.kiln"];

/// A request that passed validation: every field concrete and within the server's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSpec {
    pub image: String,
    /// `["/bin/sh", "-c", command]` for a `command`.
    pub argv: Vec<String>,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub files: Vec<ResolvedFile>,
    pub workdir: String,
    pub limits: Limits,
    pub network: bool,
    /// Not part of the cache key: it says how to use the cache, not what the run is.
    pub cache: crate::CacheMode,
    /// A step before the run, from the runtime catalog (a compiler).
    pub compile: Option<CompileSpec>,
    /// The catalog's runtime, name and version, when the request named a `language`.
    pub runtime: Option<(String, String)>,
}

/// A compile step: its command and its own time limit; it shares the run's other limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileSpec {
    pub argv: Vec<String>,
    pub timeout_ms: u64,
}

/// A request file with its content decoded and its path normalised (relative, no `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

impl ExecuteRequest {
    /// Checks the request against `policy` and fills in every default.
    pub fn validate(&self, policy: &Policy) -> Result<ExecSpec, ValidationError> {
        let image = match self.image.as_deref() {
            None => return Err(ValidationError::missing("image", "image is required")),
            Some(i) => validate_image(i)?,
        };
        let argv = match (&self.command, &self.argv) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::invalid(
                    "command",
                    "give either command or argv, not both",
                ))
            }
            (None, None) => {
                return Err(ValidationError::missing(
                    "command",
                    "one of command (a shell line) or argv (an exact argv) is required",
                ))
            }
            (Some(c), None) => {
                if c.trim().is_empty() {
                    return Err(ValidationError::invalid("command", "command is empty"));
                }
                no_nul("command", c)?;
                vec!["/bin/sh".to_owned(), "-c".to_owned(), c.clone()]
            }
            (None, Some(a)) => validate_argv(a)?,
        };
        let env = validate_env(self.env.as_ref())?;
        let workdir = validate_workdir(self.workdir.as_deref())?;
        let files = validate_files(self.files.as_deref().unwrap_or(&[]), policy.max_files)?;
        let limits = self.limits.unwrap_or_default().resolve(&policy.defaults);
        limits.check(&policy.maxima, "limits.")?;
        let network = self.network.unwrap_or(false);
        if network && !policy.allow_network {
            return Err(ValidationError {
                code: "network_not_allowed",
                field: "network".into(),
                message: "this server does not allow runs with a network".into(),
                maximum: None,
            });
        }
        Ok(ExecSpec {
            image,
            argv,
            stdin: self.stdin.clone().unwrap_or_default().into_bytes(),
            env,
            files,
            workdir,
            limits,
            network,
            cache: self.cache.unwrap_or(policy.default_cache),
            compile: None,
            runtime: None,
        })
    }

    /// [`ExecuteRequest::validate`] for a request that may name a `language` of `catalog`
    /// instead of an image and a command.
    pub fn validate_with(
        &self,
        policy: &Policy,
        catalog: &Catalog,
    ) -> Result<ExecSpec, ValidationError> {
        let Some(language) = self.language.as_deref() else {
            for (field, set) in [
                ("version", self.version.is_some()),
                ("code", self.code.is_some()),
                ("args", self.args.is_some()),
                ("compile_timeout_ms", self.compile_timeout_ms.is_some()),
            ] {
                if set {
                    return Err(ValidationError::invalid(
                        field,
                        format!("{field} goes with language"),
                    ));
                }
            }
            return self.validate(policy);
        };
        for (field, set) in [
            ("image", self.image.is_some()),
            ("command", self.command.is_some()),
            ("argv", self.argv.is_some()),
        ] {
            if set {
                return Err(ValidationError::invalid(
                    field,
                    format!("give either language or {field}: the runtime supplies the image and the commands"),
                ));
            }
        }
        let Some(rt) = catalog.find(language, self.version.as_deref()) else {
            let known = catalog.find(language, None).is_some();
            return Err(ValidationError {
                code: "unknown_runtime",
                field: if known { "version" } else { "language" }.into(),
                message: match (&self.version, known) {
                    (Some(v), true) => format!("runtime {language} has no version matching {v:?}; GET /api/v1/runtimes lists them"),
                    _ => format!("no runtime {language:?}; GET /api/v1/runtimes lists them"),
                },
                maximum: None,
            });
        };
        let mut files = self.files.clone().unwrap_or_default();
        match &self.code {
            Some(code) => files.insert(
                0,
                FileSpec {
                    path: Some(rt.source_file.clone()),
                    content: code.clone(),
                    ..FileSpec::default()
                },
            ),
            // As Piston does: the first file is the program.
            None if !files.is_empty() => files[0].path = Some(rt.source_file.clone()),
            None => {
                return Err(ValidationError::missing(
                    "code",
                    "code (or files, the first being the program) is required with language",
                ))
            }
        }
        let mut argv = rt.run.clone();
        argv.extend(self.args.iter().flatten().cloned());
        let policy = Policy {
            defaults: rt.limits.resolve(&policy.defaults),
            ..policy.clone()
        };
        let plain = ExecuteRequest {
            image: Some(rt.image.clone()),
            argv: Some(argv),
            files: Some(files),
            language: None,
            version: None,
            code: None,
            args: None,
            compile_timeout_ms: None,
            ..self.clone()
        };
        let mut spec = plain.validate(&policy)?;
        if let Some(compile) = &rt.compile {
            let timeout_ms = self.compile_timeout_ms.unwrap_or(rt.compile_timeout_ms);
            let max = policy.maxima.timeout_ms;
            if timeout_ms == 0 {
                return Err(ValidationError::invalid(
                    "compile_timeout_ms",
                    "compile_timeout_ms must be at least 1",
                ));
            }
            if timeout_ms > max {
                return Err(ValidationError {
                    code: "limit_exceeded",
                    field: "compile_timeout_ms".into(),
                    message: format!(
                        "compile_timeout_ms is {timeout_ms}, above the server's maximum of {max}"
                    ),
                    maximum: Some(max.into()),
                });
            }
            spec.compile = Some(CompileSpec {
                argv: compile.clone(),
                timeout_ms,
            });
        }
        spec.runtime = Some((rt.name.clone(), rt.version.clone()));
        Ok(spec)
    }
}

fn no_nul(field: &str, s: &str) -> Result<(), ValidationError> {
    if s.contains('\0') {
        return Err(ValidationError::invalid(
            field,
            format!("{field} contains a NUL byte"),
        ));
    }
    Ok(())
}

fn validate_image(image: &str) -> Result<String, ValidationError> {
    let bad = image.is_empty()
        || image.len() > 255
        || image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii());
    if bad {
        return Err(ValidationError::invalid(
            "image",
            "image must be a Docker image reference such as kiln/python or debian:bookworm",
        ));
    }
    Ok(image.to_owned())
}

fn validate_argv(argv: &[String]) -> Result<Vec<String>, ValidationError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ValidationError::invalid(
            "argv",
            "argv must name a program in argv[0]",
        ));
    }
    if argv.len() > MAX_ARGS {
        return Err(ValidationError::invalid(
            "argv",
            format!(
                "argv has {} entries; at most {MAX_ARGS} are allowed",
                argv.len()
            ),
        ));
    }
    for (i, a) in argv.iter().enumerate() {
        no_nul(&format!("argv[{i}]"), a)?;
    }
    Ok(argv.to_vec())
}

fn validate_env(
    env: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, ValidationError> {
    let Some(env) = env else {
        return Ok(Vec::new());
    };
    if env.len() > MAX_ENV {
        return Err(ValidationError::invalid(
            "env",
            format!(
                "env has {} variables; at most {MAX_ENV} are allowed",
                env.len()
            ),
        ));
    }
    for (k, v) in env {
        let field = format!("env.{k}");
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ValidationError::invalid(
                field,
                "variable names must be non-empty and contain neither '=' nor NUL",
            ));
        }
        no_nul(&field, v)?;
    }
    Ok(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn validate_workdir(workdir: Option<&str>) -> Result<String, ValidationError> {
    let Some(w) = workdir else {
        return Ok(DEFAULT_WORKDIR.to_owned());
    };
    let err = |m: &str| ValidationError::invalid("workdir", m.to_owned());
    no_nul("workdir", w)?;
    if !w.starts_with('/') {
        return Err(err("workdir must be an absolute path"));
    }
    if w.len() > MAX_PATH || w.contains(',') || w.contains(':') {
        return Err(err("workdir must be a plain path without ',' or ':'"));
    }
    let parts = normal_components(w).ok_or_else(|| err("workdir must not contain '..'"))?;
    if parts.is_empty() {
        return Err(err("workdir must not be the root directory"));
    }
    let norm = format!("/{}", parts.join("/"));
    if RESERVED_DIRS
        .iter()
        .any(|r| norm == *r || norm.starts_with(&format!("{r}/")))
    {
        return Err(err("workdir must not be under /proc, /sys, /dev or /.kiln"));
    }
    Ok(norm)
}

/// The components of a path with `.` and empty ones dropped; `None` if any is `..`.
fn normal_components(p: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn validate_files(
    files: &[crate::FileSpec],
    max_files: usize,
) -> Result<Vec<crate::ResolvedFile>, ValidationError> {
    if files.len() > max_files {
        return Err(ValidationError::invalid(
            "files",
            format!(
                "{} files given; at most {max_files} are allowed",
                files.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let field = format!("files[{i}].path");
        let path = f
            .path
            .as_deref()
            .ok_or_else(|| ValidationError::missing(field.clone(), "each file needs a path"))?;
        let path = validate_file_path(&field, path)?;
        if !seen.insert(path.clone()) {
            return Err(ValidationError::invalid(
                field,
                format!("{path} is given twice"),
            ));
        }
        let content = match f.encoding {
            Encoding::Utf8 => f.content.clone().into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&f.content)
                .map_err(|e| {
                    ValidationError::invalid(
                        format!("files[{i}].content"),
                        format!("content is not valid base64: {e}"),
                    )
                })?,
        };
        let mode = validate_mode(&format!("files[{i}].mode"), f.mode.as_ref())?;
        out.push(crate::ResolvedFile {
            path,
            mode,
            content,
        });
    }
    // A file may not also be a directory of another file (`a` and `a/b`).
    for p in &seen {
        if seen
            .range(format!("{p}/")..)
            .next()
            .is_some_and(|q| q.starts_with(&format!("{p}/")))
        {
            return Err(ValidationError::invalid(
                "files",
                format!("{p} is both a file and a directory"),
            ));
        }
    }
    Ok(out)
}

fn validate_file_path(field: &str, path: &str) -> Result<String, ValidationError> {
    let err = |m: &str| ValidationError::invalid(field, format!("{m}: {path:?}"));
    no_nul(field, path)?;
    if path.starts_with('/') {
        return Err(err("file paths must be relative to the working directory"));
    }
    if path.len() > MAX_PATH {
        return Err(err("file path is too long"));
    }
    let parts = normal_components(path).ok_or_else(|| err("file paths must not contain '..'"))?;
    if parts.is_empty() {
        return Err(err("file path names no file"));
    }
    if parts.iter().any(|c| c.len() > 255) {
        return Err(err("a file path component is longer than 255 bytes"));
    }
    if path.ends_with('/') {
        return Err(err("file path names a directory"));
    }
    Ok(parts.join("/"))
}

fn validate_mode(field: &str, mode: Option<&FileMode>) -> Result<u32, ValidationError> {
    let mode = match mode {
        None => return Ok(0o644),
        Some(FileMode::Number(n)) => *n,
        Some(FileMode::Octal(s)) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8).map_err(|_| {
                ValidationError::invalid(field, format!("mode {s:?} is not an octal number"))
            })?
        }
    };
    if mode > 0o777 {
        return Err(ValidationError::invalid(
            field,
            format!("mode {mode:o} has bits beyond 0777"),
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests;
