//! Real drivers through the proxy, with TLS upstream to an in-process
//! sandbox: tiberius in process (login-only, full TLS and TDS 8.0 strict on
//! the application leg), and python-tds, pymssql, Microsoft's ODBC Driver 18
//! (mssql-python) and FreeTDS `tsql` as subprocesses.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use common::proxy::TestProxy;
use common::sandbox::{TestSandbox, PASSWORD};

type Tiberius = Client<Compat<TcpStream>>;

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

/// Creates a table, writes rows with parameters, reads them back.
async fn tiberius_scenario(level: EncryptionLevel) {
    let (sandbox, proxy) = stack().await;
    let mut client = tiberius(proxy.addr, level).await.expect("login through the proxy");
    client
        .simple_query("CREATE TABLE dbo.people (id int PRIMARY KEY, name nvarchar(50), notes nvarchar(max))")
        .await
        .expect("create table")
        .into_results()
        .await
        .expect("create table results");
    let long = "x".repeat(20_000);
    for (id, name) in [(1i32, "Zoë"), (2, "Nguyễn"), (3, "")] {
        client
            .execute(
                "INSERT INTO dbo.people (id, name, notes) VALUES (@P1, @P2, @P3)",
                &[&id, &name, &long.as_str()],
            )
            .await
            .expect("insert");
    }
    let row = client
        .query("SELECT name, notes FROM dbo.people WHERE id = @P1", &[&2i32])
        .await
        .expect("select")
        .into_row()
        .await
        .expect("one row")
        .expect("a row");
    assert_eq!(row.get::<&str, _>(0), Some("Nguyễn"));
    assert_eq!(row.get::<&str, _>(1), Some(long.as_str()));
    let count = client
        .query("SELECT COUNT(*) FROM dbo.people", &[])
        .await
        .expect("count")
        .into_row()
        .await
        .expect("count row")
        .expect("a row")
        .get::<i32, _>(0);
    assert_eq!(count, Some(3));
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

/// The repository's virtualenv, made by scripts/install-test-deps.sh.
fn python() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/install-test-deps.sh once",
        venv.display()
    );
    venv
}

/// Runs tests/drivers/scenario.py against the proxy; asserts it passed.
async fn python_scenario(driver: &str, encrypt: &str) {
    let (sandbox, proxy) = stack().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/scenario.py");
    let mut command = Command::new(python());
    command
        .arg(script)
        .args(["--driver", driver, "--encrypt", encrypt])
        .args(["--port", &proxy.addr.port().to_string()])
        .arg("--cafile")
        .arg(proxy.cert_pem())
        .env("TDSGUARD_TEST_PASSWORD", PASSWORD);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{driver} {encrypt} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains(": ok"), "{stdout}");
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn relay_pytds_login_only() {
    python_scenario("pytds", "off").await;
}

#[tokio::test]
async fn relay_pytds_full_tls() {
    python_scenario("pytds", "on").await;
}

#[tokio::test]
async fn relay_pymssql_off() {
    python_scenario("pymssql", "off").await;
}

#[tokio::test]
async fn relay_pymssql_on() {
    python_scenario("pymssql", "on").await;
}

#[tokio::test]
async fn relay_mssql_python_off() {
    python_scenario("mssql-python", "off").await;
}

#[tokio::test]
async fn relay_mssql_python_on() {
    python_scenario("mssql-python", "on").await;
}

#[tokio::test]
async fn relay_mssql_python_strict() {
    python_scenario("mssql-python", "strict").await;
}

/// FreeTDS `tsql` in its batch mode: a query read from stdin.
#[tokio::test]
async fn relay_freetds_tsql() {
    let (sandbox, proxy) = stack().await;
    let port = proxy.addr.port().to_string();
    let mut command = Command::new("tsql");
    command
        .args(["-H", "127.0.0.1", "-p", &port, "-U", "sa", "-P", PASSWORD])
        .env("TDSVER", "7.4")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().expect("tsql runs (scripts/install-test-deps.sh)");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"SELECT 40 + 2 AS answer\ngo\nexit\n")
            .expect("write query");
        drop(stdin);
        child.wait_with_output()
    })
    .await
    .expect("join")
    .expect("tsql output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("42"), "tsql printed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
}
