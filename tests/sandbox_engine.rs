//! End-to-end tests of the sandbox execution engine: T-SQL batches in, typed results out.

use std::time::Instant;

use tdsguard::sandbox::engine::types::Date;
use tdsguard::sandbox::engine::{
    ColumnDesc, DoneInfo, Engine, EnvChange, Len, Param, ResultSink, ReturnValue, Session,
    SqlError, SqlType, Value,
};

#[derive(Debug)]
enum Event {
    Columns(Vec<ColumnDesc>),
    Row(Vec<Value>),
    Done(DoneInfo),
    Error(SqlError),
    Env(EnvChange),
    Status(i32),
    Return(ReturnValue),
}

#[derive(Default)]
struct Collect {
    events: Vec<Event>,
}

impl ResultSink for Collect {
    fn columns(&mut self, columns: &[ColumnDesc]) {
        self.events.push(Event::Columns(columns.to_vec()));
    }
    fn row(&mut self, values: &[Value]) {
        self.events.push(Event::Row(values.to_vec()));
    }
    fn done(&mut self, done: DoneInfo) {
        self.events.push(Event::Done(done));
    }
    fn error(&mut self, error: SqlError) {
        self.events.push(Event::Error(error));
    }
    fn env_change(&mut self, change: EnvChange) {
        self.events.push(Event::Env(change));
    }
    fn return_status(&mut self, status: i32) {
        self.events.push(Event::Status(status));
    }
    fn return_value(&mut self, value: ReturnValue) {
        self.events.push(Event::Return(value));
    }
}

type ResultSet = (Vec<ColumnDesc>, Vec<Vec<Value>>);

impl Collect {
    fn results(&self) -> Vec<ResultSet> {
        let mut out: Vec<ResultSet> = Vec::new();
        for e in &self.events {
            match e {
                Event::Columns(c) => out.push((c.clone(), Vec::new())),
                Event::Row(r) => out
                    .last_mut()
                    .expect("row before columns")
                    .1
                    .push(r.clone()),
                _ => {}
            }
        }
        out
    }

