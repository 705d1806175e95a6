//! `kiln run`: a small client of the HTTP API.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Args;
use kiln_api::{ErrorBody, ExecuteRequest, ExecuteResponse, LimitsRequest};

/// Exit code when the gateway refused or failed the request (as `docker run` uses 125).
const EXIT_GATEWAY: u8 = 125;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The gateway's address.
    #[arg(long, env = "KILN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Image to run in.
    #[arg(long, short)]
    pub image: String,
    /// Run this line with /bin/sh -c instead of the argv after `--`.
    #[arg(long, short = 'c', conflicts_with = "argv")]
    pub command: Option<String>,
    /// Environment variable NAME=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Send this process's stdin to the program.
    #[arg(long)]
    pub stdin: bool,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[arg(long)]
    pub memory_mb: Option<u64>,
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Print the whole JSON response instead of the program's output.
    #[arg(long)]
    pub json: bool,
    /// The program and its arguments.
    #[arg(last = true)]
    pub argv: Vec<String>,
}

/// Sends the run, prints its output, and returns the program's exit code (128 + signal when it
/// was killed, 125 when the gateway answered with an error).
pub async fn run(args: RunArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("kiln run: {msg}");
            ExitCode::from(EXIT_GATEWAY)
        }
    }
}

async fn run_inner(args: RunArgs) -> Result<u8, String> {
    let mut env = BTreeMap::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env {kv:?} is not NAME=VALUE"))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    let stdin = if args.stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Some(s)
    } else {
        None
    };
    if args.command.is_none() && args.argv.is_empty() {
        return Err("give a program after `--`, or --command".into());
    }
    let request = ExecuteRequest {
        image: Some(args.image.clone()),
        command: args.command.clone(),
        argv: (!args.argv.is_empty()).then(|| args.argv.clone()),
        stdin,
        env: (!env.is_empty()).then_some(env),
        limits: Some(LimitsRequest {
            timeout_ms: args.timeout_ms,
            memory_mb: args.memory_mb,
            cpus: args.cpus,
            ..LimitsRequest::default()
        }),
        ..ExecuteRequest::default()
    };
    let url = format!("{}/api/v1/execute", args.url.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .post(&url)
        .json(&request)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = res.status();
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| format!("{} ({}): {}", status, b.error.code, b.error.message))
            .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&body)));
        return Err(msg);
    }
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
    }
    let out: ExecuteResponse =
        serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))?;
    if !args.json {
        print_stream(
            &mut std::io::stdout(),
            &out.stdout,
            out.stdout_base64.as_deref(),
        );
        print_stream(
            &mut std::io::stderr(),
            &out.stderr,
            out.stderr_base64.as_deref(),
        );
        if out.status != kiln_api::RunStatus::Ok {
            eprintln!("kiln run: status {}", out.status.as_str());
        }
    }
    Ok(match (out.exit_code, &out.signal) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => 128u8.saturating_add(signal_number(sig)),
        (None, None) => EXIT_GATEWAY,
    })
}

/// Writes the exact bytes where the gateway had to send them in base64.
fn print_stream(w: &mut impl Write, text: &str, base64: Option<&str>) {
    use base64::Engine as _;
    let bytes = base64
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| text.as_bytes().to_vec());
    let _ = w.write_all(&bytes);
    let _ = w.flush();
}

fn signal_number(name: &str) -> u8 {
    (1..=64)
        .find(|n| kiln_api::signal_name(i32::from(*n)) == name)
        .unwrap_or(0)
}
