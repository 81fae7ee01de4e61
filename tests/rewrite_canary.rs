//! Property: no plaintext of a mapped column survives in any rewritten
//! message, searched as UTF-8 and as UTF-16LE.

mod rewrite_common;

use proptest::prelude::*;
use rewrite_common::*;
use tdsguard::rewrite::{Outcome, DEFAULT_COLLATION};
use tdsguard::tds::rpc::{proc_id, ProcName, RpcCall, RpcParam, RpcRequest};
use tdsguard::tds::sql_batch::SqlBatch;
use tdsguard::tds::types::{NullableType, SqlValue, TypeInfo};

fn batch_bytes(text: String) -> Vec<u8> {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    match session
        .handle_sql_batch(&SqlBatch {
            all_headers: None,
            text,
        })
        .unwrap()
    {
        Outcome::Rewritten(b) => b.text_utf16(),
        other => panic!("not rewritten: {other:?}"),
    }
}

fn nvarchar(name: &str, s: &str) -> RpcParam {
    RpcParam::new(
        name,
        0,
        TypeInfo::nvarchar(8000, DEFAULT_COLLATION),
        &SqlValue::NVarChar(s.into()),
    )
    .unwrap()
}

fn varchar(s: &str) -> RpcParam {
    let ti = TypeInfo::VarLen {
        ty: tdsguard::tds::types::VarLenType::BigVarChar,
        max_len: 8000,
        collation: Some(DEFAULT_COLLATION),
    };
    RpcParam::new(
        "",
        0,
        ti,
        &SqlValue::varchar_from_text(s, DEFAULT_COLLATION).unwrap(),
    )
    .unwrap()
}

fn rpc_bytes(id: u16, params: Vec<RpcParam>) -> Vec<u8> {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let mut call = RpcCall::new(ProcName::Id(id), 0);
    call.params = params;
    let req = RpcRequest {
        all_headers: None,
        calls: vec![call],
    };
    match session.handle_rpc(&req).unwrap() {
        Outcome::Rewritten(r) => r.to_bytes().unwrap(),
        other => panic!("not rewritten: {other:?}"),
    }
}

fn assert_hidden(bytes: &[u8], canaries: &[&str]) {
    for c in canaries {
        assert!(!contains_text(bytes, c), "a canary survived");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_canary_survives(ssn in "[A-Z]{3}[0-9]{5}[A-Z]{3}", name in "[A-Za-z]{8,40}", day in 1u8..=28) {
        let dob = format!("1999-01-{day:02}");
        let canaries = [ssn.as_str(), name.as_str()];

        let insert = format!("INSERT INTO Patients (Id, Ssn, Name, Dob) VALUES (1, '{ssn}', N'{name}', '{dob}')");
        let bytes = batch_bytes(insert);
        assert_hidden(&bytes, &canaries);
        prop_assert!(!contains_text(&bytes, &dob));

        let update = format!("UPDATE Patients SET Name = N'{name}' WHERE Ssn = '{ssn}'\nSELECT Name FROM Patients WHERE Ssn IN ('{ssn}', N'{ssn}')");
        assert_hidden(&batch_bytes(update), &canaries);

        let stmt = nvarchar("", "INSERT INTO Patients (Ssn, Name) VALUES (@P0, @P1)");
        let decl = nvarchar("", "@P0 varchar(8000),@P1 nvarchar(4000)");
        let bytes = rpc_bytes(proc_id::SP_EXECUTESQL, vec![stmt, decl, varchar(&ssn), nvarchar("", &name)]);
        assert_hidden(&bytes, &canaries);

        let merge = "SET NOCOUNT ON;\nMERGE [Patients] USING (VALUES (@p0, @p1, 0)) AS i ([Name], [Ssn], _Position) ON 1=0\n\
                     WHEN NOT MATCHED THEN INSERT ([Name], [Ssn]) VALUES (i.[Name], i.[Ssn])\nOUTPUT INSERTED.[Id], i._Position;";
        let params = vec![
            nvarchar("@stmt", merge),
            nvarchar("@params", "@p0 nvarchar(50), @p1 nvarchar(11)"),
            nvarchar("@p0", &name),
            nvarchar("@p1", &ssn),
        ];
        assert_hidden(&rpc_bytes(proc_id::SP_EXECUTESQL, params), &canaries);

        let handle = RpcParam::new("", 0x01, TypeInfo::Nullable { ty: NullableType::IntN, len: 4 }, &SqlValue::Null).unwrap();
        let params = vec![
            handle,
            nvarchar("", "@a nvarchar(11),@b nvarchar(11)"),
            nvarchar("", "SELECT Id, Name FROM Patients WHERE Ssn IN (@a, @b)"),
            nvarchar("", &ssn),
            nvarchar("", &ssn.to_lowercase()),
        ];
        assert_hidden(&rpc_bytes(proc_id::SP_PREPEXEC, params), &[ssn.as_str(), &ssn.to_lowercase()]);
    }
}
