//! Result rewriting: COLMETADATA gets plaintext types back, ROW and NBCROW
//! values are opened, RETURNVALUE of mapped procedure parameters too, and
//! values that do not open follow `on_decrypt_error`.

mod rewrite_common;

use std::sync::Arc;

use rewrite_common::*;
use tdsguard::config::{EncryptionMode, OnDecryptError};
use tdsguard::rewrite::{Outcome, Session, TokenAction};
use tdsguard::tds::sql_batch::SqlBatch;
use tdsguard::tds::token::{
    decode_all, ColMetadata, ColumnData, Done, DoneKind, DoneStatus, RawValue, Row, RowKind, Token,
    TokenContext, TypeInfoRaw,
};
use tdsguard::tds::types::{NullableType, TypeInfo, VarLenType};

fn ti(t: TypeInfo) -> TypeInfoRaw {
    TypeInfoRaw::from_typed(t).unwrap()
}

fn col(name: &str, t: TypeInfo) -> ColumnData {
    ColumnData {
        user_type: 0,
        flags: 0x0001,
        type_info: ti(t),
        table_name: None,
        crypto: None,
        name: name.into(),
    }
}

/// What the server sends for `SELECT Id, Ssn, Name FROM Patients`.
fn server_metadata() -> Arc<ColMetadata> {
    Arc::new(ColMetadata {
        no_metadata: false,
        cek_table: None,
        columns: vec![
            col(
                "Id",
                TypeInfo::Nullable {
                    ty: NullableType::IntN,
                    len: 4,
                },
            ),
            col("Ssn", TypeInfo::varbinary(49)),
            col("Name", TypeInfo::varbinary(138)),
        ],
    })
}

fn select(session: &mut Session, sql: &str) {
    let batch = SqlBatch {
        all_headers: None,
        text: sql.into(),
    };
    assert_eq!(
        session.handle_sql_batch(&batch).unwrap(),
        Outcome::Unchanged
    );
    assert!(session.response_needs_rewrite());
}

fn replaced(a: TokenAction) -> Vec<u8> {
    match a {
        TokenAction::Replace(b) => b,
        TokenAction::Forward => panic!("token was forwarded"),
    }
}

/// Runs the tokens through the session and decodes what the client gets.
fn client_view(session: &mut Session, tokens: &[Token]) -> Vec<Token> {
    let mut server_ctx = TokenContext::default();
    let mut out = Vec::new();
    for t in tokens {
        server_ctx.observe(t);
        match session.handle_token(t, &server_ctx).unwrap() {
            TokenAction::Forward => t.encode(&server_ctx, &mut out).unwrap(),
            TokenAction::Replace(b) => out.extend_from_slice(&b),
        }
    }
    decode_all(&out, &mut TokenContext::default()).unwrap()
}

fn done() -> Token {
    Token::Done(Done {
        kind: DoneKind::Done,
        status: DoneStatus(DoneStatus::COUNT),
        cur_cmd: 0xC1,
        row_count: 2,
    })
}

