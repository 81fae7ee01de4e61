//! Starting an in-process sandbox for a test, in its own temporary directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use tdsguard::sandbox::{Sandbox, SandboxHandle, SandboxOptions};

/// Password of the `sa` login in test sandboxes.
pub const PASSWORD: &str = "Sandbox-Test-Passw0rd";

/// A running sandbox and the directory holding its data and certificate.
pub struct TestSandbox {
    pub handle: SandboxHandle,
    pub dir: tempfile::TempDir,
}

impl TestSandbox {
    /// Starts a sandbox with default options changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut SandboxOptions)) -> TestSandbox {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut options = SandboxOptions::new(dir.path().join("sandbox.db"), PASSWORD);
        adjust(&mut options);
        let handle = Sandbox::start(options).await.expect("sandbox starts");
        TestSandbox { handle, dir }
    }

    pub async fn start() -> TestSandbox {
        Self::start_with(|_| {}).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    pub fn cert_pem(&self) -> PathBuf {
        self.handle
            .cert_pem_path()
            .expect("generated certificate")
            .to_path_buf()
    }
}
