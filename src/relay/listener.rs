//! Accepting application connections: one task per connection inside its
//! own span, at most `listen.max_connections` at once (further ones wait in
//! the backlog), and on shutdown no new connections while open ones get
//! `listen.shutdown_grace_ms` to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};

use crate::config::{ClientTls as ListenTls, Config, ListenConfig};
use crate::relay::budget::{self, RequestBudget};
use crate::relay::client_handshake::{ClientLegTls, ClientSettings};
use crate::relay::connection::{self, Settings};
use crate::relay::error::{Leg, RelayError};
use crate::relay::hook::{PassThrough, RewriterFactory};
use crate::relay::upstream::{Target, UpstreamSettings};
use crate::tls::certs;

/// Time an application has for PRELOGIN, TLS and LOGIN7. Drivers default
/// their login timeout to 15-30 s; 60 s leaves them the first word while
/// keeping idle sockets from holding a connection slot forever.
pub const CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Names the generated certificate is valid for: loopback only.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The server the proxy relays to.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub target: Target,
    /// CA file to trust instead of `upstream.ca_file` (the embedded
    /// sandbox's own certificate).
    pub ca_file: Option<PathBuf>,
}

impl Upstream {
    /// `upstream.host` and `upstream.port` of a `mode = "server"` config.
    pub fn from_config(config: &Config) -> Upstream {
        Upstream {
            target: Target {
                host: config.upstream.host.clone().unwrap_or_default(),
                port: config.upstream.port,
            },
            ca_file: config.upstream.ca_file.clone(),
        }
    }
}

/// A bound listener, not yet accepting.
pub struct Listener {
    tcp: TcpListener,
    settings: Arc<Settings>,
    limit: Arc<Semaphore>,
    grace: Duration,
}

impl Listener {
    /// Binds `listen.address` and prepares TLS toward the application.
    pub async fn bind(config: &Config, upstream: Upstream) -> Result<Listener, RelayError> {
        Self::bind_with(config, upstream, Arc::new(PassThrough)).await
    }

    /// [`bind`](Self::bind) with rewriters of the caller's choice.
    pub async fn bind_with(
        config: &Config,
        upstream: Upstream,
        rewriters: Arc<dyn RewriterFactory>,
    ) -> Result<Listener, RelayError> {
        let settings = settings(config, upstream, rewriters)?;
        let address = config.listen.address;
        let tcp = TcpListener::bind(address)
            .await
            .map_err(|source| RelayError::Bind { address, source })?;
        Ok(Listener {
            tcp,
            settings: Arc::new(settings),
            limit: Arc::new(Semaphore::new(config.listen.max_connections)),
            grace: Duration::from_millis(config.listen.shutdown_grace_ms),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        self.tcp
            .local_addr()
            .map_err(RelayError::io(Leg::Client, "reading the listen address"))
    }

    /// Accepts until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let addr = self.local_addr().ok();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        let mut next_id: u64 = 0;
        loop {
            while tasks.try_join_next().is_some() {}
            let accepted = tokio::select! {
                accepted = self.accept() => accepted,
                _ = &mut shutdown => break,
            };
            let Some((tcp, client_addr, permit)) = accepted else {
                continue;
            };
            next_id += 1;
            let span = info_span!(
                "conn",
                conn.id = next_id,
                client.addr = %client_addr,
                server.addr = tracing::field::Empty
            );
            let settings = Arc::clone(&self.settings);
            let task = async move {
                connection::serve(tcp, settings).await;
                drop(permit);
            };
            tasks.spawn(task.instrument(span));
        }
        drop(self.tcp);
        drain(tasks, self.grace, addr).await;
    }

    /// Waits for a free connection slot, then for a connection. `None`
    /// after a failed accept (e.g. out of file descriptors), after a pause.
    async fn accept(&self) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let permit = Arc::clone(&self.limit).acquire_owned().await.ok()?;
        match self.tcp.accept().await {
            Ok((tcp, addr)) => Some((tcp, addr, permit)),
            Err(err) => {
                warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                None
            }
        }
    }
}

async fn drain(mut tasks: JoinSet<()>, grace: Duration, addr: Option<SocketAddr>) {
    let open = tasks.len();
    info!(listen.addr = ?addr, open, grace_ms = grace.as_millis() as u64, "stopped accepting; draining");
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        info!(
            remaining = tasks.len(),
            "grace period over; closing remaining connections"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    info!(listen.addr = ?addr, "listener stopped");
}

fn settings(
    config: &Config,
    upstream: Upstream,
    rewriters: Arc<dyn RewriterFactory>,
) -> Result<Settings, RelayError> {
    let up = &config.upstream;
    Ok(Settings {
        client: ClientSettings {
            tls: config.listen.tls,
            server_tls: server_tls(&config.listen)?.map(Arc::new),
        },
        upstream: UpstreamSettings {
            encryption: up.encryption,
            ca_file: upstream.ca_file,
            trust_server_certificate: up.trust_server_certificate,
            connect_timeout: Duration::from_millis(up.connect_timeout_ms),
        },
        target: upstream.target,
        max_redirects: up.max_redirects,
        cancel_timeout: Duration::from_millis(up.cancel_timeout_ms),
        handshake_timeout: CLIENT_HANDSHAKE_TIMEOUT,
        log_connections: config.log.connections,
        rewriters,
        request_budget: RequestBudget::new(
            config.listen.request_memory_mib.saturating_mul(1 << 20),
            budget::DEFAULT_WAIT,
        ),
    })
}

/// The application leg's certificate: from files, or generated for
/// loopback use and kept in `data_dir`.
fn server_tls(listen: &ListenConfig) -> Result<Option<ClientLegTls>, RelayError> {
    if listen.tls == ListenTls::Off {
        return Ok(None);
    }
    let identity = match (&listen.cert_file, &listen.key_file) {
        (Some(cert), Some(key)) => certs::load_pem_files(cert, key),
        _ => {
            let names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
            info!(
                data_dir = %listen.data_dir.display(),
                "no listen.cert_file: using a self-signed certificate for loopback use"
            );
            certs::load_or_generate(&listen.data_dir, &names)
        }
    };
    let tls = identity.and_then(ClientLegTls::new);
    tls.map(Some).map_err(RelayError::tls(Leg::Client))
}