#[test]
fn colmetadata_row_and_nbcrow_are_decrypted() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    select(
        &mut session,
        "SELECT Id, Ssn, [Name] FROM dbo.Patients WHERE Id = @id",
    );

    let ssn = seal("patients", "ssn", "char(11)", b"123-45-6789");
    let name = seal("patients", "name", "nvarchar(50)", &utf16("Zoë"));
    let row = Token::Row(Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values: vec![
            RawValue::Bytes(7i32.to_le_bytes().to_vec()),
            RawValue::Bytes(ssn.clone()),
            RawValue::Bytes(name),
        ],
    });
    let nbc = Token::Row(Row::nbc(vec![
        RawValue::Bytes(8i32.to_le_bytes().to_vec()),
        RawValue::Bytes(ssn),
        RawValue::Null,
    ]));
    let tokens = client_view(
        &mut session,
        &[Token::ColMetadata(server_metadata()), row, nbc, done()],
    );

    let Token::ColMetadata(meta) = &tokens[0] else {
        panic!("no metadata")
    };
    assert!(matches!(
        meta.columns[0].type_info.typed(),
        TypeInfo::Nullable { .. }
    ));
    assert!(matches!(
        meta.columns[1].type_info.typed(),
        TypeInfo::VarLen {
            ty: VarLenType::BigChar,
            max_len: 11,
            ..
        }
    ));
    assert!(matches!(
        meta.columns[2].type_info.typed(),
        TypeInfo::VarLen {
            ty: VarLenType::NVarChar,
            max_len: 100,
            ..
        }
    ));
    assert_eq!(meta.columns[2].name.to_string(), "Name");

    let Token::Row(r1) = &tokens[1] else {
        panic!("no row")
    };
    assert_eq!(r1.values[1], RawValue::Bytes(b"123-45-6789".to_vec()));
    assert_eq!(r1.values[2], RawValue::Bytes(utf16("Zoë")));
    let Token::Row(r2) = &tokens[2] else {
        panic!("no nbcrow")
    };
    assert_eq!(r2.kind, RowKind::NbcRow);
    assert_eq!(r2.values[2], RawValue::Null);
    assert_eq!(r2.values[0], RawValue::Bytes(8i32.to_le_bytes().to_vec()));
    assert!(matches!(tokens[3], Token::Done(_)));
    assert!(
        !session.response_needs_rewrite(),
        "the final DONE ends the response"
    );
}

#[test]
fn select_star_matches_columns_by_name() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    select(&mut session, "SELECT * FROM Patients");
    assert!(!session.wants_whole_rows());
    let meta = Token::ColMetadata(server_metadata());
    let mut probe = rw.session(DB);
    select(&mut probe, "SELECT * FROM Patients");
    probe.handle_token(&meta, &TokenContext::default()).unwrap();
    assert!(probe.wants_whole_rows());
    let ssn = seal("patients", "ssn", "char(11)", b"999-99-9999");
    let row = Token::Row(Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values: vec![RawValue::Null, RawValue::Bytes(ssn), RawValue::Null],
    });
    let tokens = client_view(
        &mut session,
        &[Token::ColMetadata(server_metadata()), row, done()],
    );
    let Token::Row(r) = &tokens[1] else {
        panic!("no row")
    };
    assert_eq!(r.values[1], RawValue::Bytes(b"999-99-9999".to_vec()));
}

#[test]
fn decrypt_error_fails_the_statement_with_an_error_token() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    select(&mut session, "SELECT Id, Ssn, Name FROM Patients");
    let wrong = seal("patients", "name", "nvarchar(50)", b"x");
    let bad = Token::Row(Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values: vec![
            RawValue::Null,
            RawValue::Bytes(wrong.clone()),
            RawValue::Null,
        ],
    });
    let tokens = client_view(
        &mut session,
        &[
            Token::ColMetadata(server_metadata()),
            bad.clone(),
            bad,
            done(),
        ],
    );
    assert_eq!(tokens.len(), 3, "the second row is dropped");
    let Token::InfoError(e) = &tokens[1] else {
        panic!("no error")
    };
    assert_eq!((e.number, e.class), (50113, 16));
    assert!(!e.message.to_string().contains('x'));
    let Token::Done(d) = &tokens[2] else {
        panic!("no done")
    };
    assert!(d.status.has(DoneStatus::ERROR));
}

#[test]
fn decrypt_error_as_null_when_configured() {
    let mut cols = patients();
    cols[0].on_decrypt_error = OnDecryptError::Null;
    let rw = rewriter(&cols, &[]);
    let mut session = rw.session(DB);
    select(&mut session, "SELECT Id, Ssn, Name FROM Patients");
    let bad = Token::Row(Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values: vec![
            RawValue::Null,
            RawValue::Bytes(vec![1, 2, 3]),
            RawValue::Null,
        ],
    });
    let tokens = client_view(
        &mut session,
        &[Token::ColMetadata(server_metadata()), bad, done()],
    );
    let Token::Row(r) = &tokens[1] else {
        panic!("no row")
    };
    assert_eq!(r.values[1], RawValue::Null);
}