    /// Error numbers with class > 10.
    fn errors(&self) -> Vec<i32> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Error(err) if err.class > 10 => Some(err.number),
                _ => None,
            })
            .collect()
    }

    fn dones(&self) -> Vec<DoneInfo> {
        self.events
            .iter()
            .filter_map(|e| {
                if let Event::Done(d) = e {
                    Some(*d)
                } else {
                    None
                }
            })
            .collect()
    }

    fn envs(&self) -> Vec<EnvChange> {
        self.events
            .iter()
            .filter_map(|e| {
                if let Event::Env(c) = e {
                    Some(c.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    fn scalar(&self) -> Value {
        let results = self.results();
        results
            .last()
            .and_then(|r| r.1.first())
            .and_then(|row| row.first())
            .cloned()
            .expect("a scalar result")
    }
}

struct Db {
    _dir: tempfile::TempDir,
    engine: Engine,
    session: Session,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path().join("sandbox.sqlite")).unwrap();
        let session = engine.new_session().unwrap();
        Db {
            _dir: dir,
            engine,
            session,
        }
    }

    fn run(&mut self, sql: &str) -> Collect {
        self.run_with(sql, &[])
    }

    fn run_with(&mut self, sql: &str, params: &[Param]) -> Collect {
        let mut sink = Collect::default();
        self.engine
            .execute_batch(&mut self.session, sql, params, &mut sink);
        sink
    }

    fn ok(&mut self, sql: &str) -> Collect {
        let c = self.run(sql);
        assert!(c.errors().is_empty(), "{sql}: {:?}", c.events);
        c
    }
}

fn p(name: &str, declared: SqlType, value: Value) -> Param {
    Param {
        name: name.into(),
        declared,
        value,
        output: false,
    }
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

const PATIENTS: &str = "CREATE TABLE dbo.Patients (
    id int IDENTITY(1,1) PRIMARY KEY,
    name nvarchar(50) NOT NULL,
    born date NULL,
    ssn char(11) NULL,
    notes nvarchar(max) NULL,
    balance decimal(10,2) NULL,
    photo varbinary(max) NULL)";

fn insert_patient(
    db: &mut Db,
    name: &str,
    born: Value,
    ssn: Value,
    notes: Value,
    balance: Value,
    photo: Value,
) -> Collect {
    let sql = "INSERT INTO dbo.Patients (name, born, ssn, notes, balance, photo) \
               VALUES (@p1, @p2, @p3, @p4, @p5, @p6); SELECT SCOPE_IDENTITY()";
    let params = [
        p("@p1", SqlType::NVarChar(Len::N(50)), s(name)),
        p("@p2", SqlType::Date, born),
        p("@p3", SqlType::Char(11), ssn),
        p("@p4", SqlType::NVarChar(Len::Max), notes),
        p(
            "@p5",
            SqlType::Decimal {
                precision: 10,
                scale: 2,
            },
            balance,
        ),
        p("@p6", SqlType::VarBinary(Len::Max), photo),
    ];
    db.run_with(sql, &params)
}

#[test]
fn values_round_trip_through_parameters() {
    let mut db = Db::new();
    db.ok(PATIENTS);
    let long: String = "ab€".repeat(3334).chars().take(10_000).collect();
    let born = Value::Date(Date {
        year: 1984,
        month: 2,
        day: 29,
    });
    let rows = [
        (
            "Zoë",
            born.clone(),
            s("123-45-6789"),
            s("first"),
            Value::Decimal {
                value: 123_456,
                scale: 2,
            },
            Value::Bytes(vec![0, 1, 2, 255]),
        ),
        (
            "Nguyễn",
            Value::Null,
            s("12"),
            s(""),
            Value::Decimal {
                value: -5,
                scale: 2,
            },
            Value::Bytes(vec![]),
        ),
        (
            "",
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ),
        (
            "long",
            born.clone(),
            s(""),
            s(&long),
            Value::Decimal {
                value: 9_999_999_999,
                scale: 2,
            },
            Value::Bytes(vec![7; 10_000]),
        ),
    ];
    for (i, (name, b, ssn, notes, bal, photo)) in rows.iter().enumerate() {
        let c = insert_patient(
            &mut db,
            name,
            b.clone(),
            ssn.clone(),
            notes.clone(),
            bal.clone(),
            photo.clone(),
        );
        assert!(c.errors().is_empty(), "{:?}", c.events);
        assert_eq!(
            c.scalar(),
            Value::Decimal {
                value: i as i128 + 1,
                scale: 0
            }
        );
        assert_eq!(c.dones().first().and_then(|d| d.row_count), Some(1));
    }

    for (i, (name, b, ssn, notes, bal, photo)) in rows.iter().enumerate() {
        let id = i as i64 + 1;
        let by_id = db.run_with(
            "SELECT id, name, born, ssn, notes, balance, photo FROM Patients WHERE id = @id",
            &[p("@id", SqlType::Int, Value::Int(id))],
        );
        let by_name = db.run_with(
            "SELECT * FROM dbo.Patients WHERE name = @n",
            &[p("@n", SqlType::NVarChar(Len::N(50)), s(name))],
        );
        for c in [&by_id, &by_name] {
            let results = c.results();
            assert_eq!(results.len(), 1, "{:?}", c.events);
            let row = results[0].1.first().expect("one row").clone();
            let padded_ssn = match ssn {
                Value::String(v) => Value::String(format!("{v:<11}")),
                other => other.clone(),
            };
            assert_eq!(
                row,
                vec![
                    Value::Int(id),
                    s(name),
                    b.clone(),
                    padded_ssn,
                    notes.clone(),
                    bal.clone(),
                    photo.clone()
                ],
                "row {id}"
            );
        }
    }
}

#[test]
fn result_metadata_is_exact() {
    let mut db = Db::new();
    db.ok(PATIENTS);
    let c = db.ok("SELECT * FROM Patients");
    let cols = &c.results()[0].0;
    let types: Vec<SqlType> = cols.iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        vec![
            SqlType::Int,
            SqlType::NVarChar(Len::N(50)),
            SqlType::Date,
            SqlType::Char(11),
            SqlType::NVarChar(Len::Max),
            SqlType::Decimal {
                precision: 10,
                scale: 2
            },
            SqlType::VarBinary(Len::Max)
        ]
    );
    assert!(cols[0].identity && !cols[0].nullable);
    assert!(!cols[1].nullable && cols[2].nullable);
    assert_eq!(cols[1].collation, Some("SQL_Latin1_General_CP1_CI_AS"));
    assert_eq!(cols[1].name, "name");

    let c = db.ok("SELECT COUNT(*), 1, 'ab', N'a', GETDATE(), SYSDATETIME(), @@VERSION, 1.50, CAST(1 AS bigint), @@SPID, DB_NAME() AS db FROM Patients");
    let cols = &c.results()[0].0;
    let types: Vec<SqlType> = cols.iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        vec![
            SqlType::Int,
            SqlType::Int,
            SqlType::VarChar(Len::N(2)),
            SqlType::NVarChar(Len::N(1)),
            SqlType::DateTime,
            SqlType::DateTime2(7),
            SqlType::NVarChar(Len::N(300)),
            SqlType::Numeric {
                precision: 3,
                scale: 2
            },
            SqlType::BigInt,
            SqlType::SmallInt,
            SqlType::NVarChar(Len::N(128)),
        ]
    );
    assert_eq!(cols[10].name, "db");
    let row = c.results()[0].1[0].clone();
    assert_eq!(row[0], Value::Int(0));
    assert_eq!(
        row[7],
        Value::Decimal {
            value: 150,
            scale: 2
        }
    );
    assert_eq!(row[10], s("tdsguard"));
    assert!(matches!(&row[6], Value::String(v) if v.contains("tdsguard sandbox")));

    let described = db
        .engine
        .describe_first_result_set(
            &mut db.session,
            "SELECT balance, SUM(balance) AS total FROM Patients GROUP BY balance",
        )
        .unwrap();
    assert_eq!(
        described[0].ty,
        SqlType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    assert_eq!(
        described[1].ty,
        SqlType::Decimal {
            precision: 38,
            scale: 2
        }
    );

    let undeclared = db
        .engine
        .describe_undeclared_parameters(
            &mut db.session,
            "SELECT id FROM Patients WHERE ssn = @a AND id = @b",
        )
        .unwrap();
    assert_eq!(
        undeclared,
        vec![
            ("@a".to_string(), SqlType::Char(11)),
            ("@b".to_string(), SqlType::Int)
        ]
    );
    let undeclared = db
        .engine
        .describe_undeclared_parameters(
            &mut db.session,
            "INSERT INTO Patients (name, balance) VALUES (@n, @b)",
        )
        .unwrap();
    assert_eq!(
        undeclared,
        vec![
            ("@n".to_string(), SqlType::NVarChar(Len::N(50))),
            (
                "@b".to_string(),
                SqlType::Decimal {
                    precision: 10,
                    scale: 2
                }
            )
        ]
    );

    let c = db.ok("SET FMTONLY ON; SELECT name FROM Patients; SET FMTONLY OFF");
    assert_eq!(c.results().len(), 1);
    assert!(c.results()[0].1.is_empty());
}

#[test]
fn errors_carry_sql_server_numbers() {
    let mut db = Db::new();
    db.ok(PATIENTS);
    db.ok("INSERT INTO Patients (name) VALUES (N'a')");
    let cases: &[(&str, i32)] = &[
        ("SELECT * FROM Missing", 208),
        ("SELECT nope FROM Patients", 207),
        ("SELECT * FORM Patients", 102),
        ("INSERT INTO Patients (name) VALUES (N'123456789012345678901234567890123456789012345678901')", 2628),
        ("INSERT INTO Patients (name) VALUES (NULL)", 515),
        ("INSERT INTO Patients (id, name) VALUES (1, N'x')", 544),
        ("SET IDENTITY_INSERT Patients ON; INSERT INTO Patients (id, name) VALUES (1, N'x')", 2627),
        ("INSERT INTO Patients (name, balance) VALUES (N'x', 123456789.5)", 8115),
        ("INSERT INTO Patients (name, born) VALUES (N'x', 'not a date')", 241),
        ("SELECT CAST('abc' AS int)", 245),
        ("SELECT @undeclared", 137),
        ("INSERT INTO Patients (name, ssn) VALUES (N'x', 'abcdefghijkl')", 2628),
        ("INSERT INTO Patients (name, born) VALUES (N'x')", 109),
        ("SELECT * FROM Patients FOR XML AUTO", 40701),
        ("COMMIT", 3902),
        ("EXEC no_such_proc", 2812),
    ];
    for (sql, number) in cases {
        let c = db.run(sql);
        assert_eq!(c.errors(), vec![*number], "{sql}: {:?}", c.events);
        let err = c
            .events
            .iter()
            .find_map(|e| {
                if let Event::Error(e) = e {
                    Some(e.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(err.class, 16);
        assert!(c.dones().last().is_some_and(|d| d.error));
    }
    let c = db.ok("SELECT COUNT(*) FROM Patients");
    assert_eq!(c.scalar(), Value::Int(1));
}

#[test]
fn batches_continue_or_abort_like_sql_server() {
    let mut db = Db::new();
    db.ok("CREATE TABLE t (id int PRIMARY KEY, v varchar(3))");
    let c = db.run("INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (1, 'b'); INSERT INTO t VALUES (2, 'abcd'); SELECT COUNT(*) FROM t");
    assert_eq!(c.errors(), vec![2627, 2628]);
    assert_eq!(c.scalar(), Value::Int(1));
    assert_eq!(
        c.events
            .iter()
            .filter(|e| matches!(e, Event::Error(e) if e.line == 1))
            .count(),
        2
    );

    let c = db.run("SELECT * FROM missing\nSELECT 2");
    assert_eq!(c.errors(), vec![208]);
    assert!(c.results().is_empty());

    let c = db.run("SELECT 1\nSELECT FROM WHERE\nSELECT 3");
    assert_eq!(c.errors(), vec![102]);
    assert!(
        c.results().is_empty(),
        "a syntax error stops the whole batch"
    );
    let line = c.events.iter().find_map(|e| {
        if let Event::Error(e) = e {
            Some(e.line)
        } else {
            None
        }
    });
    assert_eq!(line, Some(2));

    let c = db.run("INSERT INTO t (id) OUTPUT INSERTED.id VALUES (9)");
    assert_eq!(c.errors(), vec![40701]);

    let c = db.run("INSERT INTO t VALUES (1, 'a'); SELECT @@ERROR");
    assert_eq!(c.scalar(), Value::Int(2627));
    let c = db.ok("SELECT 1; SELECT @@ERROR");
    assert_eq!(c.scalar(), Value::Int(0));

    let c = db.run("SELECT 1\nSELECT 2 FROM t WHERE id = 1\nINSERT INTO t VALUES (3, 'c')\nSELECT COUNT(*) FROM t");
    assert!(c.errors().is_empty(), "statements need no `;` between them");
    assert_eq!(c.scalar(), Value::Int(2));
}

#[test]
fn prepared_handles_count_from_one() {
    let mut db = Db::new();
    db.ok("CREATE TABLE t (id int, name nvarchar(20))");
    db.ok("INSERT INTO t VALUES (1, N'one'), (2, N'two')");
    let h1 = db
        .engine
        .prepare(
            &mut db.session,
            "@id int",
            "SELECT name FROM t WHERE id = @id",
        )
        .unwrap();
    let h2 = db
        .engine
        .prepare(
            &mut db.session,
            "@n nvarchar(20)",
            "SELECT id FROM t WHERE name = @n",
        )
        .unwrap();
    assert_eq!((h1, h2), (1, 2));
    let mut sink = Collect::default();
    db.engine
        .execute_prepared(
            &mut db.session,
            h1,
            &[p("@id", SqlType::Int, Value::Int(2))],
            &mut sink,
        )
        .unwrap();
    assert_eq!(sink.scalar(), s("two"));
    let mut sink = Collect::default();
    db.engine
        .execute_prepared(
            &mut db.session,
            h2,
            &[p("@n", SqlType::NVarChar(Len::N(20)), s("ONE"))],
            &mut sink,
        )
        .unwrap();
    assert_eq!(
        sink.scalar(),
        Value::Int(1),
        "comparisons are case-insensitive like CI_AS"
    );
    db.engine.unprepare(&mut db.session, h1).unwrap();
    assert_eq!(
        db.engine.unprepare(&mut db.session, h1).unwrap_err().number,
        8179
    );

    let mut sink = Collect::default();
    let args = [
        p("", SqlType::Int, Value::Null),
        p("", SqlType::NVarChar(Len::Max), s("@id int")),
        p(
            "",
            SqlType::NVarChar(Len::Max),
            s("SELECT name FROM t WHERE id = @id"),
        ),
        p("@id", SqlType::Int, Value::Int(1)),
    ];
    db.engine
        .call_procedure(&mut db.session, "sp_prepexec", &args, &mut sink);
    assert_eq!(sink.scalar(), s("one"));
    let handle = sink.events.iter().find_map(|e| {
        if let Event::Return(r) = e {
            Some(r.value.clone())
        } else {
            None
        }
    });
    assert_eq!(handle, Some(Value::Int(3)));
}

#[test]
fn transactions_report_transitions() {
    let mut db = Db::new();
    db.ok("CREATE TABLE t (id int)");
    let c = db.ok("BEGIN TRAN; INSERT INTO t VALUES (1); SELECT @@TRANCOUNT");
    assert_eq!(c.scalar(), Value::Int(1));
    assert_eq!(c.envs(), vec![EnvChange::BeginTran { descriptor: 1 }]);
    assert!(c.dones().last().unwrap().in_transaction);
    assert_eq!(db.session.transaction_count(), 1);
    let c = db.ok("ROLLBACK TRANSACTION");
    assert_eq!(c.envs(), vec![EnvChange::Rollback { descriptor: 1 }]);
    assert_eq!(db.ok("SELECT COUNT(*) FROM t").scalar(), Value::Int(0));

    let c = db.ok("BEGIN TRANSACTION; BEGIN TRAN; INSERT INTO t VALUES (2); COMMIT; SELECT @@TRANCOUNT; COMMIT TRAN");
    assert_eq!(c.scalar(), Value::Int(1));
    assert_eq!(
        c.envs(),
        vec![
            EnvChange::BeginTran { descriptor: 2 },
            EnvChange::Commit { descriptor: 2 }
        ]
    );
    assert_eq!(db.ok("SELECT COUNT(*) FROM t").scalar(), Value::Int(1));
    assert_eq!(db.run("ROLLBACK").errors(), vec![3903]);
}

#[test]
fn variables_identity_and_nocount() {
    let mut db = Db::new();
    db.ok("CREATE TABLE t (id bigint IDENTITY(100, 10) PRIMARY KEY, v decimal(6,3) DEFAULT 1.5, w nvarchar(10))");
    let c = db.ok(
        "INSERT INTO t (w) VALUES (N'a'), (N'b'); SELECT SCOPE_IDENTITY(), @@IDENTITY, @@ROWCOUNT",
    );
    assert_eq!(
        c.results()[0].1[0],
        vec![
            Value::Decimal {
                value: 110,
                scale: 0
            },
            Value::Decimal {
                value: 110,
                scale: 0
            },
            Value::Int(2)
        ]
    );
    let c = db.ok("DECLARE @x int = 5, @y nvarchar(10); SET @y = N'b'; SELECT @x = id FROM t WHERE w = @y; SELECT @x, v, v * 2 FROM t WHERE id = @x");
    let row = c.results().last().unwrap().1[0].clone();
    assert_eq!(
        row,
        vec![
            Value::Int(110),
            Value::Decimal {
                value: 1500,
                scale: 3
            },
            Value::Decimal {
                value: 3000,
                scale: 3
            }
        ]
    );
    let c = db.ok("INSERT INTO t (w) SELECT w FROM t; SELECT MAX(id), SUM(v) FROM t");
    assert_eq!(
        c.results()[0].1[0],
        vec![
            Value::Int(130),
            Value::Decimal {
                value: 6000,
                scale: 3
            }
        ]
    );
    let c = db.ok("SET NOCOUNT ON; UPDATE t SET w = w + N'!' WHERE id > 100; SELECT TOP 1 w FROM t ORDER BY id");
    let done = c.dones();
    assert!(done.iter().all(|d| d.nocount && d.row_count.is_none()));
    assert!(db.session.nocount());
    assert_eq!(c.scalar(), s("a"));
    assert_eq!(db.ok("SELECT w FROM t WHERE id = 110").scalar(), s("b!"));
}

#[test]
fn catalog_views_and_databases() {
    let mut db = Db::new();
    db.ok(PATIENTS);
    let c = db.ok("SELECT name, object_id FROM sys.tables");
    assert_eq!(c.results()[0].1.len(), 1);
    assert_eq!(c.results()[0].1[0][0], s("Patients"));
    assert_eq!(c.results()[0].0[0].ty, SqlType::NVarChar(Len::N(128)));
    let c = db.ok("SELECT c.name, c.max_length, c.precision, c.scale, c.is_nullable FROM sys.columns c JOIN sys.tables t ON t.object_id = c.object_id WHERE t.name = 'Patients' ORDER BY c.column_id");
    let rows = &c.results()[0].1;
    assert_eq!(rows.len(), 7);
    assert_eq!(
        rows[1],
        vec![
            s("name"),
            Value::Int(100),
            Value::Int(0),
            Value::Int(0),
            Value::Bool(false)
        ]
    );
    assert_eq!(
        rows[5],
        vec![
            s("balance"),
            Value::Int(9),
            Value::Int(10),
            Value::Int(2),
            Value::Bool(true)
        ]
    );
    let c = db.ok("SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'Patients' AND COLUMN_NAME = 'notes'");
    assert_eq!(
        c.results()[0].1[0],
        vec![s("notes"), s("nvarchar"), Value::Int(-1)]
    );
    let c = db.ok("SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES");
    assert_eq!(c.scalar(), Value::Int(1));
    let c = db.ok("SELECT name FROM sys.types WHERE name = 'datetime2'");
    assert_eq!(c.scalar(), s("datetime2"));

    db.ok("IF OBJECT_ID('dbo.Patients', 'U') IS NOT NULL DROP TABLE dbo.Patients");
    assert_eq!(
        db.ok("SELECT COUNT(*) FROM sys.tables").scalar(),
        Value::Int(0)
    );
    db.ok("DROP TABLE IF EXISTS Patients");
    assert_eq!(db.run("DROP TABLE Patients").errors(), vec![3701]);

    db.ok("CREATE DATABASE Other");
    let c = db.ok("USE Other");
    assert_eq!(
        c.envs(),
        vec![EnvChange::Database {
            old: "tdsguard".into(),
            new: "Other".into()
        }]
    );
    assert_eq!(db.session.database(), "Other");
    db.ok("CREATE TABLE o (id int)");
    let c = db.ok("SELECT name, database_id, is_encrypted FROM sys.databases ORDER BY database_id");
    let names: Vec<Value> = c.results()[0].1.iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, vec![s("master"), s("tdsguard"), s("Other")]);
    assert_eq!(c.results()[0].1[0][2], Value::Bool(false));
    assert_eq!(db.ok("SELECT DB_NAME()").scalar(), s("Other"));
    db.ok("USE tdsguard");
    assert_eq!(db.run("SELECT * FROM o").errors(), vec![208]);
    assert_eq!(db.run("USE nowhere").errors(), vec![911]);
}

#[test]
fn procedures_and_sp_executesql() {
    let mut db = Db::new();
    db.ok("CREATE TABLE t (id int, name nvarchar(20))");
    db.ok("INSERT INTO t VALUES (1, N'one'), (2, N'two')");
    db.ok("CREATE PROCEDURE dbo.find @id int, @name nvarchar(20) = NULL OUTPUT AS BEGIN SELECT @name = name FROM t WHERE id = @id; SELECT id FROM t WHERE id = @id; RETURN 7 END");
    let c = db.ok("DECLARE @n nvarchar(20); EXEC find @id = 2, @name = @n OUTPUT; SELECT @n");
    assert_eq!(c.scalar(), s("two"));
    assert!(c.events.iter().any(|e| matches!(e, Event::Status(7))));
    assert_eq!(c.results()[0].1, vec![vec![Value::Int(2)]]);

    let c = db.ok("EXEC find 1");
    assert_eq!(c.results()[0].1, vec![vec![Value::Int(1)]]);
    assert_eq!(db.run("EXEC find").errors(), vec![201]);

    let c = db.ok("EXEC sp_executesql N'SELECT name FROM t WHERE id = @i', N'@i int', @i = 1");
    assert_eq!(c.scalar(), s("one"));

    let mut sink = Collect::default();
    let args = [
        p(
            "",
            SqlType::NVarChar(Len::Max),
            s("SELECT @out = COUNT(*) FROM t WHERE id > @min"),
        ),
        p(
            "",
            SqlType::NVarChar(Len::Max),
            s("@min int, @out int OUTPUT"),
        ),
        p("@min", SqlType::Int, Value::Int(0)),
        Param {
            name: "@out".into(),
            declared: SqlType::Int,
            value: Value::Null,
            output: true,
        },
    ];
    db.engine
        .call_procedure(&mut db.session, "sp_executesql", &args, &mut sink);
    assert!(sink.errors().is_empty(), "{:?}", sink.events);
    let out = sink.events.iter().find_map(|e| {
        if let Event::Return(r) = e {
            Some((r.name.clone(), r.value.clone()))
        } else {
            None
        }
    });
    assert_eq!(out, Some(("@out".to_string(), Value::Int(2))));

    let mut sink = Collect::default();
    db.engine.call_procedure(
        &mut db.session,
        "sp_datatype_info_100",
        &[p("", SqlType::SmallInt, Value::Int(4))],
        &mut sink,
    );
    let results = sink.results();
    assert_eq!(results[0].0.len(), 20);
    assert_eq!(results[0].1.len(), 1);
    assert_eq!(results[0].1[0][0], s("int"));
}

#[test]
fn describe_procedures_return_typed_rows() {
    let mut db = Db::new();
    db.ok(PATIENTS);
    let mut sink = Collect::default();
    let sql = p(
        "",
        SqlType::NVarChar(Len::Max),
        s("SELECT id, balance FROM Patients WHERE name = @n"),
    );
    db.engine.call_procedure(
        &mut db.session,
        "sp_describe_first_result_set",
        std::slice::from_ref(&sql),
        &mut sink,
    );
    let results = sink.results();
    assert_eq!(results[0].0.len(), 39);
    let rows = &results[0].1;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.len() == 39));
    assert_eq!(rows[1][2], s("balance"));
    assert_eq!(rows[1][5], s("decimal(10,2)"));
    assert_eq!(rows[0][29], Value::Bool(true), "is_identity_column");

    let mut sink = Collect::default();
    db.engine.call_procedure(
        &mut db.session,
        "sp_describe_undeclared_parameters",
        &[sql],
        &mut sink,
    );
    let results = sink.results();
    assert_eq!(results[0].0.len(), 24);
    assert_eq!(results[0].1.len(), 1);
    assert_eq!(results[0].1[0][1], s("@n"));
    assert_eq!(results[0].1[0][3], s("nvarchar(50)"));
    assert!(sink.events.iter().any(|e| matches!(e, Event::Status(0))));
}

#[test]
fn driver_connection_probes() {
    let mut db = Db::new();
    let c = db.ok(
        "SET ANSI_WARNINGS ON, ANSI_PADDING ON; SET TEXTSIZE 2147483647; set quoted_identifier on; \
         SET TRANSACTION ISOLATION LEVEL READ COMMITTED; select @@version, @@spid, @@trancount, \
         SERVERPROPERTY('ProductVersion')",
    );
    let row = c.results()[0].1[0].clone();
    assert_eq!(row[1], Value::Int(i64::from(db.session.spid())));
    assert_eq!(row[2], Value::Int(0));
    assert_eq!(row[3], s("16.0.1000.6"));
}

struct CountRows(u64);

impl ResultSink for CountRows {
    fn columns(&mut self, _: &[ColumnDesc]) {}
    fn row(&mut self, values: &[Value]) {
        self.0 += values.len() as u64 / 6;
    }
    fn done(&mut self, _: DoneInfo) {}
    fn error(&mut self, e: SqlError) {
        panic!("{e}: {}", e.message);
    }
    fn env_change(&mut self, _: EnvChange) {}
    fn return_status(&mut self, _: i32) {}
    fn return_value(&mut self, _: ReturnValue) {}
}

#[test]
fn streaming_select_throughput() {
    let mut db = Db::new();
    db.ok("CREATE TABLE d (n int)");
    db.ok("INSERT INTO d VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)");
    db.ok("CREATE TABLE big (id int IDENTITY PRIMARY KEY, k int, name nvarchar(50), amount decimal(10,2), born date, score float)");
    let c = db.ok(
        "INSERT INTO big (k, name, amount, born, score) \
         SELECT a.n * 10000 + b.n * 1000 + c.n * 100 + d2.n * 10 + e.n, N'name ' + CAST(a.n AS nvarchar(5)), \
         b.n * 1.25, '2024-01-0' + CAST(c.n + 1 AS varchar(1)), e.n * 0.5 \
         FROM d a, d b, d c, d d2, d e",
    );
    assert_eq!(c.dones().first().and_then(|d| d.row_count), Some(100_000));
    let mut sink = CountRows(0);
    let start = Instant::now();
    db.engine.execute_batch(
        &mut db.session,
        "SELECT id, k, name, amount, born, score FROM big",
        &[],
        &mut sink,
    );
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(sink.0, 100_000);
    println!(
        "streamed {} rows x 6 columns in {secs:.3}s: {:.0} rows/s",
        sink.0,
        sink.0 as f64 / secs
    );
}

#[test]
fn temporal_and_guid_values() {
    use tdsguard::sandbox::engine::{DateTime, Time};
    let mut db = Db::new();
    db.ok("CREATE TABLE ev (id uniqueidentifier PRIMARY KEY, at datetime2(3) NOT NULL, d date, t time(7), ok bit, amt money)");
    let at = DateTime {
        date: Date {
            year: 2024,
            month: 12,
            day: 31,
        },
        time: Time {
            hour: 23,
            minute: 59,
            second: 58,
            nanos: 123_000_000,
        },
    };
    let guid = [
        0x6F, 0x96, 0x19, 0xFF, 0x8B, 0x86, 0xD0, 0x11, 0xB4, 0x2D, 0x00, 0xC0, 0x4F, 0xC9, 0x64,
        0xFF,
    ];
    let params = [
        p("@g", SqlType::UniqueIdentifier, Value::Guid(guid)),
        p("@at", SqlType::DateTime2(3), Value::DateTime2(at)),
        p("@ok", SqlType::Bit, Value::Bool(true)),
        p(
            "@amt",
            SqlType::Money,
            Value::Decimal {
                value: 12_345,
                scale: 4,
            },
        ),
    ];
    let c = db.run_with(
        "INSERT INTO ev VALUES (@g, @at, '2024-2-29', '10:11:12.5', @ok, @amt)",
        &params,
    );
    assert!(c.errors().is_empty(), "{:?}", c.events);
    let c = db.ok(
        "SELECT id, at, d, t, ok, amt, amt * 2 FROM ev \
         WHERE id = '6f9619ff-8b86-d011-b42d-00c04fc964ff' AND d = '2024-02-29' AND at > '2024-12-31'",
    );
    let rows = &c.results()[0].1;
    assert_eq!(rows.len(), 1);
    let expected = vec![
        Value::Guid(guid),
        Value::DateTime2(at),
        Value::Date(Date {
            year: 2024,
            month: 2,
            day: 29,
        }),
        Value::Time(Time {
            hour: 10,
            minute: 11,
            second: 12,
            nanos: 500_000_000,
        }),
        Value::Bool(true),
        Value::Decimal {
            value: 12_345,
            scale: 4,
        },
        Value::Decimal {
            value: 24_690,
            scale: 4,
        },
    ];
    assert_eq!(rows[0], expected);
    let c = db.run("INSERT INTO ev (id, at) VALUES ('not-a-guid', SYSDATETIME())");
    assert_eq!(c.errors(), vec![8169]);
}

#[test]
fn joins_grouping_and_expressions() {
    let mut db = Db::new();
    db.ok("CREATE TABLE [dbo].[Customers] (id int PRIMARY KEY, name varchar(20) NOT NULL, city nvarchar(20) NULL)");
    db.ok("CREATE TABLE Orders (id int IDENTITY PRIMARY KEY, customer_id int NOT NULL, total decimal(8,2) NOT NULL)");
    db.ok("CREATE INDEX ix_orders_customer ON Orders (customer_id)");
    db.ok("INSERT INTO Customers VALUES (1, 'Ann', N'Oslo'), (2, 'Bob', NULL), (3, 'Cy', N'Rome')");
    db.ok(
        "INSERT INTO Orders (customer_id, total) VALUES (1, 10.50), (1, 4.25), (2, 7), (3, 1.10)",
    );
    let c = db.ok(
        "SELECT c.name, COUNT(*) AS n, SUM(o.total) AS total, AVG(o.total) AS avg_total, \
         ISNULL(c.city, N'?') AS city, c.name + '!' AS shout \
         FROM dbo.Customers AS c JOIN tdsguard.dbo.Orders o ON o.customer_id = c.id \
         WHERE c.name LIKE '%' AND c.id IN (1, 2) AND o.total BETWEEN 1 AND 100 \
         GROUP BY c.name, c.city ORDER BY total DESC",
    );
    let (cols, rows) = &c.results()[0];
    let types: Vec<SqlType> = cols.iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        vec![
            SqlType::VarChar(Len::N(20)),
            SqlType::Int,
            SqlType::Decimal {
                precision: 38,
                scale: 2
            },
            SqlType::Decimal {
                precision: 38,
                scale: 6
            },
            SqlType::NVarChar(Len::N(20)),
            SqlType::VarChar(Len::N(21)),
        ]
    );
    assert_eq!(
        rows,
        &vec![
            vec![
                s("Ann"),
                Value::Int(2),
                Value::Decimal {
                    value: 1475,
                    scale: 2
                },
                Value::Decimal {
                    value: 7_375_000,
                    scale: 6
                },
                s("Oslo"),
                s("Ann!")
            ],
            vec![
                s("Bob"),
                Value::Int(1),
                Value::Decimal {
                    value: 700,
                    scale: 2
                },
                Value::Decimal {
                    value: 7_000_000,
                    scale: 6
                },
                s("?"),
                s("Bob!")
            ],
        ]
    );
    let c = db.ok("SELECT TOP 2 [id] FROM Orders WHERE total > (SELECT MIN(total) FROM Orders) ORDER BY total");
    assert_eq!(
        c.results()[0].1,
        vec![vec![Value::Int(2)], vec![Value::Int(3)]]
    );
    let c = db.ok("UPDATE Orders SET total = total * 2 WHERE customer_id = 1; DELETE FROM Orders WHERE total < 5; SELECT SUM(total), COUNT(*) FROM Orders");
    assert_eq!(c.dones()[0].row_count, Some(2));
    assert_eq!(c.dones()[1].row_count, Some(1));
    assert_eq!(
        c.results()[0].1[0],
        vec![
            Value::Decimal {
                value: 3650,
                scale: 2
            },
            Value::Int(3)
        ]
    );
    db.ok("ALTER TABLE Customers ADD email nvarchar(100) NULL");
    let c = db.ok("SELECT email FROM Customers WHERE id = 1");
    assert_eq!(c.results()[0].0[0].ty, SqlType::NVarChar(Len::N(100)));
    assert_eq!(c.scalar(), Value::Null);
}

#[test]
fn check_constraints_on_numeric_columns_are_enforced_as_547() {
    let mut db = Db::new();
    db.ok("CREATE TABLE dbo.K (key_id int NOT NULL, ratio float, \
         CONSTRAINT [CK_K_key_id] CHECK (key_id > 0 AND (ratio IS NULL OR ratio <= 1.5)))");
    db.ok("INSERT INTO dbo.K (key_id, ratio) VALUES (1, 0.5)");
    assert_eq!(
        db.run("INSERT INTO dbo.K (key_id) VALUES (0)").errors(),
        vec![547]
    );
    assert_eq!(
        db.run("UPDATE dbo.K SET ratio = 2 WHERE key_id = 1")
            .errors(),
        vec![547]
    );

    // A check the sandbox cannot enforce the way SQL Server does is refused,
    // not silently weakened.
    let refused = db.run("CREATE TABLE dbo.T (name nvarchar(10), CHECK (name <> N''))");
    assert_eq!(refused.errors().len(), 1);
    assert_ne!(refused.errors()[0], 547);
}

#[test]
fn long_decimal_literals_keep_every_digit() {
    let mut db = Db::new();
    db.ok("CREATE TABLE dbo.M (id int, m money, d decimal(18,4))");
    db.ok("INSERT INTO dbo.M (id, m, d) VALUES (1, 922337203685477.5807, 12345678901234.5678)");
    db.ok("INSERT INTO dbo.M (id, m) VALUES (2, -922337203685477.5808)");
    let rows = db.ok("SELECT m, d FROM dbo.M ORDER BY id").results();
    let decimal = |v: &Value| match v {
        Value::Decimal { value, scale } => Some((*value, *scale)),
        _ => None,
    };
    let rows = &rows[0].1;
    assert_eq!(decimal(&rows[0][0]), Some((i128::from(i64::MAX), 4)));
    assert_eq!(decimal(&rows[0][1]), Some((123_456_789_012_345_678, 4)));
    assert_eq!(decimal(&rows[1][0]), Some((i128::from(i64::MIN), 4)));
}
