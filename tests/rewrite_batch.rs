//! Ad-hoc SQL batches: literal rewriting that keeps the rest of the text
//! byte-identical, schema rewriting, bulk load refusal and every fail-closed
//! case with its error number.

mod rewrite_common;

use rewrite_common::*;
use tdsguard::rewrite::{Outcome, Session};
use tdsguard::tds::sql_batch::SqlBatch;

fn batch(text: &str) -> SqlBatch {
    SqlBatch {
        all_headers: None,
        text: text.into(),
    }
}

fn rewrite(session: &mut Session, text: &str) -> String {
    match session.handle_sql_batch(&batch(text)).unwrap() {
        Outcome::Rewritten(b) => b.text,
        other => panic!("not rewritten: {other:?}"),
    }
}

fn refused(text: &str) -> u32 {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    match session.handle_sql_batch(&batch(text)).unwrap() {
        Outcome::Refused(r) => {
            assert!(!r.message.is_empty());
            r.number()
        }
        other => panic!("not refused: {text}: {other:?}"),
    }
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// Splits `text` around the single `0x...` literal.
fn around_hex(text: &str) -> (&str, Vec<u8>, &str) {
    let start = text.find("0x").unwrap();
    let end = start
        + 2
        + text[start + 2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(text.len() - start - 2);
    (&text[..start], unhex(&text[start + 2..end]), &text[end..])
}

#[test]
fn insert_literal_becomes_ciphertext_and_the_rest_stays() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let sql = "/* pymssql */ INSERT INTO dbo.Patients (Id, Ssn)\r\n  VALUES (1, '123-45-6789')  -- tail é\n";
    let out = rewrite(&mut session, sql);
    let (before, env, after) = around_hex(&out);
    assert_eq!(
        before,
        "/* pymssql */ INSERT INTO dbo.Patients (Id, Ssn)\r\n  VALUES (1, "
    );
    assert_eq!(after, ")  -- tail é\n");
    assert_eq!(open("patients", "ssn", "char(11)", &env), b"123-45-6789");
}

#[test]
fn update_set_and_where_literals_are_sealed() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let out = rewrite(
        &mut session,
        "UPDATE Patients SET Name = N'Zoë' WHERE Ssn = '123-45-6789' AND Id = 3",
    );
    assert!(out.starts_with("UPDATE Patients SET Name = 0x"));
    assert!(out.contains(" WHERE Ssn = 0x"));
    assert!(out.ends_with(" AND Id = 3"));
    assert!(!contains_text(out.as_bytes(), "Zoë") && !out.contains("123-45"));
}

#[test]
fn deterministic_literals_match_parameters_and_pad_char() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let a = rewrite(&mut session, "SELECT Id FROM Patients WHERE Ssn = '1'");
    let b = rewrite(&mut session, "SELECT Id FROM Patients WHERE Ssn = N'1   '");
    assert_eq!(
        around_hex(&a).1,
        around_hex(&b).1,
        "char(11) pads both to the same value"
    );
    let (_, env, _) = around_hex(&a);
    assert_eq!(open("patients", "ssn", "char(11)", &env), b"1          ");
}

#[test]
fn null_stays_null_and_empty_string_is_sealed() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let out = rewrite(
        &mut session,
        "INSERT INTO Patients (Ssn, Name) VALUES (NULL, N'')",
    );
    assert!(out.starts_with("INSERT INTO Patients (Ssn, Name) VALUES (NULL, 0x"));
    let (_, env, _) = around_hex(&out);
    assert_eq!(
        open("patients", "name", "nvarchar(50)", &env),
        Vec::<u8>::new()
    );
}

#[test]
fn conversions_and_their_refusals() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let out = rewrite(
        &mut session,
        "INSERT INTO Patients (Dob) VALUES ('20010203')",
    );
    let (_, env, _) = around_hex(&out);
    assert_eq!(env.len(), 3 + 38);
    assert_eq!(
        refused("INSERT INTO Patients (Ssn) VALUES ('123-45-67890')"),
        50111
    );
    assert_eq!(
        refused("INSERT INTO Patients (Dob) VALUES ('03/02/2001')"),
        50110
    );
    assert_eq!(refused("INSERT INTO Patients (Dob) VALUES (5)"), 50110);
}