#[test]
fn unmapped_results_are_forwarded() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let batch = SqlBatch {
        all_headers: None,
        text: "SELECT Id FROM Visits".into(),
    };
    assert_eq!(
        session.handle_sql_batch(&batch).unwrap(),
        Outcome::Unchanged
    );
    assert!(!session.response_needs_rewrite());
    let meta = Token::ColMetadata(server_metadata());
    assert_eq!(
        session
            .handle_token(&meta, &TokenContext::default())
            .unwrap(),
        TokenAction::Forward
    );
}

#[test]
fn output_parameter_of_a_mapped_procedure_is_decrypted() {
    use tdsguard::tds::rpc::{ProcName, RpcCall, RpcParam, RpcRequest};
    use tdsguard::tds::token::ReturnValue;
    use tdsguard::tds::types::SqlValue;

    let cols = [column(
        "dbo.Patients",
        "Ssn",
        "char(11)",
        EncryptionMode::Deterministic,
    )];
    let procs = [procedure("dbo.GetSsn", &[("@Ssn", "Patients.Ssn")])];
    let rw = rewriter(&cols, &procs);
    let mut session = rw.session(DB);
    let mut call = RpcCall::new(ProcName::Name("dbo.GetSsn".into()), 0);
    let char11 = TypeInfo::VarLen {
        ty: VarLenType::BigChar,
        max_len: 11,
        collation: Some(tdsguard::rewrite::DEFAULT_COLLATION),
    };
    call.params
        .push(RpcParam::new("@Ssn", 0x01, char11, &SqlValue::Null).unwrap());
    let req = RpcRequest {
        all_headers: None,
        calls: vec![call],
    };
    let Outcome::Rewritten(r) = session.handle_rpc(&req).unwrap() else {
        panic!("not rewritten")
    };
    assert_eq!(r.calls[0].params[0].type_info, TypeInfo::varbinary(49));

    let env = seal("patients", "ssn", "char(11)", b"111-22-3333");
    let rv = ReturnValue {
        ordinal: 0,
        name: "@Ssn".into(),
        status: 1,
        user_type: 0,
        flags: 0,
        type_info: ti(TypeInfo::varbinary(49)),
        crypto: None,
        value: RawValue::Bytes(env),
    };
    let bytes = replaced(
        session
            .handle_token(&Token::ReturnValue(Box::new(rv)), &TokenContext::default())
            .unwrap(),
    );
    let tokens = decode_all(&bytes, &mut TokenContext::default()).unwrap();
    let Token::ReturnValue(out) = &tokens[0] else {
        panic!("no RETURNVALUE")
    };
    assert_eq!(out.value, RawValue::Bytes(b"111-22-3333".to_vec()));
    assert!(matches!(
        out.type_info.typed(),
        TypeInfo::VarLen {
            ty: VarLenType::BigChar,
            ..
        }
    ));
}

#[test]
fn env_changes_follow_database_collation_and_reset() {
    use tdsguard::tds::token::EnvChange;
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session("master");
    let db = EnvChange::Text {
        env_type: 1,
        new: "Clinic".into(),
        old: "master".into(),
    };
    session
        .handle_token(&Token::EnvChange(db), &TokenContext::default())
        .unwrap();
    assert_eq!(session.database(), "Clinic");
    let reset = EnvChange::Bytes {
        env_type: 0x12,
        new: Vec::new(),
        old: Vec::new(),
    };
    session
        .handle_token(&Token::EnvChange(reset), &TokenContext::default())
        .unwrap();
    assert_eq!(session.prepared_count(), 0);
}

