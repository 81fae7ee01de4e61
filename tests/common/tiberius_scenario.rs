//! The driver scenario of tests/drivers/scenario.py, written for tiberius:
//! create a table, insert three rows with parameters, read them back by id
//! and by a parameterized equality, and compare every value.

use std::borrow::Cow;

use tiberius::numeric::Numeric;
use tiberius::time::Date;
use tiberius::{Client, ColumnData, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::Compat;

pub type Tiberius = Client<Compat<TcpStream>>;

/// 10,000 characters, as in scenario.py.
pub fn long_text() -> String {
    (0..10_000u32)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect()
}

/// A `date` parameter: tiberius without its chrono feature has no date
/// type that implements `ToSql`, so the raw day count is sent.
pub struct SqlDate(pub Option<u32>);

impl ToSql for SqlDate {
    fn to_sql(&self) -> ColumnData<'_> {
        ColumnData::Date(self.0.map(Date::new))
    }
}

/// One row as written and as expected back.
pub struct Expected {
    pub full_name: Option<String>,
    /// Days since 0001-01-01.
    pub birth_date: Option<u32>,
    pub ssn: Option<String>,
    pub notes: Option<String>,
    /// Hundredths.
    pub balance: Option<i128>,
    pub photo: Option<Vec<u8>>,
}

pub fn rows() -> Vec<Expected> {
    vec![
        Expected {
            full_name: Some("Zoë".into()),
            birth_date: Some(724_334), // 1984-02-29
            ssn: Some("123-45-6789".into()),
            notes: Some(long_text()),
            balance: Some(1_234_567_890),
            photo: Some((0..=255u8).cycle().take(1024).collect()),
        },
        Expected {
            full_name: Some("Nguyễn".into()),
            birth_date: None,
            ssn: Some("987-65-4321".into()),
            notes: Some(String::new()),
            balance: Some(-1),
            photo: Some(Vec::new()),
        },
        Expected {
            full_name: Some(String::new()),
            birth_date: Some(730_849), // 2001-12-31
            ssn: None,
            notes: None,
            balance: None,
            photo: None,
        },
    ]
}

const COLUMNS: &str = "full_name, birth_date, ssn, notes, balance, photo";

/// Runs the scenario; returns the differences found (empty when all matched).
pub async fn run(client: &mut Tiberius, table: &str) -> Vec<String> {
    create(client, table).await;
    for row in rows() {
        insert(client, table, &row).await;
    }
    let mut failures = Vec::new();
    for (i, expected) in rows().iter().enumerate() {
        let sql = format!("SELECT {COLUMNS} FROM {table} WHERE id = @P1");
        let got = select(client, &sql, &(i as i32 + 1)).await;
        check_one(&format!("id {}", i + 1), expected, got, &mut failures);
    }
    let sql = format!("SELECT {COLUMNS} FROM {table} WHERE ssn = @P1");
    let got = select(client, &sql, &"987-65-4321").await;
    check_one("ssn lookup", &rows()[1], got, &mut failures);
    failures
}

async fn create(client: &mut Tiberius, table: &str) {
    let sql = format!(
        "IF OBJECT_ID('{table}') IS NOT NULL DROP TABLE {table}; \
         CREATE TABLE {table} (id int IDENTITY(1,1) PRIMARY KEY, full_name nvarchar(50), \
         birth_date date, ssn char(11), notes nvarchar(max), balance decimal(10,2), \
         photo varbinary(max))"
    );
    client
        .simple_query(sql)
        .await
        .expect("create runs")
        .into_results()
        .await
        .expect("create completes");
}

async fn insert(client: &mut Tiberius, table: &str, row: &Expected) {
    let sql = format!("INSERT INTO {table} ({COLUMNS}) VALUES (@P1, @P2, @P3, @P4, @P5, @P6)");
    let balance = row.balance.map(|b| Numeric::new_with_scale(b, 2));
    let date = SqlDate(row.birth_date);
    let params: [&dyn ToSql; 6] = [
        &row.full_name,
        &date,
        &row.ssn,
        &row.notes,
        &balance,
        &row.photo,
    ];
    let result = client.execute(sql, &params).await.expect("insert runs");
    assert_eq!(result.rows_affected(), [1], "insert reports one row");
}

async fn select(
    client: &mut Tiberius,
    sql: &str,
    param: &dyn ToSql,
) -> Vec<Vec<ColumnData<'static>>> {
    let stream = client.query(sql, &[param]).await.expect("select runs");
    let rows = stream.into_first_result().await.expect("select completes");
    rows.into_iter()
        .map(|row| row.into_iter().collect())
        .collect()
}

fn check_one(
    at: &str,
    expected: &Expected,
    got: Vec<Vec<ColumnData<'static>>>,
    failures: &mut Vec<String>,
) {
    let [row] = got.as_slice() else {
        failures.push(format!("{at}: {} rows", got.len()));
        return;
    };
    let wanted = [
        ColumnData::String(expected.full_name.clone().map(Cow::Owned)),
        ColumnData::Date(expected.birth_date.map(Date::new)),
        ColumnData::String(expected.ssn.clone().map(Cow::Owned)),
        ColumnData::String(expected.notes.clone().map(Cow::Owned)),
        ColumnData::Numeric(expected.balance.map(|b| Numeric::new_with_scale(b, 2))),
        ColumnData::Binary(expected.photo.clone().map(Cow::Owned)),
    ];
    for (i, (w, g)) in wanted.iter().zip(row).enumerate() {
        if w != g {
            failures.push(format!(
                "{at}: column {i} is {}, expected {}",
                show(g),
                show(w)
            ));
        }
    }
}

fn show(v: &ColumnData<'_>) -> String {
    let text = format!("{v:?}");
    text.chars().take(80).collect()
}
