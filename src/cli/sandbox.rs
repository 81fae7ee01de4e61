//! `tdsguard sandbox --listen ADDR --data FILE`: run the embedded stand-in
//! server alone until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::sandbox::{Sandbox, SandboxOptions, TlsSource};

/// Arguments of `tdsguard sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on, e.g. 127.0.0.1:1433.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// SQLite file of the default database (created when missing).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
}

/// Runs the sandbox with the logins and database of `[sandbox]` in the
/// configuration.
pub fn run(config: &Config, args: &SandboxArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config, args))?;
    Ok(ExitCode::SUCCESS)
}

fn options(config: &Config, args: &SandboxArgs) -> SandboxOptions {
    let sandbox = &config.sandbox;
    let dir = args
        .data
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    SandboxOptions {
        listen: args.listen,
        data_file: args.data.clone(),
        users: sandbox.users.clone(),
        database: sandbox.database.clone(),
        allow_plaintext: sandbox.allow_plaintext,
        routing: None,
        tls: TlsSource::SelfSigned { dir },
    }
}

async fn serve(config: &Config, args: &SandboxArgs) -> anyhow::Result<()> {
    let handle = Sandbox::start(options(config, args))
        .await
        .context("starting the sandbox")?;
    info!(listen.addr = %handle.addr(), "sandbox listening");
    wait_for_stop().await?;
    handle.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_stop() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
