//! `tdsguard bench`: measures what tdsguard costs against the byte-copy
//! relay and the upstream itself, on this machine (see `crate::bench`).
//!
//! The upstream is the embedded sandbox unless `--server HOST:PORT` names
//! one; its login comes from `TDSGUARD_BENCH_USER`, `TDSGUARD_BENCH_PASSWORD`
//! and optionally `TDSGUARD_BENCH_DATABASE`, never from arguments. The
//! proxy runs with the configuration of `--config` / `proxy.toml` / the
//! `TDSGUARD_*` environment, on an ephemeral loopback port.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tiberius::EncryptionLevel;

use crate::bench::{self, scenarios, BenchOptions, ServerTarget};
use crate::cli::{Cli, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{Config, Overrides, Source};

/// Environment variables of the bench's own login; kept out of the
/// configuration layers, which reject unknown `TDSGUARD_*` keys.
const ENV_USER: &str = "TDSGUARD_BENCH_USER";
const ENV_PASSWORD: &str = "TDSGUARD_BENCH_PASSWORD";
const ENV_DATABASE: &str = "TDSGUARD_BENCH_DATABASE";
const ENV_BENCH_PREFIX: &str = "TDSGUARD_BENCH_";

/// Smoke runs: connections for the connection-scale step and rows of the
/// large SELECT.
const SMOKE_CONNECTIONS: usize = 4;
const SMOKE_ROWS: u32 = 200;

/// TLS the load generator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientEncryption {
    /// Encrypt the login only (ENCRYPT_OFF).
    Off,
    /// Full TLS (ENCRYPT_REQ).
    Required,
    /// TDS 8.0 strict: TLS before PRELOGIN.
    Strict,
    /// No TLS at all (ENCRYPT_NOT_SUP).
    NotSupported,
}

impl ClientEncryption {
    fn level(self) -> EncryptionLevel {
        match self {
            ClientEncryption::Off => EncryptionLevel::Off,
            ClientEncryption::Required => EncryptionLevel::Required,
            ClientEncryption::Strict => EncryptionLevel::Strict,
            ClientEncryption::NotSupported => EncryptionLevel::NotSupported,
        }
    }
}

/// Arguments of `tdsguard bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run (comma-separated); all when absent. Names:
    /// small, select_100k, select_100k_enc4, insert_enc4, insert_enc16,
    /// value_1mib, login.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub scenario: Vec<String>,

    /// Concurrent connections, one worker each (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,64",
        value_name = "N"
    )]
    pub concurrency: Vec<usize>,

    /// Seconds per target for each scenario and concurrency.
    #[arg(long, default_value_t = 6.0, value_name = "SECONDS")]
    pub duration: f64,

    /// Requests per target instead of a duration.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,

    /// Turns the three targets take, each with its share of the budget.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: u32,

    /// Upstream server instead of the embedded sandbox (login from
    /// TDSGUARD_BENCH_USER / TDSGUARD_BENCH_PASSWORD).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,

    /// TLS the load generator asks for, on every target.
    #[arg(long, value_enum, default_value_t = ClientEncryption::Required)]
    pub client_encryption: ClientEncryption,

    /// Worker threads of the runtime that carries the relays.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub proxy_threads: usize,

    /// Connection-scale mode: N idle logged-in connections through tdsguard.
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,

    /// CI mode: tiny counts, every runnable scenario once, outputs written.
    #[arg(long)]
    pub smoke: bool,

    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write an SVG plot of throughput and latency.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `tdsguard bench`: exit 0 when every scenario that could run ran,
