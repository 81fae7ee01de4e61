//! The sandbox against real SQL Server client libraries: tiberius in-process,
//! python-tds, pymssql and Microsoft's ODBC Driver 18 (mssql-python) through
//! tests/drivers/scenario.py, and FreeTDS `tsql`. Each driver and encryption
//! mode is its own test.

mod common;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use common::sandbox::{TestSandbox, PASSWORD};
use common::{python, tiberius_scenario};

type Tiberius = Client<Compat<TcpStream>>;

async fn tiberius(sandbox: &TestSandbox, level: EncryptionLevel) -> tiberius::Result<Tiberius> {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(sandbox.addr().port());
    config.authentication(AuthMethod::sql_server("sa", PASSWORD));
    config.database("tdsguard");
    config.trust_cert();
    config.encryption(level);
    let tcp = TcpStream::connect(sandbox.addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

async fn scenario(level: EncryptionLevel) {
    let sandbox = TestSandbox::start().await;
    let mut client = tiberius(&sandbox, level).await.expect("login succeeds");
    let failures = tiberius_scenario::run(&mut client, "dbo.Patients").await;
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
    drop(client);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn tiberius_scenario_plaintext() {
    scenario(EncryptionLevel::NotSupported).await;
}

#[tokio::test]
async fn tiberius_scenario_login_only_tls() {
    scenario(EncryptionLevel::Off).await;
}

#[tokio::test]
async fn tiberius_scenario_full_tls() {
    scenario(EncryptionLevel::Required).await;
}

#[tokio::test]
async fn tiberius_scenario_tds80_strict() {
    scenario(EncryptionLevel::Strict).await;
}

async fn logs_in(level: EncryptionLevel) {
    let sandbox = TestSandbox::start().await;
    let client = tiberius(&sandbox, level).await.expect("login succeeds");
    drop(client);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn tiberius_logs_in_plaintext() {
    logs_in(EncryptionLevel::NotSupported).await;
}

#[tokio::test]
async fn tiberius_logs_in_login_only_tls() {
    logs_in(EncryptionLevel::Off).await;
}

#[tokio::test]
async fn tiberius_logs_in_full_tls() {
    logs_in(EncryptionLevel::Required).await;
}

#[tokio::test]
async fn tiberius_logs_in_tds80_strict() {
    logs_in(EncryptionLevel::Strict).await;
}

#[tokio::test]
async fn tiberius_wrong_password_is_login_failed_18456() {
    let sandbox = TestSandbox::start().await;
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(sandbox.addr().port());
    config.authentication(AuthMethod::sql_server("sa", "wrong"));
    config.trust_cert();
    config.encryption(EncryptionLevel::Required);
    let tcp = TcpStream::connect(sandbox.addr()).await.expect("connects");
    let err = Client::connect(config, tcp.compat_write())
        .await
        .err()
        .expect("login fails");
    match err {
        tiberius::error::Error::Server(e) => {
            assert_eq!((e.code(), e.class(), e.state()), (18456, 14, 1));
            assert_eq!(e.message(), "Login failed for user 'sa'.");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn python_scenario(driver: &str, encrypt: &str) {
    let sandbox = TestSandbox::start().await;
    let result = python::run_scenario(&sandbox, driver, encrypt).await;
    sandbox.handle.shutdown().await;
    if let Err(output) = result {
        panic!("{driver} --encrypt {encrypt} failed:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pytds_login_only_tls() {
    python_scenario("pytds", "off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pytds_full_tls() {
    python_scenario("pytds", "on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pymssql_login_only_tls() {
    python_scenario("pymssql", "off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pymssql_full_tls() {
    python_scenario("pymssql", "on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn odbc18_login_only_tls() {
    python_scenario("mssql-python", "off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn odbc18_full_tls() {
    python_scenario("mssql-python", "on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn odbc18_tds80_strict() {
    python_scenario("mssql-python", "strict").await;
}
