//! The workloads of `tdsguard bench`, each driven through tiberius: what a
//! request is, the tables it needs and the columns it maps for encryption.
//!
//! A scenario that maps columns declares them in the `[[columns]]` form of
//! `proxy.toml`; the tdsguard target runs with those entries added to its
//! configuration, and its table is created and filled through tdsguard so
//! that the relay can store it encrypted. The two baselines use a twin
//! table holding the same rows as plaintext ([`Scenario::plain_table`]):
//! they measure what the application would pay without encryption, and a
//! plaintext INSERT into an encrypted (varbinary) column would fail anyway.
//! Whether the relay really encrypted is checked, not assumed
//! (`crate::bench::encryption`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::bench::targets::TargetKind;
use crate::bench::BenchError;
use crate::config::ColumnConfig;

/// Rows in the large SELECT.
pub const SELECT_ROWS: u32 = 100_000;
/// Rows per INSERT statement when filling a table (SQL Server's limit for
/// a VALUES list is 1000 rows).
const FILL_BATCH: u32 = 1_000;
/// Size of the large value, both as parameter and as returned column.
pub const LARGE_VALUE: usize = 1024 * 1024;
/// Time a connection and login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A tiberius client over TCP.
pub type Tiberius = Client<Compat<TcpStream>>;

/// How the load generator reaches one target.
#[derive(Clone)]
pub struct Connector {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    pub encryption: EncryptionLevel,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Connector {
    /// Connects and logs in. The certificate is not verified: the bench
    /// measures cost, and tdsguard's own certificate is a generated one.
    pub async fn connect(&self) -> Result<Tiberius, BenchError> {
        let attempt = self.try_connect();
        match tokio::time::timeout(LOGIN_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(BenchError::Timeout("login")),
        }
    }

    async fn try_connect(&self) -> Result<Tiberius, BenchError> {
        let mut config = Config::new();
        config.host(self.addr.ip().to_string());
        config.port(self.addr.port());
        config.authentication(AuthMethod::sql_server(&self.user, &self.password));
        if let Some(db) = &self.database {
            config.database(db);
        }
        config.trust_cert();
        config.encryption(self.encryption);
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(BenchError::io("connecting"))?;
        tcp.set_nodelay(true)
            .map_err(BenchError::io("setting TCP_NODELAY"))?;
        let client = Client::connect(config, tcp.compat_write())
            .await
            .map_err(BenchError::sql("login"))?;
        Ok(client)
    }
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `SELECT 1` as a SQL batch: one small round trip.
    SmallQuery,
    /// `SELECT` of every row of a table.
    Select { table: &'static str, rows: u32 },
    /// One parameterized INSERT with `params` NVARCHAR parameters.
    Insert { table: &'static str, params: u32 },
    /// `SELECT @P1` with a [`LARGE_VALUE`]-byte VARBINARY(MAX): the value
    /// crosses the relay in both directions.
    LargeValue,
    /// Connect, PRELOGIN, TLS, LOGIN7, close.
    Login,
}

/// One workload.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub work: Work,
    /// The `[[columns]]` entries the tdsguard target maps for it.
    pub columns: Vec<ColumnConfig>,
    /// The unmapped twin of the mapped table, with the same rows (or the
    /// same columns, for INSERT), used by the direct and byte-copy targets.
    pub plain_table: Option<&'static str>,
}

impl Scenario {
    /// Whether the tdsguard target maps columns of this scenario's table.
    pub fn is_mapped(&self) -> bool {
        !self.columns.is_empty()
    }

    /// The table the scenario reads or writes, if any.
    pub fn table(&self) -> Option<&'static str> {
        match self.work {
            Work::Select { table, .. } | Work::Insert { table, .. } => Some(table),
            Work::SmallQuery | Work::LargeValue | Work::Login => None,
        }
    }

    /// The scenario as `target` runs it: the baselines use the plaintext
    /// twin of a mapped table, tdsguard the mapped table itself.
    pub fn for_target(&self, target: TargetKind) -> Scenario {
        let mut scenario = self.clone();
        let Some(plain) = self.plain_table.filter(|_| target != TargetKind::Tdsguard) else {
            return scenario;
        };
        scenario.columns = Vec::new();
        scenario.plain_table = None;
        match &mut scenario.work {
            Work::Select { table, .. } | Work::Insert { table, .. } => *table = plain,
            Work::SmallQuery | Work::LargeValue | Work::Login => {}
        }
        scenario
    }

