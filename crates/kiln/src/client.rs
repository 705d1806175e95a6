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
    /// Image to run in (or give --language).
    #[arg(long, short, required_unless_present = "language")]
    pub image: Option<String>,
    /// A runtime of the catalog (`python`, `c++`…): the program is the code of --code or
    /// --file, and the argv after `--` are its arguments.
    #[arg(long, short = 'l', conflicts_with_all = ["image", "command"])]
    pub language: Option<String>,
    /// The runtime's version selector (`3.x`, `*`).
    #[arg(long, requires = "language")]
    pub language_version: Option<String>,
    /// The program's source, for --language.
    #[arg(long, requires = "language", conflicts_with = "file")]
    pub code: Option<String>,
    /// A file holding the program's source, for --language.
    #[arg(long, requires = "language")]
    pub file: Option<std::path::PathBuf>,
    /// Run this line with /bin/sh -c instead of the argv after `--`.
    #[arg(long, short = 'c', conflicts_with = "argv")]
    pub command: Option<String>,
    /// Interactive: this process's stdin goes to the program as it comes, and its output is
    /// printed as it is produced (over the gateway's WebSocket).
    #[arg(long, short = 'I', conflicts_with_all = ["stdin", "json"])]
    pub interactive: bool,
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
    let limits = Some(LimitsRequest {
        timeout_ms: args.timeout_ms,
        memory_mb: args.memory_mb,
        cpus: args.cpus,
        ..LimitsRequest::default()
    });
    let env = (!env.is_empty()).then_some(env);
    let request = if let Some(language) = &args.language {
        let code = match (&args.code, &args.file) {
            (Some(code), _) => code.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
            (None, None) => return Err("give the program with --code or --file".into()),
        };
        ExecuteRequest {
            language: Some(language.clone()),
            version: args.language_version.clone(),
            code: Some(code),
            args: (!args.argv.is_empty()).then(|| args.argv.clone()),
            stdin,
            env,
            limits,
            ..ExecuteRequest::default()
        }
    } else {
        if args.command.is_none() && args.argv.is_empty() {
            return Err("give a program after `--`, or --command".into());
        }
        ExecuteRequest {
            image: args.image.clone(),
            command: args.command.clone(),
            argv: (!args.argv.is_empty()).then(|| args.argv.clone()),
            stdin,
            env,
            limits,
            ..ExecuteRequest::default()
        }
    };
    if args.interactive {
        return interactive(&args.url, &request)
            .await
            .map(|out| exit_code(&out));
    }
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
        let (stdout, stderr) = (
            exact(out.stdout_base64.as_deref()),
            exact(out.stderr_base64.as_deref()),
        );
        print_stream(&mut std::io::stdout(), &out.stdout, stdout.as_deref());
        print_stream(&mut std::io::stderr(), &out.stderr, stderr.as_deref());
        report_status(&out);
    }
    Ok(exit_code(&out))
}

fn report_status(out: &ExecuteResponse) {
    if out.status != kiln_api::RunStatus::Ok {
        eprintln!("kiln run: status {}", out.status.as_str());
    }
}

/// The program's exit code, 128 + the signal that killed it, or 125.
fn exit_code(out: &ExecuteResponse) -> u8 {
    match (out.exit_code, &out.signal) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => {
            let n = kiln_api::signal_number(sig).unwrap_or(0);
            128u8.saturating_add(u8::try_from(n).unwrap_or(0))
        }
        (None, None) => EXIT_GATEWAY,
    }
}

/// The run over the gateway's WebSocket: this process's stdin to the program as it comes (its
/// end as the program's end of stdin), the program's output printed as it is produced.
async fn interactive(base: &str, request: &ExecuteRequest) -> Result<ExecuteResponse, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let base = base.trim_end_matches('/');
    let url = match base.strip_prefix("http") {
        Some(rest) => format!("ws{rest}/api/v1/execute/ws"),
        None => format!("{base}/api/v1/execute/ws"),
    };
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let (mut tx, mut rx) = socket.split();
    let first = serde_json::to_string(request).expect("serialisable");
    let lost = |e: tokio_tungstenite::tungstenite::Error| format!("the session broke: {e}");
    tx.send(Message::text(first)).await.map_err(lost)?;
    // Stdin is read on a thread of its own: a blocking read must not hold up the output.
    let (input_tx, mut input) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if input_tx.blocking_send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut stdin_open = true;
    loop {
        tokio::select! {
            chunk = input.recv(), if stdin_open => {
                let msg = match chunk {
                    Some(bytes) => Message::binary(bytes),
                    None => {
                        stdin_open = false;
                        Message::text(r#"{"type":"stdin_eof"}"#)
                    }
                };
                tx.send(msg).await.map_err(lost)?;
            }
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => {
                        return Err("the gateway ended the session without a result".into())
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(lost(e)),
                };
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("unexpected message: {e}"))?;
                let piece = v["text"].as_str().unwrap_or("").as_bytes();
                match v["type"].as_str() {
                    Some("stdout") => print_stream(&mut std::io::stdout(), "", Some(piece)),
                    Some("stderr" | "compile_stdout" | "compile_stderr") => {
                        print_stream(&mut std::io::stderr(), "", Some(piece))
                    }
                    Some("result") => {
                        let out: ExecuteResponse = serde_json::from_value(v["result"].clone())
                            .map_err(|e| format!("unexpected result: {e}"))?;
                        report_status(&out);
                        return Ok(out);
                    }
                    Some("error") => {
                        let b: ErrorBody = serde_json::from_value(v)
                            .map_err(|e| format!("unexpected error: {e}"))?;
                        return Err(format!("{}: {}", b.error.code, b.error.message));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Writes `raw` when given, else the exact bytes where the gateway had to send them in base64,
/// else `text`.
fn print_stream(w: &mut impl Write, text: &str, raw: Option<&[u8]>) {
    let _ = w.write_all(raw.unwrap_or(text.as_bytes()));
    let _ = w.flush();
}

/// The exact bytes of a stream: its base64 form where the gateway had to send one.
fn exact(base64: Option<&str>) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64.and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
}
