//! Parameter rewriting on captured RPC requests (fixtures/wireshark-rpc)
//! with a column map laid over their tables.

mod rewrite_common;

use std::sync::Arc;

use rewrite_common::*;
use tdsguard::config::EncryptionMode;
use tdsguard::rewrite::{Outcome, Session};
use tdsguard::tds::rpc::{RpcParam, RpcRequest};
use tdsguard::tds::token::RawValue as TokenValue;
use tdsguard::tds::token::{ReturnValue, Token, TokenContext, TypeInfoRaw};
use tdsguard::tds::types::{NullableType, SqlValue, TypeInfo, VarLenType};

fn text(p: &RpcParam) -> String {
    p.value().unwrap().text().unwrap()
}

fn rewritten(session: &mut Session, payload: &[u8]) -> (RpcRequest, Vec<u8>) {
    let req = RpcRequest::decode(payload).unwrap();
    match session.handle_rpc(&req).unwrap() {
        Outcome::Rewritten(r) => {
            let bytes = r.to_bytes().unwrap();
            assert_eq!(
                RpcRequest::decode(&bytes).unwrap(),
                r,
                "rewritten request decodes"
            );
            (r, bytes)
        }
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

fn handle_token(session: &mut Session, handle: i32) {
    let rv = ReturnValue {
        ordinal: 0,
        name: "".into(),
        status: 1,
        user_type: 0,
        flags: 0,
        type_info: TypeInfoRaw::from_typed(TypeInfo::Nullable {
            ty: NullableType::IntN,
            len: 4,
        })
        .unwrap(),
        crypto: None,
        value: TokenValue::Bytes(handle.to_le_bytes().to_vec()),
    };
    let token = Token::ReturnValue(Box::new(rv));
    session
        .handle_token(&token, &TokenContext::default())
        .unwrap();
}

#[test]
fn sp_prepexec_seals_the_bound_parameter_and_learns_the_handle() {
    let cols = [column(
        "test_table_1",
        "name",
        "nvarchar(50)",
        EncryptionMode::Deterministic,
    )];
    let rw = rewriter(&cols, &[]);
    let mut session = rw.session(DB);
    let (req, bytes) = rewritten(&mut session, &capture(0)[0]);
    let call = &req.calls[0];

    assert_eq!(text(&call.params[1]), "@P0 varbinary(138),@P1 int");
    assert_eq!(call.params[3].type_info, TypeInfo::varbinary(138));
    let SqlValue::VarBinary(env) = call.params[3].value().unwrap() else {
        panic!("not varbinary")
    };
    assert_eq!(
        open("test_table_1", "name", "nvarchar(50)", &env),
        utf16("zzz")
    );
    assert!(!contains_text(&bytes, "zzz"));
    let original = RpcRequest::decode(&capture(0)[0]).unwrap();
    assert_eq!(call.params[4], original.calls[0].params[4]);

    handle_token(&mut session, 7);
    assert!(session.knows_handle(7));
}

#[test]
fn sp_executesql_by_name_matches_named_values() {
    let cols = [column(
        "MyExampleTable",
        "HandlingStatus",
        "tinyint",
        EncryptionMode::Deterministic,
    )];
    let rw = rewriter(&cols, &[]);
    let mut session = rw.session(DB);
    let (req, _) = rewritten(&mut session, &capture(3)[0]);
    let call = &req.calls[0];
    assert_eq!(text(&call.params[1]), "@HandlingStatus1 varbinary(39)");
    let SqlValue::VarBinary(env) = call.params[2].value().unwrap() else {
        panic!("not varbinary")
    };
    let original = RpcRequest::decode(&capture(3)[0]).unwrap();
    let SqlValue::TinyInt(v) = original.calls[0].params[2].value().unwrap() else {
        panic!("capture changed")
    };
    assert_eq!(
        open("myexampletable", "handlingstatus", "tinyint", &env),
        vec![v]
    );
    assert_eq!(text(&call.params[0]), text(&original.calls[0].params[0]));
}

#[test]
fn order_by_a_mapped_column_in_a_captured_statement_is_refused() {
    let cols = [column(
        "MyExampleTable",
        "EntityVersion",
        "int",
        EncryptionMode::Deterministic,
    )];
    let rw = rewriter(&cols, &[]);
    let mut session = rw.session(DB);
    let req = RpcRequest::decode(&capture(3)[0]).unwrap();
    let Outcome::Refused(r) = session.handle_rpc(&req).unwrap() else {
        panic!("not refused")
    };
    assert_eq!(r.number(), 50103);
}

#[test]
fn literals_and_schema_in_prepexec_statements_are_rewritten() {
    let cols = [column(
        "newsyb",
        "column2",
        "char(30)",
        EncryptionMode::Randomized,
    )];
    let rw = rewriter(&cols, &[]);
    let mut session = rw.session(DB);
    let messages = capture(4);

    let (create, _) = rewritten(&mut session, &messages[0]);
    assert_eq!(
        text(&create.calls[0].params[2]),
        "create table newsyb (column1 char(30) not null, column2 varbinary(68) null,column3 char(30) null)"
    );

    let (insert, bytes) = rewritten(&mut session, &messages[1]);
    let stmt = text(&insert.calls[0].params[2]);
    assert!(stmt.starts_with("insert INTO newsyb (column1, column2, column3) VALUES ('first', 0x"));
    assert!(stmt.ends_with(", 'third')"));
    assert!(!contains_text(&bytes, "second"));
    let hex = stmt.split("0x").nth(1).unwrap().split(',').next().unwrap();
    let env: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut expected = b"second".to_vec();
    expected.resize(30, b' ');
    assert_eq!(open("newsyb", "column2", "char(30)", &env), expected);
}

#[test]
fn mapped_procedure_parameter_is_sealed_to_varbinary_max() {
    let cols = [column(
        "Examples",
        "Body",
        "nvarchar(max)",
        EncryptionMode::Randomized,
    )];
    let procs = [procedure(
        "dbo.p_SaveExample",
        &[("@LongParam", "Examples.Body")],
    )];
    let rw = rewriter(&cols, &procs);
    let mut session = rw.session(DB);
    let (req, bytes) = rewritten(&mut session, &capture(5)[0]);
    let p = &req.calls[0].params[0];
    assert_eq!(p.type_info, TypeInfo::varbinary(0xFFFF));
    assert!(!contains_text(&bytes, "Gdańsku"));
    assert!(matches!(
        req.calls[0].params[1].type_info,
        TypeInfo::Nullable { .. }
    ));
}

#[test]
fn positional_call_of_a_mapped_procedure_is_refused() {
    let cols = [column(
        "Samples",
        "Data",
        "varbinary(100)",
        EncryptionMode::Randomized,
    )];
    let procs = [procedure(
        "proc_GetMyExampleTableSampleMetaData",
        &[("@Data", "Samples.Data")],
    )];
    let rw = rewriter(&cols, &procs);
    let mut session = rw.session(DB);
    let req = RpcRequest::decode(&capture(8)[0]).unwrap();
    let Outcome::Refused(r) = session.handle_rpc(&req).unwrap() else {
        panic!("not refused")
    };
    assert_eq!(r.number(), 50107);
}

#[test]
fn unmapped_captures_pass_unchanged() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    for stream in 0..12 {
        for m in capture(stream) {
            let req = RpcRequest::decode(&m).unwrap();
            let outcome = session.handle_rpc(&req).unwrap();
            let unknown_execute = matches!(&outcome, Outcome::Refused(r) if r.number() == 50109);
            assert!(
                outcome == Outcome::Unchanged || unknown_execute,
                "stream {stream}: {outcome:?}"
            );
        }
    }
    let _ = Arc::clone(&rw);
    let _ = VarLenType::NVarChar;
}

#[test]
fn a_local_variable_carrying_a_mapped_value_is_refused() {
    use tdsguard::rewrite::DEFAULT_COLLATION;
    use tdsguard::tds::rpc::{proc_id, ProcName, RpcCall};
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let text = |s: &str| {
        RpcParam::new(
            "",
            0,
            TypeInfo::nvarchar(8000, DEFAULT_COLLATION),
            &SqlValue::NVarChar(s.into()),
        )
        .unwrap()
    };
    let mut call = RpcCall::new(ProcName::Id(proc_id::SP_EXECUTESQL), 0);
    call.params = vec![
        text("DECLARE @x char(11) = @P0\nSELECT Id FROM Patients WHERE Ssn = @x"),
        text("@P0 nvarchar(11)"),
        text("123-45-6789"),
    ];
    let req = RpcRequest {
        all_headers: None,
        calls: vec![call],
    };
    let Outcome::Refused(r) = session.handle_rpc(&req).unwrap() else {
        panic!("not refused")
    };
    assert_eq!(r.number(), 50107);
}
