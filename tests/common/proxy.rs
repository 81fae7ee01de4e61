//! Starting an in-process proxy for a test, in front of a given upstream.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tdsguard::config::{ClientTls, Config, Overrides, Source, UpstreamEncryption, UpstreamMode};
use tdsguard::relay::upstream::Target;
use tdsguard::relay::{Listener, Upstream};

/// A running proxy and what it needs to stop.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// A configuration with defaults, listening on a free loopback port, its
/// data in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let source = Source {
        file: None,
        env: vec![],
    };
    let mut config = Config::load(&source, &Overrides::default()).expect("default config");
    config.listen.address = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.data_dir = dir.to_path_buf();
    config.listen.tls = ClientTls::Optional;
    config.upstream.mode = UpstreamMode::Server;
    config.upstream.encryption = UpstreamEncryption::Tls;
    config.upstream.connect_timeout_ms = 5_000;
    config.upstream.cancel_timeout_ms = 5_000;
    config
}

impl TestProxy {
    /// A proxy in front of `upstream` (verified with `ca_file`), with the
    /// test config changed by `adjust`.
    pub async fn start_with(
        upstream: SocketAddr,
        ca_file: Option<PathBuf>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestProxy {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let upstream = Upstream {
            target: Target {
                host: upstream.ip().to_string(),
                port: upstream.port(),
            },
            ca_file,
        };
        let listener = Listener::bind(&config, upstream).await.expect("proxy binds");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listener.run(async move {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            dir,
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting and waits for the listener to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// The certificate the proxy generated for the application leg.
    pub fn cert_pem(&self) -> PathBuf {
        self.dir.path().join("tls-cert.pem")
    }
}
