//! Column encryption end to end: real drivers through the proxy to the
//! in-process sandbox, keys provisioned as `tdsguard serve` does for the
//! embedded sandbox.
//!
//! Every test checks what the application reads back against what it
//! wrote, and that canary plaintexts appear neither in the sandbox's SQLite
//! file, nor in what the proxy sent upstream (recorded by a request hook
//! around the real rewriters: upstream is TLS, so a TCP recorder would only
//! see ciphertext), nor in the proxy's trace-level logs.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tiberius::numeric::Numeric;
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, ToSql};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use common::external;
use common::proxy::{test_config, TestProxy};
use common::raw_client::RawClient;
use common::sandbox::{TestSandbox, PASSWORD};
use common::tiberius_scenario::Tiberius;
use tdsguard::config::{ColumnConfig, EncryptionMode, OnDecryptError, SandboxUser, UpstreamMode};
use tdsguard::relay::hook::{RequestInterest, RewriteError, Rewritten, SessionInfo};
use tdsguard::relay::{RequestRewriter, ResponseRewriter, RewriterFactory};
use tdsguard::tds::packet::{encode_message, status, Message, PacketHeader, PacketType};
use tdsguard::tds::rpc::{proc_id, ProcName, RpcCall, RpcParam, RpcRequest};
use tdsguard::tds::token::{decode_all, Token, TokenContext};
use tdsguard::tds::types::{NullableType, SqlValue, TypeInfo};

/// Time a driver subprocess may take.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(180);

/// Distinctive plaintexts that must never leave the proxy.
const CANARIES: [&str; 4] = [
    "Canary-Zebra-Quokka",
    "canary-varchar-Narwhal",
    "Canary-Max-Okapi",
    "999-88-7777",
];

/// (column, type, mode) of the typed table; `id int` is not mapped.
const TYPED: &[(&str, &str, EncryptionMode)] = &[
    ("c_int", "int", EncryptionMode::Randomized),
    ("c_bigint", "bigint", EncryptionMode::Randomized),
    ("c_smallint", "smallint", EncryptionMode::Randomized),
    ("c_tinyint", "tinyint", EncryptionMode::Randomized),
    ("c_bit", "bit", EncryptionMode::Randomized),
    ("c_decimal", "decimal(10,2)", EncryptionMode::Randomized),
    ("c_float", "float", EncryptionMode::Randomized),
    ("c_real", "real", EncryptionMode::Randomized),
    ("c_money", "money", EncryptionMode::Randomized),
    ("c_char", "char(11)", EncryptionMode::Deterministic),
    ("c_varchar", "varchar(50)", EncryptionMode::Randomized),
    ("c_nchar", "nchar(10)", EncryptionMode::Randomized),
    ("c_nvarchar", "nvarchar(50)", EncryptionMode::Deterministic),
    ("c_nvarmax", "nvarchar(max)", EncryptionMode::Randomized),
    ("c_varbinary", "varbinary(50)", EncryptionMode::Randomized),
    ("c_varbinmax", "varbinary(max)", EncryptionMode::Randomized),
    ("c_date", "date", EncryptionMode::Randomized),
    ("c_time", "time(7)", EncryptionMode::Randomized),
    ("c_datetime", "datetime", EncryptionMode::Randomized),
    ("c_datetime2", "datetime2(7)", EncryptionMode::Randomized),
    ("c_dto", "datetimeoffset(7)", EncryptionMode::Randomized),
    ("c_guid", "uniqueidentifier", EncryptionMode::Randomized),
];

/// The columns tests/drivers/scenario.py writes, mapped as in proxy.toml
/// plus its two other columns.
const PATIENTS: &[(&str, &str, EncryptionMode)] = &[
    ("full_name", "nvarchar(50)", EncryptionMode::Randomized),
    ("birth_date", "date", EncryptionMode::Randomized),
    ("ssn", "char(11)", EncryptionMode::Deterministic),
    ("notes", "nvarchar(max)", EncryptionMode::Randomized),
    ("balance", "decimal(10,2)", EncryptionMode::Randomized),
    ("photo", "varbinary(max)", EncryptionMode::Randomized),
];

fn columns() -> Vec<ColumnConfig> {
    let map = |table: &str, cols: &[(&str, &str, EncryptionMode)]| {
        cols.iter()
            .map(|&(column, ty, mode)| ColumnConfig {
                table: table.into(),
                column: column.into(),
                sql_type: ty.into(),
                mode,
                on_decrypt_error: OnDecryptError::Error,
                database: None,
            })
            .collect::<Vec<_>>()
    };
    let mut all = map("dbo.Typed", TYPED);
    all.extend(map("dbo.Patients", PATIENTS));
    all
}

