//! Subcommands of the `tdsguard` binary. Each lives in its own module and is
//! reached through [`run`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides, Source};

pub mod admin_client;
pub mod bench;
pub mod check;
pub mod dump;
pub mod init_db;
pub mod keygen;
pub mod rewrap;
pub mod rotate;
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
    /// Validate the configuration, print each mapped column's storage type and, with an
    /// administrator login, check the live schema and key table.
    Check(check::CheckArgs),

    /// Make a company key: an RSA-2048 key pair as a PKCS#8 PEM file (mode 0600).
    Keygen {
        /// Where to write the key; an existing file is never replaced.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },

    /// Decode a raw one-direction TDS byte stream, one line per message and token.
    Dump {
        /// The captured stream (raw TCP payload of one direction).
        file: PathBuf,
        /// Which peer sent the stream; guessed when absent.
        #[arg(long, value_name = "client|server")]
        from: Option<dump::Direction>,
        /// Re-encode every decoded message and fail at the first byte that differs.
        #[arg(long)]
        roundtrip: bool,
    },

    /// Run the embedded stand-in server alone.
    Sandbox(sandbox::SandboxArgs),

    /// Create the key table and the database's data key (administrator login from
    /// TDSGUARD_ADMIN_USER / TDSGUARD_ADMIN_PASSWORD or a prompt).
    InitDb {
        /// Database to initialise; the login's default database when absent.
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
        /// Discard existing data keys (values sealed under them stop decrypting).
        #[arg(long)]
        replace: bool,
    },

    /// Wrap every data key again under a new company key; no value changes.
    Rewrap {
        /// The new company key (PKCS#8 PEM, mode 0600).
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
        /// Database whose keys are rewrapped; the login's default database when absent.
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
        /// Keep the rows of the current company key next to the new ones.
        #[arg(long)]
        keep_old: bool,
    },

    /// Add a data key with the next id for new values; older ids keep decrypting.
    RotateDataKey {
        /// Database to rotate; the login's default database when absent.
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
    },
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
        Some(Command::Check(ref args)) => check::run(&cli, &overrides, args),
        Some(Command::Keygen { ref out }) => {
            keygen::keygen(out)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Dump {
            ref file,
            from,
            roundtrip,
        }) => run_dump(file, from, roundtrip),
        Some(Command::Sandbox(ref args)) => {
            let Some(config) = load_config(&cli, &overrides) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            init_logging(&config.log.level, config.log.format);
            sandbox::run(&config, args)
        }
        Some(Command::InitDb {
            ref database,
            replace,
        }) => run_key_command(&cli, &overrides, |config| {
            init_db::run(config, database.as_deref(), replace)
        }),
        Some(Command::Rewrap {
            ref new_key,
            ref database,
            keep_old,
        }) => run_key_command(&cli, &overrides, |config| {
            rewrap::run(config, database.as_deref(), new_key, keep_old)
        }),
        Some(Command::RotateDataKey { ref database }) => {
            run_key_command(&cli, &overrides, |config| {
                rotate::run(config, database.as_deref())
            })
        }
        Some(Command::Bench(ref args)) => bench::run(&cli, args),
    }
}

/// Loads the configuration and logging, then runs a key table command.
fn run_key_command(
    cli: &Cli,
    overrides: &Overrides,
    command: impl FnOnce(&Config) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let config = match admin_client::load_config(cli.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("tdsguard: configuration error: {err}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    init_logging(&config.log.level, config.log.format);
    command(&config)
}

fn run_dump(
    file: &Path,
    from: Option<dump::Direction>,
    roundtrip: bool,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let summary = dump::run(file, from, roundtrip, &mut out)?;
    out.flush()?;
    if let Some(failure) = &summary.failure {
        eprintln!("tdsguard dump: {failure}");
    }
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// The filter with tiberius switched off unless it names tiberius itself.
/// tiberius is only the key commands' and the demo's administrator client:
/// it logs every server error at ERROR, expected ones (a missing table)
/// included, and may log statement text at its debug levels; the commands
/// report the errors that matter themselves.
fn quiet_admin_client(directives: &str) -> String {
    match directives.contains("tiberius") {
        true => directives.to_owned(),
        false => format!("{directives},tiberius=off"),
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
    let directives = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| level.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(quiet_admin_client(&directives))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(quiet_admin_client(level)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_client_is_quiet_unless_named() {
        assert_eq!(quiet_admin_client("info"), "info,tiberius=off");
        assert_eq!(
            quiet_admin_client("debug,tiberius=warn"),
            "debug,tiberius=warn"
        );
    }
}
