//! `tdsguard serve [--config proxy.toml] [--listen ADDR]`, the default
//! command: runs the proxy until Ctrl-C or SIGTERM, then drains open
//! connections for `listen.shutdown_grace_ms`.
//!
//! With `upstream.mode = "embedded"` the stand-in server is started in
//! process on a free loopback port and the proxy relays to it over TLS,
//! verifying the certificate the sandbox generated.
//!
//! With `[[columns]]` mapped, the relay encrypts them: the company key comes
//! from `keys.company_key_file`; in front of the embedded sandbox a demo key
//! and the sandbox's data key are provisioned when missing
//! ([`provision_demo`]). With a real upstream nothing is generated.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use crate::cli::{init_logging, load_config, Cli, EXIT_CONFIG};
use crate::config::{ClientTls, Config, Overrides, UpstreamMode};
use crate::crypto::demo::provision_demo;
use crate::crypto::session_keys::KeySource;
use crate::crypto::{CompanyKey, DataKeyCache, KeyTable};
use crate::relay::columns::ColumnEncryption;
use crate::relay::upstream::Target;
use crate::relay::{Listener, PassThrough, RewriterFactory, Upstream};
use crate::rewrite::{NoKeyCipher, Rewriter};
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
    let rewriters = rewriters(&config, sandbox.as_ref()).await?;
    let listener = Listener::bind_with(&config, upstream, rewriters)
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

/// Column encryption when `[[columns]]` are mapped; otherwise the relay
/// stays a pure pass-through.
pub async fn rewriters(
    config: &Config,
    sandbox: Option<&SandboxHandle>,
) -> anyhow::Result<Arc<dyn RewriterFactory>> {
    if config.columns.is_empty() {
        return Ok(Arc::new(PassThrough));
    }
    let key_file = match sandbox {
        Some(sandbox) => {
            provision_demo(config, sandbox.addr(), sandbox.cert_pem_path())
                .await
                .context("provisioning the demo keys in the embedded sandbox")?
                .key_file
        }
        None => config
            .keys
            .company_key_file
            .clone()
            .context("keys.company_key_file is required for [[columns]]")?,
    };
    let company = CompanyKey::load(&key_file)
        .with_context(|| format!("loading the company key {}", key_file.display()))?;
    let table = KeyTable::new(&config.keys.key_table).context("keys.key_table")?;
    let keys = KeySource::new(table, Arc::new(company)).with_cache(Arc::new(DataKeyCache::new()));
    let rewriter = Rewriter::from_config(config, Arc::new(NoKeyCipher)).context("[[columns]]")?;
    info!(
        columns = config.columns.len(),
        key.fingerprint = %keys.fingerprint(),
        "column encryption on"
    );
    Ok(Arc::new(ColumnEncryption::new(Arc::new(rewriter), keys)))
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