/// Everything the proxy wrote into request payloads toward the server.
type Sent = Arc<Mutex<Vec<u8>>>;

/// Wraps the real rewriters and records the payload of every request that
/// goes upstream (rewritten, unchanged, or the proxy's own).
struct Recording {
    inner: Arc<dyn RewriterFactory>,
    sent: Sent,
}

struct RecordingRequests {
    inner: Box<dyn RequestRewriter>,
    sent: Sent,
}

impl RewriterFactory for Recording {
    fn request(&self) -> Box<dyn RequestRewriter> {
        self.pair(&SessionInfo::default()).0
    }

    fn response(&self) -> Box<dyn ResponseRewriter> {
        self.inner.response()
    }

    fn pair(&self, info: &SessionInfo) -> (Box<dyn RequestRewriter>, Box<dyn ResponseRewriter>) {
        let (requests, responses) = self.inner.pair(info);
        let recording = RecordingRequests {
            inner: requests,
            sent: Arc::clone(&self.sent),
        };
        (Box::new(recording), responses)
    }
}

impl RequestRewriter for RecordingRequests {
    /// Every message whole, so even pass-through types are recorded.
    fn interest(&mut self, _first: &PacketHeader) -> RequestInterest {
        RequestInterest::WholeMessage
    }

    fn rewrite_request(
        &mut self,
        message: &Message,
        info: &SessionInfo,
    ) -> Result<Rewritten, RewriteError> {
        let outcome = self.inner.rewrite_request(message, info)?;
        let mut sent = self.sent.lock().unwrap();
        match &outcome {
            Rewritten::Unchanged => sent.extend_from_slice(&message.payload),
            Rewritten::Replaced(p) | Rewritten::OwnRequestFirst(p) => sent.extend_from_slice(p),
            Rewritten::Answered(_) => {}
        }
        Ok(outcome)
    }

    fn on_reset(&mut self) {
        self.inner.on_reset();
    }
}

/// The proxy's logs at trace level, for every test of this binary.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("tdsguard=trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sandbox, its demo keys, and an encrypting proxy in front of it.
struct Stack {
    sandbox: TestSandbox,
    proxy: TestProxy,
    sent: Sent,
    _keys: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        logs();
        Self::start_quiet().await
    }

    /// Without the trace-level log capture (for measurements).
    async fn start_quiet() -> Stack {
        let sandbox = TestSandbox::start().await;
        let keys = tempfile::tempdir().unwrap();
        let mut config = test_config(keys.path());
        config.upstream.mode = UpstreamMode::Embedded;
        config.sandbox.database = "tdsguard".into();
        config.sandbox.users = vec![SandboxUser {
            name: "sa".into(),
            password: PASSWORD.into(),
        }];
        config.columns = columns();
        let factory = tdsguard::cli::serve::rewriters(&config, Some(&sandbox.handle))
            .await
            .expect("column encryption starts");
        let sent = Sent::default();
        let recording = Recording {
            inner: factory,
            sent: Arc::clone(&sent),
        };
        let proxy = TestProxy::start_hooked(
            sandbox.addr(),
            Some(sandbox.cert_pem()),
            |c| c.columns = columns(),
            Arc::new(recording),
        )
        .await;
        Stack {
            sandbox,
            proxy,
            sent,
            _keys: keys,
        }
    }

    /// No canary in the sandbox file, the upstream requests or the logs.
    fn assert_no_canary(&self, canaries: &[&str]) {
        let mut file = Vec::new();
        for entry in std::fs::read_dir(self.sandbox.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                file.extend(std::fs::read(&path).unwrap());
            }
        }
        let sent = self.sent.lock().unwrap().clone();
        let logs = logs().lock().unwrap().clone();
        for canary in canaries {
            assert!(
                !contains_text(&file, canary),
                "{canary} in the sandbox files"
            );
            assert!(!contains_text(&sent, canary), "{canary} sent upstream");
            assert!(!contains_text(&logs, canary), "{canary} in the logs");
        }
        assert!(!sent.is_empty(), "the recorder saw the requests");
    }

    async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.sandbox.handle.shutdown().await;
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Whether `haystack` holds `needle` as UTF-8 or UTF-16LE.
fn contains_text(haystack: &[u8], needle: &str) -> bool {
    let find = |n: &[u8]| haystack.windows(n.len()).any(|w| w == n);
    find(needle.as_bytes()) || find(&utf16(needle))
}