/// 1 when one failed or an output could not be written, 78 on a bad
/// configuration.
pub fn run(cli: &Cli, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(cli) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let options = match options(args, config) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("tdsguard bench: {message}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    let report = bench::run(&options)?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.plot {
        bench::plot::write_svg(&report, path)?;
    }
    let failed = report
        .scenarios
        .iter()
        .any(|s| s.status.starts_with("failed"));
    Ok(if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// The proxy configuration, from the same layers as `serve`, without the
/// bench's own variables.
fn load_config(cli: &Cli) -> Option<Config> {
    let mut source = Source::from_process(cli.config.as_deref());
    source
        .env
        .retain(|(name, _)| !name.starts_with(ENV_BENCH_PREFIX));
    let overrides = Overrides {
        listen_address: None,
        log_level: cli.log_level.clone(),
    };
    match Config::load(&source, &overrides) {
        Ok(config) => Some(config),
        Err(err) => {
            eprintln!("tdsguard: configuration error: {err}");
            None
        }
    }
}

fn options(args: &BenchArgs, config: Config) -> Result<BenchOptions, String> {
    let server = args.server.as_deref().map(server_target).transpose()?;
    let duration = Duration::try_from_secs_f64(args.duration)
        .map_err(|_| format!("--duration {} is not a number of seconds", args.duration))?;
    let mut options = BenchOptions {
        scenarios: args.scenario.clone(),
        concurrency: args.concurrency.clone(),
        duration,
        requests: args.requests,
        rounds: args.rounds.max(1),
        server,
        encryption: args.client_encryption.level(),
        proxy_threads: args.proxy_threads.max(1),
        connections: args.connections,
        run_scenarios: args.connections.is_none(),
        select_rows: scenarios::SELECT_ROWS,
        config,
        progress: !args.no_progress,
        command: command_line(),
    };
    if args.smoke {
        smoke(&mut options);
    }
    Ok(options)
}

/// Smoke mode: one request per target, one round, a small table, and a
/// few connections for the connection-scale step.
fn smoke(options: &mut BenchOptions) {
    options.concurrency = vec![1];
    options.requests = Some(1);
    options.rounds = 1;
    options.select_rows = SMOKE_ROWS;
    options.run_scenarios = true;
    options.connections = Some(
        options
            .connections
            .unwrap_or(SMOKE_CONNECTIONS)
            .min(SMOKE_CONNECTIONS),
    );
}

fn server_target(text: &str) -> Result<ServerTarget, String> {
    let addr: SocketAddr = text
        .to_socket_addrs()
        .map_err(|e| format!("--server {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--server {text}: no address"))?;
    let user = std::env::var(ENV_USER).map_err(|_| format!("--server needs {ENV_USER}"))?;
    let password =
        std::env::var(ENV_PASSWORD).map_err(|_| format!("--server needs {ENV_PASSWORD}"))?;
    Ok(ServerTarget {
        addr,
        user,
        password,
        database: std::env::var(ENV_DATABASE).ok(),
    })
}

/// The command line as run, for the report (no secrets are arguments).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    match args.first() {
        Some(first) if first.ends_with("tdsguard") => {
            let mut words = vec!["tdsguard".to_owned()];
            words.extend(args.into_iter().skip(1));
            words.join(" ")
        }
        _ => args.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Command;

    fn parse(args: &[&str]) -> BenchArgs {
        let cli = Cli::try_parse_from(args).expect("parses");
        match cli.command {
            Some(Command::Bench(args)) => args,
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_lists_parse() {
        let args = parse(&["tdsguard", "bench"]);
        assert_eq!(args.concurrency, vec![1, 16, 64]);
        assert_eq!(args.client_encryption, ClientEncryption::Required);
        let args = parse(&[
            "tdsguard",
            "bench",
            "--concurrency",
            "2,8",
            "--scenario",
            "small,login",
        ]);
        assert_eq!(args.concurrency, vec![2, 8]);
        assert_eq!(args.scenario, vec!["small", "login"]);
    }

    #[test]
    fn smoke_shrinks_everything() {
        let config = crate::config::Config::load(
            &Source {
                file: None,
                env: vec![],
            },
            &Overrides::default(),
        )
        .expect("default config");
        let options = options(&parse(&["tdsguard", "bench", "--smoke"]), config).expect("options");
        assert_eq!(options.requests, Some(1));
        assert_eq!(options.concurrency, vec![1]);
        assert_eq!(options.connections, Some(SMOKE_CONNECTIONS));
        assert!(options.run_scenarios);
    }
}
