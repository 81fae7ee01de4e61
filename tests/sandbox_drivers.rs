//! The sandbox against real SQL Server client libraries: tiberius in-process,
//! python-tds, pymssql and Microsoft's ODBC Driver 18 (mssql-python) through
//! tests/drivers/scenario.py, and FreeTDS `tsql`. Each driver and encryption
//! mode is its own test.

mod common;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use common::sandbox::{TestSandbox, PASSWORD};
use common::{external, tiberius_scenario};

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
    let result = external::run_scenario(&sandbox, driver, encrypt).await;
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

const TSQL_SCRIPT: &str =
    "CREATE TABLE dbo.Names (id int IDENTITY(1,1) PRIMARY KEY, name nvarchar(50), \
code char(4))\ngo\nINSERT INTO dbo.Names (name, code) VALUES (N'Zoë', 'AB12')\ngo\n\
INSERT INTO dbo.Names (name, code) VALUES (N'Nguyễn', NULL)\ngo\n\
SELECT id, name, code FROM dbo.Names ORDER BY id\ngo\nexit\n";

async fn tsql_scenario(encryption: &str) {
    let sandbox = TestSandbox::start().await;
    let result = external::run_tsql(&sandbox, encryption, TSQL_SCRIPT).await;
    sandbox.handle.shutdown().await;
    let output =
        result.unwrap_or_else(|e| panic!("tsql with encryption = {encryption} failed:\n{e}"));
    for expected in [
        "id\tname\tcode",
        "1\tZoë\tAB12",
        "2\tNguyễn\tNULL",
        "(2 rows affected)",
    ] {
        assert!(
            output.contains(expected),
            "tsql output lacks {expected:?}:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tsql_plaintext() {
    tsql_scenario("off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tsql_login_only_tls() {
    tsql_scenario("request").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tsql_full_tls() {
    tsql_scenario("require").await;
}

/// Protocol behaviour that drivers do not show directly: attention,
/// RESETCONNECTION, errors that keep the connection, bad bytes, LOGIN7
/// without PRELOGIN, refused plaintext, routing. Driven by a raw client
/// built from the codec.
mod protocol {
    use tdsguard::tds::packet::{status, PacketType};
    use tdsguard::tds::prelogin::Encryption;
    use tdsguard::tds::token::{DoneStatus, Token};

    use crate::common::raw::RawClient;
    use crate::common::sandbox::{TestSandbox, PASSWORD};

    fn done_statuses(tokens: &[Token]) -> Vec<u16> {
        tokens
            .iter()
            .filter_map(|t| match t {
                Token::Done(d) => Some(d.status.0),
                _ => None,
            })
            .collect()
    }

    fn error_numbers(tokens: &[Token]) -> Vec<u32> {
        tokens
            .iter()
            .filter_map(|t| match t {
                Token::InfoError(e) if e.is_error => Some(e.number),
                _ => None,
            })
            .collect()
    }

    fn first_int(tokens: &[Token]) -> Option<i32> {
        tokens.iter().find_map(|t| match t {
            Token::Row(row) => match row.values.first() {
                Some(tdsguard::tds::token::RawValue::Bytes(b)) if b.len() == 4 => {
                    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                _ => None,
            },
            _ => None,
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn select_one_is_colmetadata_row_done_with_count() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::logged_in(&sandbox).await;
        let tokens = client.query("SELECT 1 AS one").await;
        let names: Vec<&str> = tokens.iter().map(Token::name).collect();
        assert_eq!(names, ["COLMETADATA", "ROW", "DONE"]);
        assert_eq!(first_int(&tokens), Some(1));
        assert_eq!(done_statuses(&tokens), [DoneStatus::COUNT]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn attention_stops_a_long_result_and_the_connection_stays_usable() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::logged_in(&sandbox).await;
        client
            .query(
                "CREATE TABLE dbo.N (n int); \
                 INSERT INTO dbo.N VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)",
            )
            .await;
        // 10^6 rows: far more than is sent before the attention arrives.
        let big = "SELECT a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n + 100000*f.n AS v \
                   FROM dbo.N a CROSS JOIN dbo.N b CROSS JOIN dbo.N c CROSS JOIN dbo.N d \
                   CROSS JOIN dbo.N e CROSS JOIN dbo.N f";
        client.batch(big, 0).await;
        client.attention().await;

        let tokens = client.tokens().await.expect("the cancelled response ends");
        let last = tokens.last().expect("tokens");
        let Token::Done(done) = last else {
            panic!("the response ends with {}", last.name());
        };
        assert!(done.status.has(DoneStatus::ATTN), "DONE carries ATTN");
        let rows = tokens.iter().filter(|t| t.name() == "ROW").count();
        assert!(rows < 1_000_000, "the result was cut short ({rows} rows)");

        let after = client.query("SELECT 42").await;
        assert_eq!(first_int(&after), Some(42));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn attention_after_a_finished_request_gets_its_own_done_attn() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::logged_in(&sandbox).await;
        client.query("SELECT 1").await;
        client.attention().await;
        let tokens = client.tokens().await.expect("attention answered");
        assert_eq!(done_statuses(&tokens), [DoneStatus::ATTN]);
        assert_eq!(first_int(&client.query("SELECT 7").await), Some(7));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn resetconnection_answers_envchange_18_first_and_resets_the_session() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::logged_in(&sandbox).await;
        client
            .query("CREATE TABLE #t (x int); SET NOCOUNT ON")
            .await;
        client.batch("SELECT 5", status::RESETCONNECTION).await;
        let tokens = client.tokens().await.expect("answered");
        let Token::EnvChange(first) = &tokens[0] else {
            panic!("first token is {}", tokens[0].name());
        };
        assert!(first.is_reset_ack(), "ENVCHANGE type 18 first");
        assert_eq!(first_int(&tokens), Some(5));
        // NOCOUNT was reset: the DONE counts again.
        assert_eq!(done_statuses(&tokens).last(), Some(&DoneStatus::COUNT));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unsupported_statement_is_an_error_and_the_connection_stays_usable() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::logged_in(&sandbox).await;
        let tokens = client.query("CREATE FULLTEXT CATALOG ftc").await;
        assert!(!error_numbers(&tokens).is_empty(), "an ERROR token");
        let Some(Token::Done(done)) = tokens.last() else {
            panic!("ends with DONE");
        };
        assert!(done.status.has(DoneStatus::ERROR));
        assert_eq!(first_int(&client.query("SELECT 3").await), Some(3));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_bytes_end_only_that_connection() {
        let sandbox = TestSandbox::start().await;
        let mut bad = RawClient::logged_in(&sandbox).await;
        let mut good = RawClient::logged_in(&sandbox).await;
        // A packet header with an undefined type.
        use tokio::io::AsyncWriteExt;
        bad.tcp
            .write_all(&[0x55, 0x01, 0x00, 0x09, 0, 0, 1, 0, 0xAA])
            .await
            .expect("writes");
        assert!(
            bad.is_closed().await,
            "the server closes the bad connection"
        );
        assert_eq!(first_int(&good.query("SELECT 9").await), Some(9));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn login7_without_prelogin_is_served_when_plaintext_is_allowed() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::connect(&sandbox).await;
        let tokens = client.login(PASSWORD).await;
        assert!(tokens.iter().any(|t| t.name() == "LOGINACK"));
        assert_eq!(first_int(&client.query("SELECT 11").await), Some(11));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn plaintext_is_refused_unless_allowed() {
        let sandbox = TestSandbox::start_with(|o| o.allow_plaintext = false).await;
        let mut client = RawClient::connect(&sandbox).await;
        let answer = client.prelogin(Encryption::NotSupported).await;
        assert_eq!(answer.encryption(), Some((Encryption::NotSupported, false)));
        assert!(client.is_closed().await, "the server closes after refusing");

        let mut jtds = RawClient::connect(&sandbox).await;
        jtds.send(PacketType::Login7, 0, &[0; 8]).await;
        assert!(jtds.is_closed().await, "LOGIN7 without PRELOGIN is refused");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn wrong_password_is_18456_done_error_then_close() {
        let sandbox = TestSandbox::start().await;
        let mut client = RawClient::connect(&sandbox).await;
        client.prelogin(Encryption::NotSupported).await;
        let tokens = client.login("nope").await;
        assert_eq!(error_numbers(&tokens), [18456]);
        assert_eq!(done_statuses(&tokens), [DoneStatus::ERROR]);
        assert!(client.is_closed().await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn routing_sends_the_client_elsewhere() {
        let target = TestSandbox::start().await;
        let port = target.addr().port();
        let router = TestSandbox::start_with(|o| {
            o.routing = Some(tdsguard::sandbox::RoutingTarget {
                host: "127.0.0.1".into(),
                port,
            })
        })
        .await;

        let mut config = tiberius::Config::new();
        config.host("127.0.0.1");
        config.port(router.addr().port());
        config.authentication(tiberius::AuthMethod::sql_server("sa", PASSWORD));
        config.trust_cert();
        config.encryption(tiberius::EncryptionLevel::Required);
        let tcp = tokio::net::TcpStream::connect(router.addr())
            .await
            .expect("connects");
        use tokio_util::compat::TokioAsyncWriteCompatExt;
        match tiberius::Client::connect(config, tcp.compat_write()).await {
            Err(tiberius::error::Error::Routing { host, port: p }) => {
                assert_eq!((host.as_str(), p), ("127.0.0.1", port));
            }
            Err(other) => panic!("expected routing, got {other}"),
            Ok(_) => panic!("expected routing, got a session"),
        }
    }
}

/// Streams a 100,000-row, 6-column SELECT to tiberius and reports rows/s.
/// Run in a release build: `cargo test --release --test sandbox_drivers
/// tiberius_streams_100k_rows -- --ignored --nocapture`; the release build
/// must reach 300,000 rows/s.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "throughput measurement; run in a release build"]
async fn tiberius_streams_100k_rows() {
    const ROWS: usize = 100_000;
    let sandbox = TestSandbox::start().await;
    let mut client = tiberius(&sandbox, EncryptionLevel::NotSupported)
        .await
        .expect("login succeeds");
    let setup = "CREATE TABLE dbo.D (n int); \
        INSERT INTO dbo.D VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9); \
        CREATE TABLE dbo.Big (id int, name nvarchar(50), amount decimal(10,2), \
        created datetime2(7), flag bit, score float); \
        INSERT INTO dbo.Big (id, name, amount, created, flag, score) \
        SELECT a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n, N'customer name', 1234.56, \
        '2024-01-02 03:04:05.1234567', 1, 0.5 \
        FROM dbo.D a CROSS JOIN dbo.D b CROSS JOIN dbo.D c CROSS JOIN dbo.D d CROSS JOIN dbo.D e";
    client
        .simple_query(setup)
        .await
        .expect("setup runs")
        .into_results()
        .await
        .expect("setup completes");

    let started = std::time::Instant::now();
    let rows = client
        .simple_query("SELECT id, name, amount, created, flag, score FROM dbo.Big")
        .await
        .expect("select runs")
        .into_first_result()
        .await
        .expect("select completes");
    assert!(rows.iter().all(|row| row.len() == 6));
    let count = rows.len();
    let elapsed = started.elapsed();
    let rate = count as f64 / elapsed.as_secs_f64();
    println!("streamed {count} rows in {elapsed:?}: {rate:.0} rows/s");
    assert_eq!(count, ROWS);
    if !cfg!(debug_assertions) {
        assert!(rate >= 300_000.0, "{rate:.0} rows/s is below 300,000");
    }
}
