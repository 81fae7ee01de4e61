//! Real drivers through the proxy, with TLS upstream to an in-process
//! sandbox: tiberius in process (login-only, full TLS and TDS 8.0 strict on
//! the application leg), and python-tds, pymssql, Microsoft's ODBC Driver 18
//! (mssql-python) and FreeTDS `tsql` as subprocesses.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use common::proxy::TestProxy;
use common::sandbox::{TestSandbox, PASSWORD};
use common::tiberius_scenario::{self, Tiberius};
use common::python;

/// Time a driver subprocess may take for the whole scenario.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(180);

/// A sandbox and a proxy in front of it, verifying its certificate.
async fn stack() -> (TestSandbox, TestProxy) {
    let sandbox = TestSandbox::start().await;
    let proxy = TestProxy::start_with(sandbox.addr(), Some(sandbox.cert_pem()), |_| {}).await;
    (sandbox, proxy)
}

async fn tiberius(addr: SocketAddr, level: EncryptionLevel) -> tiberius::Result<Tiberius> {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(addr.port());
    config.authentication(AuthMethod::sql_server("sa", PASSWORD));
    config.database("tdsguard");
    config.trust_cert();
    config.encryption(level);
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

/// The shared driver scenario, through the proxy.
async fn tiberius_scenario(level: EncryptionLevel) {
    let (sandbox, proxy) = stack().await;
    let mut client = tiberius(proxy.addr, level).await.expect("login through the proxy");
    let failures = tiberius_scenario::run(&mut client, "dbo.Patients").await;
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
    drop(client);
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn relay_tiberius_login_only() {
    tiberius_scenario(EncryptionLevel::Off).await;
}

#[tokio::test]
async fn relay_tiberius_full_tls() {
    tiberius_scenario(EncryptionLevel::Required).await;
}

#[tokio::test]
async fn relay_tiberius_strict() {
    tiberius_scenario(EncryptionLevel::Strict).await;
}

#[tokio::test]
async fn relay_tiberius_plaintext() {
    tiberius_scenario(EncryptionLevel::NotSupported).await;
}

/// Runs tests/drivers/scenario.py against the proxy; asserts it passed.
async fn python_scenario(driver: &str, encrypt: &str) {
    let (sandbox, proxy) = stack().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/scenario.py");
    let mut command = Command::new(python::python());
    command
        .arg(script)
        .args(["--driver", driver, "--encrypt", encrypt])
        .args(["--port", &proxy.addr.port().to_string()])
        .arg("--cafile")
        .arg(proxy.cert_pem())
        .env("TDSGUARD_TEST_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let result = python::output_of(command, DRIVER_TIMEOUT).await;
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
    let output = result.unwrap_or_else(|text| panic!("{driver} {encrypt} failed:\n{text}"));
    assert!(output.contains(": ok"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_pytds_login_only() {
    python_scenario("pytds", "off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_pytds_full_tls() {
    python_scenario("pytds", "on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_pymssql_off() {
    python_scenario("pymssql", "off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_pymssql_on() {
    python_scenario("pymssql", "on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_mssql_python_off() {
    python_scenario("mssql-python", "off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_mssql_python_on() {
    python_scenario("mssql-python", "on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_mssql_python_strict() {
    python_scenario("mssql-python", "strict").await;
}

/// FreeTDS `tsql` in its batch mode: a query read from stdin.
#[tokio::test(flavor = "multi_thread")]
async fn relay_freetds_tsql() {
    let (sandbox, proxy) = stack().await;
    let port = proxy.addr.port().to_string();
    let mut command = Command::new("tsql");
    command
        .args(["-H", "127.0.0.1", "-p", &port, "-U", "sa", "-P", PASSWORD])
        .env("TDSVER", "7.4")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("tsql runs (scripts/install-test-deps.sh)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"SELECT 40 + 2 AS answer\ngo\nexit\n")
        .await
        .expect("write the query");
    drop(stdin);
    let output = tokio::time::timeout(DRIVER_TIMEOUT, child.wait_with_output())
        .await
        .expect("tsql finishes")
        .expect("tsql output");
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("42"), "tsql printed:\n{stdout}\n{stderr}");
}