#[test]
fn describe_first_result_set_shows_plaintext_types() {
    use tdsguard::tds::rpc::{ProcName, RpcCall, RpcParam, RpcRequest};
    use tdsguard::tds::types::SqlValue;

    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let mut call = RpcCall::new(ProcName::Name("sp_describe_first_result_set".into()), 0);
    let text = SqlValue::NVarChar("SELECT Id, Ssn FROM Patients".into());
    call.params.push(
        RpcParam::new(
            "@tsql",
            0,
            TypeInfo::nvarchar(8000, tdsguard::rewrite::DEFAULT_COLLATION),
            &text,
        )
        .unwrap(),
    );
    let req = RpcRequest {
        all_headers: None,
        calls: vec![call],
    };
    assert_eq!(session.handle_rpc(&req).unwrap(), Outcome::Unchanged);

    let int4 = TypeInfo::Nullable {
        ty: NullableType::IntN,
        len: 4,
    };
    let int2 = TypeInfo::Nullable {
        ty: NullableType::IntN,
        len: 2,
    };
    let meta = Arc::new(ColMetadata {
        no_metadata: false,
        cek_table: None,
        columns: vec![
            col("column_ordinal", int4.clone()),
            col(
                "system_type_name",
                TypeInfo::nvarchar(512, tdsguard::rewrite::DEFAULT_COLLATION),
            ),
            col("max_length", int2),
            col("system_type_id", int4),
        ],
    });
    let row = |ordinal: i32, name: &str, len: i16, id: i32| {
        Token::Row(Row {
            kind: RowKind::Row,
            null_bitmap: Vec::new(),
            values: vec![
                RawValue::Bytes(ordinal.to_le_bytes().to_vec()),
                RawValue::Bytes(utf16(name)),
                RawValue::Bytes(len.to_le_bytes().to_vec()),
                RawValue::Bytes(id.to_le_bytes().to_vec()),
            ],
        })
    };
    let tokens = client_view(
        &mut session,
        &[
            Token::ColMetadata(meta),
            row(1, "int", 4, 56),
            row(2, "varbinary(49)", 49, 165),
            done(),
        ],
    );
    let Token::Row(first) = &tokens[1] else {
        panic!("no row")
    };
    assert_eq!(first.values[1], RawValue::Bytes(utf16("int")));
    let Token::Row(second) = &tokens[2] else {
        panic!("no row")
    };
    assert_eq!(second.values[1], RawValue::Bytes(utf16("char(11)")));
    assert_eq!(
        second.values[2],
        RawValue::Bytes(11i16.to_le_bytes().to_vec())
    );
    assert_eq!(
        second.values[3],
        RawValue::Bytes(175i32.to_le_bytes().to_vec())
    );
}

#[test]
fn describe_undeclared_parameters_shows_plaintext_types() {
    use tdsguard::rewrite::DEFAULT_COLLATION;
    use tdsguard::tds::rpc::{ProcName, RpcCall, RpcParam, RpcRequest};
    use tdsguard::tds::types::SqlValue;

    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    let mut call = RpcCall::new(
        ProcName::Name("sys.sp_describe_undeclared_parameters".into()),
        0,
    );
    let text = SqlValue::NVarChar("SELECT Id FROM Patients WHERE Dob = @d".into());
    let nvarchar = TypeInfo::nvarchar(8000, DEFAULT_COLLATION);
    call.params
        .push(RpcParam::new("@tsql", 0, nvarchar, &text).unwrap());
    let req = RpcRequest {
        all_headers: None,
        calls: vec![call],
    };
    assert_eq!(session.handle_rpc(&req).unwrap(), Outcome::Unchanged);

    let meta = Arc::new(ColMetadata {
        no_metadata: false,
        cek_table: None,
        columns: vec![
            col("name", TypeInfo::nvarchar(256, DEFAULT_COLLATION)),
            col(
                "suggested_system_type_name",
                TypeInfo::nvarchar(512, DEFAULT_COLLATION),
            ),
        ],
    });
    let row = Token::Row(Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values: vec![
            RawValue::Bytes(utf16("@d")),
            RawValue::Bytes(utf16("varbinary(41)")),
        ],
    });
    let tokens = client_view(&mut session, &[Token::ColMetadata(meta), row, done()]);
    let Token::Row(r) = &tokens[1] else {
        panic!("no row")
    };
    assert_eq!(r.values[1], RawValue::Bytes(utf16("date")));
}
