use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kiln::config::Config;

/// Kiln: run untrusted code in fresh, locked-down sandboxes behind an HTTP API.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (HTTP API on :8080 by default).
    #[command(after_help = CONFIG_HELP)]
    Serve(ServeArgs),
    /// Run one command through a Kiln gateway and exit with its exit code.
    Run(kiln::client::RunArgs),
    /// Measure Kiln (cold and warm) against docker run, the bare Docker API and docker exec,
    /// side by side; then warm concurrency, sustained rate and idle pooled memory.
    Bench(kiln::bench::BenchArgs),
    /// Print the SHA-256 of an API key (read from stdin) for `[[auth.keys]] sha256`.
    HashKey,
}

const CONFIG_HELP: &str = "\
Configuration is read from a TOML file (`--config`), then from `KILN__SECTION__KEY=value`\n\
environment variables, then from the flags below and `--set section.key=value`.\n\
\n\
Sections and keys (defaults in brackets):\n\
  [server]  listen [\"0.0.0.0:8080\"], max_body_bytes [16777216], max_concurrent [8],\n\
            queue_size [64], queue_timeout_ms [30000], shutdown_grace_ms [30000], max_batch [32],\n\
            header_timeout_ms [10000], body_timeout_ms [30000], max_connections [4096]\n\
  [docker]  host [\"unix:///var/run/docker.sock\"], init_path [kiln-init beside this binary],\n\
            user [\"65534:65534\"], gateway_id [\"kiln\"], pull_timeout_ms [60000], kill_grace_ms [2000],\n\
            channel [\"socket\" or \"attach\"], channel_dir [\"/run/kiln\"]\n\
  [limits.default] and [limits.max]: timeout_ms [10000 / 300000], memory_mb [256 / 4096],\n\
            cpus [1.0 / 2.0], pids [64 / 1024], output_bytes [1048576 / 67108864], tmp_mb [64 / 1024]\n\
  [limits]  max_files [1000]\n\
  [network] allow [false]: whether a request may ask for `\"network\": true`\n\
  [images]  required [[\"kiln/busybox\"]]: images /ready checks for\n\
  [pool]    enabled [true], on_demand [true], on_demand_max [4], max_on_demand_pools [8],\n\
            max_pooled [32], max_pooled_memory_mb [8192], refill_parallelism [2],\n\
            max_age_ms [600000], shrink_after_ms [30000], forget_after_ms [300000]\n\
  [[pool.pools]] image, name, workdir, limits {memory_mb, cpus, pids, tmp_mb}, network,\n\
            min [2], max [8], thp [unset | \"allow\" | \"disable\"];\n\
            default: kiln/busybox and kiln/python at the default limits\n\
  [cache]   default_mode [\"off\" | \"use\" | \"refresh\"], l1_max_bytes [67108864], l1_ttl_ms [300000],\n\
            l2_path [\"/var/lib/kiln/cache.redb\"; \"\": no L2], l2_max_bytes [1073741824],\n\
            l2_ttl_ms [604800000], redis_url [unset: no L3], redis_timeout_ms [50],\n\
            redis_ttl_ms [86400000], image_id_ttl_ms [1000]\n\
  [auth]    keys [none: no authentication]: [{name, sha256 (kiln hash-key), rate_per_sec [10],\n\
            burst [20], max_concurrent [8], admin [false]}]\n\
  [runtimes] path [the built-in catalog, config/runtimes.toml]\n\
  [memory]  ksm [\"on\" | \"off\"], ksm_host [\"manage\" | \"leave\"], ksm_pages_to_scan [1000],\n\
            ksm_sleep_ms [20], thp [\"leave\" | \"madvise\" | \"always\" | \"never\"],\n\
            sandbox_thp [\"disable\" | \"allow\"], zram [\"off\" | \"on\"], zram_size_mb [2048],\n\
            zram_algorithm [\"lz4\"], zram_priority [100], page_out_after_ms [5000], sysfs [\"/sys\"]\n\
  [judge0]  store_path [\"/var/lib/kiln/judge0.redb\"; \"\": in memory only], callbacks [true]\n\
";

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen).
    #[arg(long, env = "KILN_LISTEN")]
    listen: Option<String>,
    /// Port to listen on, on all interfaces (overrides the port of server.listen).
    #[arg(long, env = "KILN_PORT")]
    port: Option<u16>,
    /// Docker engine address (docker.host).
    #[arg(long, env = "KILN_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Path of the static kiln-init binary (docker.init_path).
    #[arg(long, env = "KILN_INIT_PATH")]
    init_path: Option<PathBuf>,
    /// Runs at once (server.max_concurrent).
    #[arg(long, env = "KILN_MAX_CONCURRENT")]
    max_concurrent: Option<usize>,
    /// Runs waiting for a slot before 503 (server.queue_size).
    #[arg(long, env = "KILN_QUEUE_SIZE")]
    queue_size: Option<usize>,
    /// Allow requests to ask for a network (network.allow).
    #[arg(long, env = "KILN_ALLOW_NETWORK")]
    allow_network: Option<bool>,
    /// Any key, e.g. `--set limits.max.memory_mb=1024`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut sets = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                sets.push(format!("{k}={}", toml_string(&v)));
            }
        };
        put("server.listen", self.listen.clone());
        if let Some(port) = self.port {
            put("server.listen", Some(format!("0.0.0.0:{port}")));
        }
        put("docker.host", self.docker_host.clone());
        put(
            "docker.init_path",
            self.init_path.as_ref().map(|p| p.display().to_string()),
        );
        let mut sets_raw = Vec::new();
        if let Some(n) = self.max_concurrent {
            sets_raw.push(format!("server.max_concurrent={n}"));
        }
        if let Some(n) = self.queue_size {
            sets_raw.push(format!("server.queue_size={n}"));
        }
        if let Some(b) = self.allow_network {
            sets_raw.push(format!("network.allow={b}"));
        }
        sets.extend(sets_raw);
        sets.extend(self.set.iter().cloned());
        Ok(Config::load(
            self.config.as_deref(),
            std::env::vars(),
            &sets,
        )?)
    }
}

/// Quotes a string for a TOML override so that a path or address is never read as a number.
fn toml_string(s: &str) -> String {
    // A JSON string literal is also a valid TOML basic string.
    serde_json::Value::String(s.to_owned()).to_string()
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if std::env::var("KILN_LOG_FORMAT").as_deref() == Ok("json") {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            let result = rt.block_on(async {
                let config = args.load().context("configuration")?;
                kiln::serve::start(config, true).await?.wait().await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kiln serve: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => rt.block_on(kiln::client::run(args)),
        Command::HashKey => {
            let mut key = String::new();
            if std::io::stdin().read_line(&mut key).is_err() || key.trim().is_empty() {
                eprintln!("kiln hash-key: give the key on stdin");
                return ExitCode::FAILURE;
            }
            println!("{}", kiln::http::hash_key(key.trim()));
            ExitCode::SUCCESS
        }
        Command::Bench(args) => {
            if std::env::var_os("KILN_LOG").is_some() {
                init_tracing();
            }
            match rt.block_on(kiln::bench::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kiln bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the command line (unique names, valid relations), which otherwise
    /// fail only when the command is run.
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
