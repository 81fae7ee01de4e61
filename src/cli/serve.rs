//! `tdsguard serve [--config proxy.toml] [--listen ADDR]`, the default
//! command: runs the proxy until Ctrl-C or SIGTERM, then drains open
//! connections for `listen.shutdown_grace_ms`.
//!
//! With `upstream.mode = "embedded"` the stand-in server is started in
//! process on a free loopback port and the proxy relays to it over TLS,
//! verifying the certificate the sandbox generated.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tracing::{info, warn};

use crate::cli::{init_logging, load_config, Cli, EXIT_CONFIG};
use crate::config::{ClientTls, Config, Overrides, UpstreamMode};
use crate::relay::upstream::Target;
use crate::relay::{Listener, Upstream};
use crate::sandbox::{Sandbox, SandboxHandle, SandboxOptions};

/// Arguments of `tdsguard serve`.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to accept applications on, above `listen.address`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// Loads the configuration (exit code 78 when it is invalid, before any
/// listener starts), starts logging and runs the proxy.
pub fn run(cli: &Cli, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        listen_address: args.listen,
        log_level: cli.log_level.clone(),
    };
    let Some(config) = load_config(cli, &overrides) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    init_logging(&config.log.level, config.log.format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the proxy until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    warn_weaker_security(&config);
    let (upstream, sandbox) = upstream(&config).await?;
    let target = upstream.target.clone();
    let listener = Listener::bind(&config, upstream)
        .await
        .context("starting the listener")?;
    info!(
        listen.addr = %listener.local_addr()?,
        listen.tls = ?config.listen.tls,
        upstream.addr = %target,
        upstream.encryption = ?config.upstream.encryption,
        "tdsguard listening"
    );
    listener.run(wait_for_stop()).await;
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    Ok(())
}

fn warn_weaker_security(config: &Config) {
    if config.upstream.trust_server_certificate {
        warn!("upstream.trust_server_certificate = true: the server's certificate is not verified");
    }
    if config.listen.tls == ClientTls::Off && !config.listen.address.ip().is_loopback() {
        warn!(
            listen.addr = %config.listen.address,
            "listen.tls = \"off\" on a non-loopback address: logins cross the network in plaintext"
        );
    }
}

/// The server to relay to; for the embedded mode, the sandbox it started.
async fn upstream(config: &Config) -> anyhow::Result<(Upstream, Option<SandboxHandle>)> {
    if config.upstream.mode == UpstreamMode::Server {
        return Ok((Upstream::from_config(config), None));
    }
    let sandbox = Sandbox::start(SandboxOptions::embedded(config))
        .await
        .context("starting the embedded sandbox")?;
    info!(
        listen.addr = %sandbox.addr(),
        "embedded sandbox listening (a stand-in for tests and demos, not a database for real data)"
    );
    let upstream = Upstream {
        target: Target {
            host: sandbox.addr().ip().to_string(),
            port: sandbox.addr().port(),
        },
        ca_file: sandbox.cert_pem_path().map(Path::to_path_buf),
    };
    Ok((upstream, Some(sandbox)))
}

#[cfg(unix)]
async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};

    let Ok(mut term) = signal(SignalKind::terminate()) else {
        warn!("cannot watch SIGTERM; stop with Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}

#[cfg(not(unix))]
async fn wait_for_stop() {
    let _ = tokio::signal::ctrl_c().await;
}