    /// Rows one request returns (for rows/s).
    pub fn rows_per_request(&self) -> u64 {
        match self.work {
            Work::Select { rows, .. } => u64::from(rows),
            Work::SmallQuery | Work::LargeValue => 1,
            Work::Insert { .. } | Work::Login => 0,
        }
    }

    /// Whether every request opens its own connection.
    pub fn connects_per_request(&self) -> bool {
        self.work == Work::Login
    }
}

/// Every scenario; `select_rows` is [`SELECT_ROWS`] except in smoke runs.
pub fn all(select_rows: u32) -> Result<Vec<Scenario>, BenchError> {
    let plain = |name, summary, work| Scenario {
        name,
        summary,
        work,
        columns: Vec::new(),
        plain_table: None,
    };
    Ok(vec![
        plain(
            "small",
            "SELECT 1 round trips, no encrypted columns",
            Work::SmallQuery,
        ),
        plain(
            "select_100k",
            "SELECT of 100k rows, 0 encrypted columns",
            Work::Select {
                table: "bench_rows",
                rows: select_rows,
            },
        ),
        Scenario {
            name: "select_100k_enc4",
            summary: "SELECT of 100k rows, 4 encrypted columns",
            work: Work::Select {
                table: "bench_rows_enc",
                rows: select_rows,
            },
            columns: mapped("bench_rows_enc", 4)?,
            plain_table: Some("bench_rows"),
        },
        Scenario {
            name: "insert_enc4",
            summary: "INSERT with 4 encrypted parameters",
            work: Work::Insert {
                table: "bench_ins4",
                params: 4,
            },
            columns: mapped("bench_ins4", 4)?,
            plain_table: Some("bench_ins4_plain"),
        },
        Scenario {
            name: "insert_enc16",
            summary: "INSERT with 16 encrypted parameters",
            work: Work::Insert {
                table: "bench_ins16",
                params: 16,
            },
            columns: mapped("bench_ins16", 16)?,
            plain_table: Some("bench_ins16_plain"),
        },
        plain(
            "value_1mib",
            "SELECT @P1 with a 1 MiB VARBINARY(MAX)",
            Work::LargeValue,
        ),
        plain("login", "connect, TLS, LOGIN7, close", Work::Login),
    ])
}

/// `[[columns]]` entries for columns `c1..=cN` of `table`, parsed from the
/// same TOML form a `proxy.toml` uses.
fn mapped(table: &str, count: u32) -> Result<Vec<ColumnConfig>, BenchError> {
    #[derive(Deserialize)]
    struct Columns {
        columns: Vec<ColumnConfig>,
    }

    let mut text = String::new();
    for i in 1..=count {
        text.push_str(&format!(
            "[[columns]]\ntable = \"{table}\"\ncolumn = \"c{i}\"\ntype = \"nvarchar(40)\"\n"
        ));
    }
    let parsed: Columns = toml::from_str(&text).map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(parsed.columns)
}

/// Creates and fills the table `scenario` reads or writes. A plaintext
/// table that already holds the rows is kept; a mapped one is always made
/// afresh through tdsguard, since one left by an earlier run may hold
/// plaintext.
pub async fn prepare(client: &mut Tiberius, scenario: &Scenario) -> Result<(), BenchError> {
    let reuse = !scenario.is_mapped();
    match scenario.work {
        Work::Select { table, rows } => prepare_rows(client, table, rows, reuse).await,
        Work::Insert { table, params } => prepare_insert(client, table, params).await,
        Work::SmallQuery | Work::LargeValue | Work::Login => Ok(()),
    }
}

async fn prepare_rows(
    client: &mut Tiberius,
    table: &str,
    rows: u32,
    reuse: bool,
) -> Result<(), BenchError> {
    if reuse && count_rows(client, table).await == Some(i64::from(rows)) {
        return Ok(());
    }

    let _ = batch(client, &format!("DROP TABLE {table}")).await;
    let create = format!(
        "CREATE TABLE {table} (id INT NOT NULL PRIMARY KEY, c1 NVARCHAR(40), \
         c2 NVARCHAR(40), c3 NVARCHAR(40), c4 NVARCHAR(40), qty BIGINT, price FLOAT)"
    );
    batch(client, &create).await?;

    let mut start = 0;
    while start < rows {
        let end = rows.min(start + FILL_BATCH);
        batch(client, &fill_statement(table, start, end)).await?;
        start = end;
    }
    Ok(())
}

/// One multi-row INSERT for rows `start..end`.
fn fill_statement(table: &str, start: u32, end: u32) -> String {
    let values: Vec<String> = (start..end)
        .map(|i| {
            format!(
                "({i}, N'name-{i}', N'{:03}-{:02}-{:04}', N'note {i}', N'city-{}', {}, {}.25)",
                i % 1000,
                i % 100,
                i % 10_000,
                i % 97,
                u64::from(i) * 7,
                i % 1000
            )
        })
        .collect();
    format!(
        "INSERT INTO {table} (id, c1, c2, c3, c4, qty, price) VALUES {}",
        values.join(", ")
    )
}

async fn prepare_insert(client: &mut Tiberius, table: &str, params: u32) -> Result<(), BenchError> {
    let _ = batch(client, &format!("DROP TABLE {table}")).await;
    let columns: Vec<String> = (1..=params).map(|i| format!("c{i} NVARCHAR(40)")).collect();
    batch(
        client,
        &format!("CREATE TABLE {table} ({})", columns.join(", ")),
    )
    .await
}

async fn count_rows(client: &mut Tiberius, table: &str) -> Option<i64> {
    let stream = client
        .simple_query(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .ok()?;
    let row = stream.into_row().await.ok()??;
    row.get::<i32, _>(0)
        .map(i64::from)
        .or_else(|| row.try_get::<i64, _>(0).ok().flatten())
}

async fn batch(client: &mut Tiberius, sql: &str) -> Result<(), BenchError> {
    let stream = client
        .simple_query(sql)
        .await
        .map_err(BenchError::sql("setup batch"))?;
    stream
        .into_results()
        .await
        .map_err(BenchError::sql("setup batch"))?;
    Ok(())
}

/// A worker's state: its connection (absent for [`Work::Login`]) and the
/// parameter values it sends.
pub struct Session {
    pub client: Option<Tiberius>,
    payload: Vec<u8>,
    insert_values: Vec<String>,
}

impl Session {
    /// Opens the worker's connection unless every request makes its own.
    pub async fn open(scenario: &Scenario, connector: &Connector) -> Result<Session, BenchError> {
        let client = match scenario.connects_per_request() {
            true => None,
            false => Some(connector.connect().await?),
        };
        let payload = match scenario.work {
            Work::LargeValue => (0..LARGE_VALUE).map(|i| (i % 251) as u8).collect(),
            _ => Vec::new(),
        };
        let insert_values = (1..=16)
            .map(|i| format!("value-{i:02}-abcdefghij"))
            .collect();
        Ok(Session {
            client,
            payload,
            insert_values,
        })
    }
}

/// Runs one request; returns the rows it read.
pub async fn request(
    scenario: &Scenario,
    session: &mut Session,
    connector: &Connector,
) -> Result<u64, BenchError> {
    if scenario.work == Work::Login {
        let client = connector.connect().await?;
        client.close().await.map_err(BenchError::sql("closing"))?;
        return Ok(0);
    }
    let Some(client) = session.client.as_mut() else {
        return Err(BenchError::Setup("worker has no connection".to_owned()));
    };
    match scenario.work {
        Work::SmallQuery => small_query(client).await,
        Work::Select { table, rows } => select_all(client, table, rows).await,
        Work::Insert { table, params } => {
            insert(client, table, &session.insert_values, params).await
        }
        Work::LargeValue => large_value(client, &session.payload).await,
        Work::Login => Ok(0),
    }
}

async fn small_query(client: &mut Tiberius) -> Result<u64, BenchError> {
    let stream = client
        .simple_query("SELECT 1")
        .await
        .map_err(BenchError::sql("SELECT 1"))?;
    let row = stream
        .into_row()
        .await
        .map_err(BenchError::sql("SELECT 1"))?;
    match row.and_then(|r| r.get::<i32, _>(0)) {
        Some(1) => Ok(1),
        _ => Err(BenchError::WrongResult("SELECT 1")),
    }
}

async fn select_all(client: &mut Tiberius, table: &str, rows: u32) -> Result<u64, BenchError> {
    let sql = format!("SELECT id, c1, c2, c3, c4, qty, price FROM {table}");
    let stream = client
        .simple_query(sql)
        .await
        .map_err(BenchError::sql("SELECT"))?;
    let got = stream
        .into_first_result()
        .await
        .map_err(BenchError::sql("SELECT"))?;
    if got.len() != rows as usize {
        return Err(BenchError::WrongResult("row count of the SELECT"));
    }
    Ok(got.len() as u64)
}

async fn insert(
    client: &mut Tiberius,
    table: &str,
    values: &[String],
    params: u32,
) -> Result<u64, BenchError> {
    let count = params as usize;
    let names: Vec<String> = (1..=params).map(|i| format!("c{i}")).collect();
    let marks: Vec<String> = (1..=params).map(|i| format!("@P{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    );
    let args: Vec<&dyn ToSql> = values.iter().take(count).map(|v| v as &dyn ToSql).collect();
    let done = client
        .execute(sql, &args)
        .await
        .map_err(BenchError::sql("INSERT"))?;
    match done.total() {
        1 => Ok(0),
        _ => Err(BenchError::WrongResult("rows affected by the INSERT")),
    }
}

async fn large_value(client: &mut Tiberius, payload: &[u8]) -> Result<u64, BenchError> {
    let stream = client
        .query("SELECT @P1 AS v", &[&payload])
        .await
        .map_err(BenchError::sql("SELECT @P1"))?;
    let row = stream
        .into_row()
        .await
        .map_err(BenchError::sql("SELECT @P1"))?;
    let len = row
        .as_ref()
        .and_then(|r| r.get::<&[u8], _>(0))
        .map(<[u8]>::len);
    match len {
        Some(n) if n == payload.len() => Ok(1),
        _ => Err(BenchError::WrongResult("length of the returned value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_scenarios_declare_their_columns() {
        let scenarios = all(SELECT_ROWS).expect("scenarios");
        let enc16 = scenarios
            .iter()
            .find(|s| s.name == "insert_enc16")
            .expect("enc16");
        assert_eq!(enc16.columns.len(), 16);
        assert_eq!(enc16.columns[15].column, "c16");
        assert_eq!(enc16.columns[0].table, "bench_ins16");
        assert!(enc16.is_mapped());
        let small = scenarios.iter().find(|s| s.name == "small").expect("small");
        assert!(!small.is_mapped());
    }

    #[test]
    fn baselines_use_the_plaintext_twin() {
        let scenarios = all(10).expect("scenarios");
        let enc4 = scenarios
            .iter()
            .find(|s| s.name == "select_100k_enc4")
            .expect("enc4");
        let direct = enc4.for_target(TargetKind::Direct);
        assert_eq!(direct.table(), Some("bench_rows"));
        assert!(!direct.is_mapped());
        let copy = enc4.for_target(TargetKind::ByteCopy);
        assert_eq!(copy.table(), Some("bench_rows"));
        let proxy = enc4.for_target(TargetKind::Tdsguard);
        assert_eq!(proxy.table(), Some("bench_rows_enc"));
        assert_eq!(proxy.columns.len(), 4);
        let small = &scenarios[0];
        assert_eq!(small.for_target(TargetKind::Direct).work, small.work);
    }

    #[test]
    fn fill_statement_holds_one_tuple_per_row() {
        let sql = fill_statement("t", 10, 13);
        assert!(sql.starts_with("INSERT INTO t (id, c1, c2, c3, c4, qty, price) VALUES (10, "));
        assert_eq!(sql.matches("N'name-").count(), 3);
    }
}