async fn tiberius(addr: SocketAddr) -> Tiberius {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(addr.port());
    config.authentication(AuthMethod::sql_server("sa", PASSWORD));
    config.database("tdsguard");
    config.trust_cert();
    config.encryption(EncryptionLevel::Required);
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    Client::connect(config, tcp.compat_write())
        .await
        .expect("login through the proxy")
}

fn create_typed(table: &str) -> String {
    let cols: Vec<String> = TYPED.iter().map(|(c, t, _)| format!("{c} {t}")).collect();
    format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, {})",
        cols.join(", ")
    )
}

/// One row of parameters for the typed table, in TYPED order.
fn typed_row(id: i32) -> Vec<Box<dyn ToSql>> {
    let long = format!("{} {}", CANARIES[2], "x".repeat(9000));
    match id {
        1 => vec![
            Box::new(42i32),
            Box::new(9_000_000_000i64),
            Box::new(-3i16),
            Box::new(255u8),
            Box::new(true),
            Box::new(Numeric::new_with_scale(1_234_567, 2)),
            Box::new(2.25f64),
            Box::new(1.5f32),
            Box::new("12.3456"),
            Box::new(CANARIES[3]),
            Box::new(CANARIES[1]),
            Box::new("ab"),
            Box::new(CANARIES[0]),
            Box::new(long),
            Box::new(vec![0u8, 1, 2, 0xFF]),
            Box::new((0..=255u8).cycle().take(9000).collect::<Vec<u8>>()),
            Box::new("1984-02-29"),
            Box::new("12:34:56.1234567"),
            Box::new("2024-01-31 12:00:00.123"),
            Box::new("2024-01-31 12:34:56.1234567"),
            Box::new("2024-01-31 12:34:56.1234567 +01:00"),
            Box::new("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        ],
        2 => vec![
            Box::new(None::<i32>),
            Box::new(None::<i64>),
            Box::new(None::<i16>),
            Box::new(None::<u8>),
            Box::new(None::<bool>),
            Box::new(None::<Numeric>),
            Box::new(None::<f64>),
            Box::new(None::<f32>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<Vec<u8>>),
            Box::new(None::<Vec<u8>>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
            Box::new(None::<&str>),
        ],
        _ => vec![
            Box::new(i32::MIN),
            Box::new(i64::MAX),
            Box::new(i16::MIN),
            Box::new(0u8),
            Box::new(false),
            Box::new(Numeric::new_with_scale(-9_999_999, 2)),
            Box::new(-0.0001f64),
            Box::new(0f32),
            Box::new("-214748.3648"),
            Box::new(""),
            Box::new(""),
            Box::new(""),
            Box::new(""),
            Box::new(""),
            Box::new(Vec::<u8>::new()),
            Box::new(Vec::<u8>::new()),
            Box::new("0001-01-01"),
            Box::new("00:00:00"),
            Box::new("1753-01-01 00:00:00"),
            Box::new("9999-12-31 23:59:59.9999999"),
            Box::new("0001-01-01 00:00:00 -14:00"),
            Box::new("00000000-0000-0000-0000-000000000000"),
        ],
    }
}

async fn insert_typed(client: &mut Tiberius, table: &str, id: i32) {
    let names: Vec<&str> = TYPED.iter().map(|(c, _, _)| *c).collect();
    let marks: Vec<String> = (2..=TYPED.len() + 1).map(|i| format!("@P{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} (id, {}) VALUES (@P1, {})",
        names.join(", "),
        marks.join(", ")
    );
    let values = typed_row(id);
    let mut params: Vec<&dyn ToSql> = vec![&id];
    params.extend(values.iter().map(|v| v.as_ref()));
    client
        .execute(sql, &params)
        .await
        .unwrap_or_else(|e| panic!("insert {id} into {table}: {e}"));
}

/// Every cell of `table`, in id order, as tiberius decodes it.
async fn read_all(client: &mut Tiberius, table: &str) -> Vec<Vec<String>> {
    let names: Vec<&str> = TYPED.iter().map(|(c, _, _)| *c).collect();
    let sql = format!("SELECT id, {} FROM {table}", names.join(", "));
    let rows = client
        .simple_query(sql)
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let mut out: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.into_iter().map(|c| cell(&c)).collect())
        .collect();
    out.sort();
    out
}

fn cell(c: &ColumnData<'_>) -> String {
    format!("{c:?}")
}

/// tiberius writes every encryptable type through sp_executesql
/// parameters and reads back exactly what a plaintext table of the same
/// types gives, NULL and empty values included; the sandbox holds only
/// varbinary in the mapped columns; no canary leaves the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn columns_tiberius_every_type_round_trips() {
    let stack = Stack::start().await;
    let mut client = tiberius(stack.proxy.addr).await;
    // The same rows in a plaintext table of a sandbox of its own (so the
    // canaries stay out of the first one): what the server itself returns.
    let plain_sandbox = TestSandbox::start().await;
    let mut direct = tiberius(plain_sandbox.addr()).await;
    for c in [&mut client, &mut direct] {
        c.simple_query(create_typed("dbo.Typed")).await.unwrap();
        for id in 1..=3 {
            insert_typed(c, "dbo.Typed", id).await;
        }
    }
    let encrypted = read_all(&mut client, "dbo.Typed").await;
    let plain = read_all(&mut direct, "dbo.Typed").await;
    drop(direct);
    plain_sandbox.handle.shutdown().await;
    assert_eq!(encrypted.len(), 3);
    for (e, p) in encrypted.iter().zip(&plain) {
        for ((name, got), want) in std::iter::once(&"id")
            .chain(TYPED.iter().map(|(c, _, _)| c))
            .zip(e)
            .zip(p)
        {
            assert_eq!(got, want, "{name}");
        }
    }

    let row = client
        .query(
            "SELECT c_nvarchar, c_char, c_varbinary, c_int FROM dbo.Typed WHERE id = @P1",
            &[&1i32],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("row 1");
    assert_eq!(row.get::<&str, _>(0), Some(CANARIES[0]));
    assert_eq!(row.get::<&str, _>(1), Some(CANARIES[3]));
    assert_eq!(row.get::<&[u8], _>(2), Some(&[0u8, 1, 2, 0xFF][..]));
    assert_eq!(row.get::<i32, _>(3), Some(42));
    drop(client);

    assert_all_varbinary(&stack, "Typed", TYPED).await;
    stack.assert_no_canary(&CANARIES);
    stack.shutdown().await;
}

/// Column names and types of `table` on a direct connection to the sandbox.
async fn direct_column_types(stack: &Stack, table: &str) -> Vec<(String, String)> {
    let mut direct = tiberius(stack.sandbox.addr()).await;
    let sql =
        "SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = @P1";
    let rows = direct
        .query(sql, &[&table])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let types: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let name = r.get::<&str, _>(0).unwrap_or_default().to_lowercase();
            let ty = r.get::<&str, _>(1).unwrap_or_default().to_lowercase();
            (name, ty)
        })
        .collect();
    let data = direct
        .simple_query(format!("SELECT * FROM dbo.{table}"))
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert!(!data.is_empty(), "the direct connection reads the rows");
    types
}

/// The number of a tiberius server error.
fn error_number(result: Result<impl std::fmt::Debug, tiberius::error::Error>) -> u32 {
    match result {
        Err(tiberius::error::Error::Server(e)) => e.code(),
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn count(client: &mut Tiberius, table: &str) -> i32 {
    client
        .simple_query(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .and_then(|r| r.get::<i32, _>(0))
        .unwrap_or(-1)
}

/// Equality lookups on a deterministic column by parameter and by literal;
/// refusals answer their number, write nothing, keep the connection.
#[tokio::test(flavor = "multi_thread")]
async fn columns_tiberius_lookups_and_refusals() {
    let stack = Stack::start().await;
    let mut client = tiberius(stack.proxy.addr).await;
    client
        .simple_query(create_typed("dbo.Typed"))
        .await
        .unwrap();
    insert_typed(&mut client, "dbo.Typed", 1).await;
    insert_typed(&mut client, "dbo.Typed", 3).await;

    let by_param = client
        .query(
            "SELECT id FROM dbo.Typed WHERE c_nvarchar = @P1",
            &[&CANARIES[0]],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(by_param.len(), 1);
    assert_eq!(by_param[0].get::<i32, _>(0), Some(1));
    let literal = format!("SELECT id FROM dbo.Typed WHERE c_char = '{}'", CANARIES[3]);
    let by_literal = client
        .simple_query(literal)
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(by_literal.len(), 1);
    assert_eq!(by_literal[0].get::<i32, _>(0), Some(1));

    let refused: &[(&str, u32)] = &[
        (
            "SELECT id FROM dbo.Typed WHERE c_nvarchar LIKE N'Can%'",
            50101,
        ),
        ("SELECT id FROM dbo.Typed WHERE c_int > 5", 50102),
        ("SELECT id FROM dbo.Typed ORDER BY c_bigint", 50103),
        ("SELECT id FROM dbo.Typed WHERE c_varchar = 'x'", 50104),
        (
            "INSERT INTO dbo.Typed (id, c_char) VALUES (9, '123-45-67890000')",
            50111,
        ),
    ];
    for (sql, number) in refused {
        let result = client.simple_query(*sql).await;
        assert_eq!(error_number(result.map(|_| ())), *number, "{sql}");
        assert_eq!(count(&mut client, "dbo.Typed").await, 2, "after {sql}");
    }
    let too_long = client
        .execute(
            "INSERT INTO dbo.Typed (id, c_varchar) VALUES (@P1, @P2)",
            &[&10i32, &"y".repeat(51)],
        )
        .await;
    assert_eq!(error_number(too_long), 50111);
    assert_eq!(count(&mut client, "dbo.Typed").await, 2);

    let bulk_number = match client.bulk_insert("dbo.Typed").await {
        Err(tiberius::error::Error::Server(e)) => e.code(),
        Err(other) => panic!("bulk load failed otherwise: {other}"),
        Ok(_) => panic!("bulk load into a mapped table was accepted"),
    };
    assert_eq!(bulk_number, 50108);
    assert_eq!(count(&mut client, "dbo.Typed").await, 2);
    drop(client);
    stack.assert_no_canary(&CANARIES);
    stack.shutdown().await;
}

fn int_type() -> TypeInfo {
    TypeInfo::Nullable {
        ty: NullableType::IntN,
        len: 4,
    }
}

fn nvarchar(name: &str, s: &str) -> RpcParam {
    let collation = tdsguard::rewrite::DEFAULT_COLLATION;
    RpcParam::new(
        name,
        0,
        TypeInfo::nvarchar(8000, collation),
        &SqlValue::NVarChar(s.into()),
    )
    .unwrap()
}

fn rpc(id: u16, params: Vec<RpcParam>) -> Vec<u8> {
    let mut call = RpcCall::new(ProcName::Id(id), 0);
    call.params = params;
    let request = RpcRequest {
        all_headers: None,
        calls: vec![call],
    };
    let mut payload = common::raw_client::batch_payload("");
    payload.extend(request.to_bytes().unwrap());
    payload
}

async fn send(client: &mut RawClient, ty: PacketType, reset: u8, payload: &[u8]) -> Vec<Token> {
    let mut out = BytesMut::new();
    encode_message(ty, reset, payload, 4096, &mut out).unwrap();
    client.send_raw(&out).await;
    let reply = client.read_message().await.expect("a reply");
    decode_all(&reply, &mut TokenContext::default()).expect("valid reply")
}

fn errors(tokens: &[Token]) -> Vec<u32> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::InfoError(e) if e.is_error => Some(e.number),
            _ => None,
        })
        .collect()
}

fn return_handle(tokens: &[Token]) -> Option<i32> {
    tokens.iter().find_map(|t| match t {
        Token::ReturnValue(rv) => match &rv.value {
            tdsguard::tds::token::RawValue::Bytes(b) => {
                Some(i32::from_le_bytes(b.as_slice().try_into().ok()?))
            }
            _ => None,
        },
        _ => None,
    })
}

/// A hand-built sp_prepare: the handle works across sp_execute, the
/// result is decrypted, and RESETCONNECTION drops it.
#[tokio::test(flavor = "multi_thread")]
async fn columns_prepared_handle_until_reset() {
    let stack = Stack::start().await;
    let mut client = tiberius(stack.proxy.addr).await;
    client
        .simple_query(create_typed("dbo.Typed"))
        .await
        .unwrap();
    insert_typed(&mut client, "dbo.Typed", 1).await;
    drop(client);

    let mut raw = RawClient::connect(stack.proxy.addr).await;
    raw.prelogin(false).await;
    raw.login(PASSWORD).await;
    let prepare = rpc(
        proc_id::SP_PREPARE,
        vec![
            RpcParam::new("@handle", 0x01, int_type(), &SqlValue::Null).unwrap(),
            nvarchar("@params", "@P1 nvarchar(50)"),
            nvarchar(
                "@stmt",
                "SELECT id, c_nvarchar FROM dbo.Typed WHERE c_nvarchar = @P1",
            ),
            RpcParam::new("@options", 0, int_type(), &SqlValue::Int(1)).unwrap(),
        ],
    );
    let tokens = send(&mut raw, PacketType::Rpc, 0, &prepare).await;
    assert!(errors(&tokens).is_empty(), "{:?}", errors(&tokens));
    let handle = return_handle(&tokens).expect("sp_prepare returns a handle");

    let execute = |value: &str| {
        rpc(
            proc_id::SP_EXECUTE,
            vec![
                RpcParam::new("", 0, int_type(), &SqlValue::Int(handle)).unwrap(),
                nvarchar("", value),
            ],
        )
    };
    for _ in 0..2 {
        let tokens = send(&mut raw, PacketType::Rpc, 0, &execute(CANARIES[0])).await;
        assert!(errors(&tokens).is_empty(), "{:?}", errors(&tokens));
        let rows = tokens.iter().filter(|t| matches!(t, Token::Row(_))).count();
        assert_eq!(rows, 1, "one row through the prepared handle");
    }
    let after_reset = send(
        &mut raw,
        PacketType::Rpc,
        status::RESETCONNECTION,
        &execute(CANARIES[0]),
    )
    .await;
    assert_eq!(
        errors(&after_reset),
        [50109],
        "the handle is gone after the reset"
    );
    stack.assert_no_canary(&CANARIES);
    stack.shutdown().await;
}

/// Runs tests/drivers/scenario.py with `args` through the encrypting proxy
/// of `stack`; panics with its output unless it reported success.
async fn run_scenario_py(stack: &Stack, driver: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/scenario.py");
    let mut command = Command::new(external::python());
    command
        .arg(script)
        .args(["--driver", driver, "--encrypt", "on"])
        .args(args)
        .args(["--port", &stack.proxy.addr.port().to_string()])
        .arg("--cafile")
        .arg(stack.proxy.cert_pem())
        .env("TDSGUARD_TEST_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let result = external::output_of(command, DRIVER_TIMEOUT).await;
    let output = result.unwrap_or_else(|text| panic!("{driver} {args:?} failed:\n{text}"));
    assert!(output.contains(": ok"), "{output}");
}

/// Asserts a direct connection to the sandbox sees every column of `cols`
/// in `table` as varbinary.
async fn assert_all_varbinary(stack: &Stack, table: &str, cols: &[(&str, &str, EncryptionMode)]) {
    let types = direct_column_types(stack, table).await;
    for (column, _, _) in cols {
        let ty = types
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, t)| t.as_str());
        assert_eq!(ty, Some("varbinary"), "{column} as the server sees it");
    }
}

/// Runs tests/drivers/scenario.py through the encrypting proxy and checks
/// the scenario's plaintexts reached the sandbox only as ciphertext.
async fn python_scenario(driver: &str) {
    let stack = Stack::start().await;
    run_scenario_py(&stack, driver, &[]).await;
    assert_all_varbinary(&stack, "Patients", PATIENTS).await;
    stack.assert_no_canary(&["Nguyễn", "987-65-4321", "Zoë"]);
    stack.shutdown().await;
}

/// The typed scenario of tests/drivers/scenario.py through the encrypting
/// proxy: the driver writes every encryptable type (NULL, empty and limit
/// values included), compares every value it reads back, looks rows up by
/// the deterministic columns and sees out-of-range values refused; the
/// sandbox holds only varbinary in those columns and no canary leaves the
/// proxy.
async fn python_types(driver: &str) {
    let stack = Stack::start().await;
    run_scenario_py(
        &stack,
        driver,
        &["--scenario", "types", "--table", "dbo.Typed"],
    )
    .await;
    assert_all_varbinary(&stack, "Typed", TYPED).await;
    stack.assert_no_canary(&CANARIES);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_pytds() {
    python_scenario("pytds").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_pytds_every_type() {
    python_types("pytds").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_pymssql_literals() {
    python_scenario("pymssql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_pymssql_every_type_literals() {
    python_types("pymssql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_mssql_python_odbc18() {
    python_scenario("mssql-python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_mssql_python_every_type() {
    python_types("mssql-python").await;
}

/// FreeTDS tsql sends literals: write, read back, look up, and a refusal
/// that leaves the session usable.
#[tokio::test(flavor = "multi_thread")]
async fn columns_freetds_tsql_literals() {
    let stack = Stack::start().await;
    let script = format!(
        "CREATE TABLE dbo.Patients (id int PRIMARY KEY, full_name nvarchar(50), \
         birth_date date, ssn char(11), notes nvarchar(max), balance decimal(10,2), \
         photo varbinary(max))\ngo\n\
         INSERT INTO dbo.Patients (id, full_name, birth_date, ssn, notes, balance, photo) \
         VALUES (1, N'{name}', '1984-02-29', '{ssn}', N'{note}', 12.34, 0x0102)\ngo\n\
         SELECT id, full_name, ssn, notes, balance FROM dbo.Patients\ngo\n\
         SELECT id FROM dbo.Patients WHERE ssn = '{ssn}'\ngo\n\
         SELECT id FROM dbo.Patients WHERE full_name LIKE 'C%'\ngo\n\
         SELECT 40 + 2 AS answer\ngo\nexit\n",
        name = CANARIES[0],
        ssn = CANARIES[3],
        note = CANARIES[2],
    );
    let output = run_tsql(stack.proxy.addr, &stack, &script).await;
    assert!(output.contains(CANARIES[0]), "{output}");
    assert!(output.contains(CANARIES[2]), "{output}");
    assert!(output.contains("12.34"), "{output}");
    assert!(output.contains("Msg 50101"), "{output}");
    assert!(output.contains("42"), "{output}");
    stack.assert_no_canary(&[CANARIES[0], CANARIES[2], CANARIES[3]]);
    stack.shutdown().await;
}

async fn run_tsql(addr: SocketAddr, stack: &Stack, script: &str) -> String {
    let path = stack.proxy.dir.path().join("script.sql");
    std::fs::write(&path, script).unwrap();
    let stdin = std::fs::File::open(&path).unwrap();
    let port = addr.port().to_string();
    let mut command = Command::new("tsql");
    command
        .args(["-H", "127.0.0.1", "-p", &port, "-U", "sa", "-P", PASSWORD])
        .env("TDSVER", "7.4")
        .env("LC_ALL", "C.UTF-8")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match external::output_of(command, DRIVER_TIMEOUT).await {
        Ok(text) | Err(text) => text,
    }
}

/// Rows of the throughput report.
const REPORT_ROWS: usize = 100_000;
/// Single-row INSERTs timed in the report.
const REPORT_INSERTS: usize = 2_000;

fn create_report_table(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, full_name nvarchar(50), birth_date date, \
         ssn char(11), notes nvarchar(max))"
    )
}

/// Loads `rows` rows into `table` with 4-parameter rows, 400 rows a statement.
async fn load_report_rows(client: &mut Tiberius, table: &str, first: usize, rows: usize) {
    let per = 400;
    for start in (first..first + rows).step_by(per) {
        let n = per.min(first + rows - start);
        let values: Vec<String> = (0..n)
            .map(|i| {
                let p = i * 4;
                format!(
                    "({}, @P{}, @P{}, @P{}, @P{})",
                    start + i,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} (id, full_name, birth_date, ssn, notes) VALUES {}",
            values.join(", ")
        );
        let data: Vec<(String, String, String, String)> = (0..n)
            .map(|i| {
                let k = start + i;
                (
                    format!("Patient {k}"),
                    "1984-02-29".to_string(),
                    format!("{:03}-{:02}-{:04}", k % 1000, k % 100, k % 10000),
                    format!("notes for patient {k}"),
                )
            })
            .collect();
        let params: Vec<&dyn ToSql> = data
            .iter()
            .flat_map(|(a, b, c, d)| [a as &dyn ToSql, b, c, d])
            .collect();
        client.execute(sql, &params).await.expect("load rows");
    }
}

async fn timed_select(client: &mut Tiberius, table: &str) -> (usize, Duration) {
    let started = std::time::Instant::now();
    let rows = client
        .simple_query(format!(
            "SELECT id, full_name, birth_date, ssn, notes FROM {table}"
        ))
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    (rows.len(), started.elapsed())
}

async fn timed_inserts(client: &mut Tiberius, table: &str) -> Duration {
    let started = std::time::Instant::now();
    for k in 0..REPORT_INSERTS {
        let id = (REPORT_ROWS + k) as i32;
        let ssn = format!("{:03}-{:02}-{:04}", k % 1000, k % 100, k % 10000);
        client
            .execute(
                format!(
                    "INSERT INTO {table} (id, full_name, birth_date, ssn, notes) \
                     VALUES (@P1, @P2, @P3, @P4, @P5)"
                ),
                &[&id, &"Inserted Patient", &"1990-05-17", &ssn, &"short note"],
            )
            .await
            .expect("insert");
    }
    started.elapsed()
}

/// Throughput through tdsguard, encrypted table next to a plaintext one of
/// the same shape. Reports, never asserts (machines are noisy). Run with
/// `cargo test --release --test columns_e2e -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run on demand in release"]
async fn columns_throughput_report() {
    let stack = Stack::start_quiet().await;
    let mut client = tiberius(stack.proxy.addr).await;
    for table in ["dbo.Patients", "dbo.PlainPatients"] {
        client
            .simple_query(create_report_table(table))
            .await
            .unwrap();
        load_report_rows(&mut client, table, 0, REPORT_ROWS).await;
    }
    for table in ["dbo.Patients", "dbo.PlainPatients"] {
        let _ = timed_select(&mut client, table).await;
        let (rows, select) = timed_select(&mut client, table).await;
        let insert = timed_inserts(&mut client, table).await;
        println!(
            "{table}: SELECT {rows} rows x 4 columns {:.0} ms ({:.0} rows/s); \
             {REPORT_INSERTS} INSERTs x 4 parameters {:.0} ms ({:.0} /s)",
            select.as_secs_f64() * 1e3,
            rows as f64 / select.as_secs_f64(),
            insert.as_secs_f64() * 1e3,
            REPORT_INSERTS as f64 / insert.as_secs_f64(),
        );
    }
    drop(client);
    stack.shutdown().await;
}

/// FreeTDS `tsql` sends every type as a literal in batch text and shows what
/// it reads as text. The same script runs through the proxy into the mapped
/// table and straight into a plaintext table on a sandbox of its own; the two
/// listings must be identical, so every value survives sealing and opening
/// at the precision `tsql` shows (the other drivers compare exact values).
#[tokio::test(flavor = "multi_thread")]
async fn columns_freetds_tsql_every_type_literals() {
    let stack = Stack::start().await;
    let plain_sandbox = TestSandbox::start().await;
    let columns: Vec<&str> = TYPED.iter().map(|(c, _, _)| *c).collect();
    let empty = "c_char, c_varchar, c_nchar, c_nvarchar, c_nvarmax, c_varbinary, c_varbinmax";
    let script = format!(
        "{create}\ngo\n\
         INSERT INTO dbo.Typed (id, {all}) VALUES (1, 42, 9007199254740993, -32768, 255, 1, \
         12345678.91, 3.141592653589793, 2.5, 922337203685477.5807, '{ssn}', 'plain text', \
         N'Zo\u{eb}', N'{name}', N'{note}', 0x0001FF, 0x00010203, '2024-02-29', \
         '23:59:59.1234567', '2024-01-02 03:04:05.997', '2024-01-02 03:04:05.1234567', \
         '2024-01-02 03:04:05.1234567 +05:30', '6F9619FF-8B86-D011-B42D-00C04FC964FF')\ngo\n\
         INSERT INTO dbo.Typed (id) VALUES (2)\ngo\n\
         INSERT INTO dbo.Typed (id, {empty}) VALUES (3, '', '', N'', N'', N'', 0x, 0x)\ngo\n\
         SELECT id, {all} FROM dbo.Typed WHERE id = 1\ngo\n\
         SELECT id, {all} FROM dbo.Typed WHERE id = 2\ngo\n\
         SELECT id, {all} FROM dbo.Typed WHERE id = 3\ngo\n\
         SELECT id FROM dbo.Typed WHERE c_char = '{ssn}'\ngo\nexit\n",
        create = create_typed("dbo.Typed"),
        all = columns.join(", "),
        ssn = CANARIES[3],
        name = CANARIES[0],
        note = CANARIES[2],
    );
    let through_proxy = run_tsql(stack.proxy.addr, &stack, &script).await;
    let direct = run_tsql(plain_sandbox.addr(), &stack, &script).await;
    plain_sandbox.handle.shutdown().await;

    assert!(through_proxy.contains(CANARIES[0]), "{through_proxy}");
    assert!(!through_proxy.contains("Msg "), "{through_proxy}");
    assert_eq!(through_proxy, direct);

    assert_all_varbinary(&stack, "Typed", TYPED).await;
    stack.assert_no_canary(&CANARIES);
    stack.shutdown().await;
}