#[test]
fn schema_statements_get_the_storage_type() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let out = rewrite(&mut session, "CREATE TABLE [dbo].[Patients] ([Id] int NOT NULL, [Ssn] char(11) NULL, [Name] nvarchar(50), Dob date)");
    assert_eq!(out, "CREATE TABLE [dbo].[Patients] ([Id] int NOT NULL, [Ssn] varbinary(49) NULL, [Name] varbinary(138), Dob varbinary(41))");
    let out = rewrite(&mut session, "ALTER TABLE Patients ADD Ssn char(11) NULL");
    assert_eq!(out, "ALTER TABLE Patients ADD Ssn varbinary(49) NULL");
}

#[test]
fn untouched_batches_are_unchanged() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    for sql in [
        "SELECT 1",
        "SELECT name FROM sys.databases ORDER BY name",
        "EXEC sp_who",
    ] {
        assert_eq!(
            session.handle_sql_batch(&batch(sql)).unwrap(),
            Outcome::Unchanged,
            "{sql}"
        );
    }
}

#[test]
fn every_fail_closed_case_has_its_number() {
    assert_eq!(refused("SELECT Ssn FROM Patients WHERE ((("), 50100);
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE Name LIKE N'Zo%'"),
        50101
    );
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE Ssn NOT LIKE '1%'"),
        50101
    );
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE Dob >= '2000-01-01'"),
        50102
    );
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE Dob BETWEEN '2000-01-01' AND '2001-01-01'"),
        50102
    );
    assert_eq!(refused("SELECT Id FROM Patients ORDER BY Dob DESC"), 50103);
    assert_eq!(
        refused("SELECT Name, COUNT(*) FROM Patients GROUP BY Name"),
        50103
    );
    assert_eq!(refused("SELECT MIN(Dob) FROM Patients"), 50103);
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE Name = N'Zoë'"),
        50104
    );
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE Name IN (N'a', N'b')"),
        50104
    );
    assert_eq!(refused("SELECT SUBSTRING(Ssn, 1, 3) FROM Patients"), 50105);
    assert_eq!(
        refused("SELECT Id FROM Patients WHERE YEAR(Dob) = 2000"),
        50105
    );
    assert_eq!(
        refused("SELECT a.Id FROM Patients a, Patients b WHERE a.Ssn = b.Ssn"),
        50106
    );
    assert_eq!(refused("UPDATE Patients SET Ssn = Id"), 50106);
    assert_eq!(
        refused("INSERT INTO Patients (Ssn) SELECT Code FROM Staging"),
        50106
    );
    assert_eq!(
        refused("INSERT INTO Patients VALUES ('123-45-6789')"),
        50107
    );
    assert_eq!(
        refused("DECLARE @s char(11) = '1'\nINSERT INTO Patients (Ssn) VALUES (@s)"),
        50107
    );
    assert_eq!(
        refused("INSERT BULK dbo.Patients ([Ssn] VarChar(11) COLLATE Latin1_General_CI_AS)"),
        50108
    );
    assert_eq!(
        refused("INSERT INTO Patients (Dob) VALUES ('2001-02-30')"),
        50110
    );
}

#[test]
fn a_mapped_procedure_executed_from_batch_text_is_refused() {
    let procs = [procedure("dbo.FindPatient", &[("@Ssn", "Patients.Ssn")])];
    let rw = rewriter(&patients(), &procs);
    let mut session = rw.session(DB);
    let outcome = session
        .handle_sql_batch(&batch("EXEC dbo.FindPatient @Ssn = '123-45-6789'"))
        .unwrap();
    let Outcome::Refused(r) = outcome else {
        panic!("not refused")
    };
    assert_eq!(r.number(), 50107);
}
