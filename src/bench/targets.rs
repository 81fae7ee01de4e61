//! The three places the load generator sends the same requests to: the
//! upstream itself, the byte-copy relay in front of it and tdsguard's relay
//! in front of it. The relays run in process on their own runtime, so
//! their CPU time can be told apart from the load generator's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bench::byte_copy::ByteCopy;
use crate::bench::BenchError;
use crate::config::{ColumnConfig, Config, UpstreamMode};
use crate::relay::upstream::Target;
use crate::relay::{Listener, Upstream};
use crate::sandbox::{Sandbox, SandboxHandle, SandboxOptions};

/// Where a measurement's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Straight to the upstream.
    Direct,
    /// Through [`ByteCopy`].
    ByteCopy,
    /// Through tdsguard's relay.
    Tdsguard,
}

impl TargetKind {
    pub const ALL: [TargetKind; 3] = [
        TargetKind::Direct,
        TargetKind::ByteCopy,
        TargetKind::Tdsguard,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::ByteCopy => "byte-copy",
            TargetKind::Tdsguard => "tdsguard",
        }
    }
}

/// The embedded sandbox, started on the upstream runtime.
pub async fn start_sandbox(
    runtime: &Handle,
    dir: &Path,
    password: &str,
) -> Result<SandboxHandle, BenchError> {
    let options = SandboxOptions::new(dir.join("bench.sqlite"), password);
    runtime
        .spawn(Sandbox::start(options))
        .await
        .map_err(|e| BenchError::Setup(format!("sandbox task: {e}")))?
        .map_err(|e| BenchError::Setup(format!("starting the sandbox: {e}")))
}

/// Stops the sandbox on its runtime.
pub async fn stop_sandbox(runtime: &Handle, sandbox: SandboxHandle) {
    let _ = runtime.spawn(sandbox.shutdown()).await;
}

/// The byte-copy relay, started on the proxy runtime.
pub async fn start_byte_copy(
    runtime: &Handle,
    upstream: SocketAddr,
) -> Result<ByteCopy, BenchError> {
    runtime
        .spawn(ByteCopy::start(upstream))
        .await
        .map_err(|e| BenchError::Setup(format!("byte-copy task: {e}")))?
}

/// The proxy configuration of the tdsguard target: the user's, listening on
/// an ephemeral loopback port with its generated certificate in `dir`,
/// relaying to `upstream`, with `columns` mapped and, when given, the
/// company key `key_file`.
pub fn proxy_config(
    base: &Config,
    dir: &Path,
    columns: &[ColumnConfig],
    key_file: Option<&Path>,
) -> Config {
    let mut config = base.clone();
    config.listen.address = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.data_dir = dir.to_path_buf();
    config.upstream.mode = UpstreamMode::Server;
    config.columns.extend(columns.iter().cloned());
    if let Some(key_file) = key_file {
        config.keys.company_key_file = Some(key_file.to_path_buf());
    }
    config
}

/// Binds the relay with the rewriters `serve` would use for `config`:
/// column encryption when `[[columns]]` are mapped (keys from
/// `keys.company_key_file`), pass-through otherwise.
async fn bind(config: &Config, upstream: Upstream) -> Result<Listener, String> {
    let rewriters = crate::cli::serve::rewriters(config, None)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Listener::bind_with(config, upstream, rewriters)
        .await
        .map_err(|e| e.to_string())
}

/// tdsguard's relay running in process.
pub struct Proxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Binds and runs the relay on `runtime`, verifying the upstream with
    /// `ca_file` (the sandbox's certificate) or the configured CA.
    pub async fn start(
        runtime: &Handle,
        config: Config,
        upstream: SocketAddr,
        ca_file: Option<PathBuf>,
    ) -> Result<Proxy, BenchError> {
        let upstream = Upstream {
            target: Target {
                host: upstream.ip().to_string(),
                port: upstream.port(),
            },
            ca_file: ca_file.or_else(|| config.upstream.ca_file.clone()),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addr_rx) = oneshot::channel();
        let task = runtime.spawn(async move {
            let listener = match bind(&config, upstream).await {
                Ok(listener) => listener,
                Err(err) => {
                    let _ = bound.send(Err(err));
                    return;
                }
            };
            let _ = bound.send(listener.local_addr().map_err(|e| e.to_string()));
            listener
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let addr = addr_rx
            .await
            .map_err(|_| BenchError::Setup("proxy task ended".to_owned()))?
            .map_err(|e| BenchError::Setup(format!("starting tdsguard: {e}")))?;
        Ok(Proxy {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for open connections to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
