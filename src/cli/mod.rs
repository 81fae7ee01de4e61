//! Subcommands of the `tdsguard` binary. Each lives in its own module and is
//! reached through [`run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides, Source};

pub mod bench;
pub mod check;
pub mod dump;
pub mod sandbox;
pub mod serve;

/// A command failed while running.
pub const EXIT_FAILURE: u8 = 1;
/// The configuration could not be loaded (sysexits.h EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// An encrypting proxy for Microsoft SQL Server's TDS protocol.
#[derive(Debug, Parser)]
#[command(name = "tdsguard", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log level filter (RUST_LOG syntax), above the file and environment.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands. Without one, `serve` runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default command).
    Serve(serve::ServeArgs),
    /// Validate the configuration and exit.
    Check,
    /// Run the embedded stand-in server alone.
    Sandbox(sandbox::SandboxArgs),
    /// Measure what the proxy costs against a byte-copy relay and the server.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        listen_address: None,
        log_level: cli.log_level.clone(),
    };
    match cli.command {
        None => serve::run(&cli, &serve::ServeArgs::default()),
        Some(Command::Serve(ref args)) => serve::run(&cli, args),
        Some(Command::Check) => {
            let Some(config) = load_config(&cli, &overrides) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            check::run(&config)
        }
        Some(Command::Sandbox(ref args)) => {
            let Some(config) = load_config(&cli, &overrides) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            init_logging(&config.log.level, config.log.format);
            sandbox::run(&config, args)
        }
        Some(Command::Bench(ref args)) => bench::run(&cli, args),
    }
}

/// Loads the configuration, printing an error to stderr (before logging
/// starts) when it is invalid.
pub fn load_config(cli: &Cli, overrides: &Overrides) -> Option<Config> {
    let source = Source::from_process(cli.config.as_deref());
    match Config::load(&source, overrides) {
        Ok(config) => Some(config),
        Err(err) => {
            eprintln!("tdsguard: configuration error: {err}");
            None
        }
    }
}

/// Installs the tracing subscriber for a long-running command.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(err) = result {
        eprintln!("tdsguard: logging was already initialised: {err}");
    }
}
