//! The prepared-handle lifecycle: learned from the RETURNVALUE of
//! sp_prepare, used by sp_execute, forgotten on sp_unprepare and on
//! RESETCONNECTION, never shared between sessions.

mod rewrite_common;

use rewrite_common::*;
use tdsguard::rewrite::{Outcome, Session, DEFAULT_COLLATION};
use tdsguard::tds::rpc::{proc_id, ProcName, RpcCall, RpcParam, RpcRequest};
use tdsguard::tds::token::{RawValue, ReturnValue, Token, TokenContext, TypeInfoRaw};
use tdsguard::tds::types::{NullableType, SqlValue, TypeInfo};

fn int() -> TypeInfo {
    TypeInfo::Nullable {
        ty: NullableType::IntN,
        len: 4,
    }
}

fn nvarchar(s: &str) -> RpcParam {
    RpcParam::new(
        "",
        0,
        TypeInfo::nvarchar(8000, DEFAULT_COLLATION),
        &SqlValue::NVarChar(s.into()),
    )
    .unwrap()
}

fn request(id: u16, params: Vec<RpcParam>) -> RpcRequest {
    let mut call = RpcCall::new(ProcName::Id(id), 0);
    call.params = params;
    RpcRequest {
        all_headers: None,
        calls: vec![call],
    }
}

fn prepare(session: &mut Session, handle: i32) {
    let req = request(
        proc_id::SP_PREPARE,
        vec![
            RpcParam::new("", 0x01, int(), &SqlValue::Null).unwrap(),
            nvarchar("@P1 nvarchar(4000),@P2 int"),
            nvarchar("SELECT Id FROM Patients WHERE Ssn = @P1 AND Id = @P2"),
        ],
    );
    let Outcome::Rewritten(r) = session.handle_rpc(&req).unwrap() else {
        panic!("prepare not rewritten")
    };
    let decl = r.calls[0].params[1].value().unwrap().text().unwrap();
    assert_eq!(decl, "@P1 varbinary(49),@P2 int");
    let rv = ReturnValue {
        ordinal: 0,
        name: "@handle".into(),
        status: 1,
        user_type: 0,
        flags: 0,
        type_info: TypeInfoRaw::from_typed(int()).unwrap(),
        crypto: None,
        value: RawValue::Bytes(handle.to_le_bytes().to_vec()),
    };
    session
        .handle_token(&Token::ReturnValue(Box::new(rv)), &TokenContext::default())
        .unwrap();
}

fn execute(session: &mut Session, handle: i32, params: Vec<RpcParam>) -> Outcome<RpcRequest> {
    let mut all = vec![RpcParam::new("", 0, int(), &SqlValue::Int(handle)).unwrap()];
    all.extend(params);
    session
        .handle_rpc(&request(proc_id::SP_EXECUTE, all))
        .unwrap()
}

fn ssn_param() -> RpcParam {
    nvarchar("123-45-6789")
}

fn id_param() -> RpcParam {
    RpcParam::new("", 0, int(), &SqlValue::Int(4)).unwrap()
}

fn refusal_number(o: Outcome<RpcRequest>) -> u32 {
    match o {
        Outcome::Refused(r) => r.number(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn execute_seals_values_of_a_learned_handle() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    prepare(&mut session, 11);
    assert!(session.knows_handle(11));

    let Outcome::Rewritten(r) = execute(&mut session, 11, vec![ssn_param(), id_param()]) else {
        panic!("not rewritten")
    };
    let p = &r.calls[0].params[1];
    assert_eq!(p.type_info, TypeInfo::varbinary(49));
    let SqlValue::VarBinary(env) = p.value().unwrap() else {
        panic!("not varbinary")
    };
    assert_eq!(open("patients", "ssn", "char(11)", &env), b"123-45-6789");
    assert_eq!(r.calls[0].params[2].value().unwrap(), SqlValue::Int(4));
    assert!(!contains_text(&r.to_bytes().unwrap(), "123-45-6789"));
}

#[test]
fn deterministic_execute_values_repeat() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    prepare(&mut session, 3);
    let run = |s: &mut Session| match execute(s, 3, vec![ssn_param()]) {
        Outcome::Rewritten(r) => r.calls[0].params[1].value().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(run(&mut session), run(&mut session));
}

#[test]
fn mismatching_executes_are_refused() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    prepare(&mut session, 5);
    assert_eq!(
        refusal_number(execute(&mut session, 6, vec![ssn_param()])),
        50109
    );
    assert_eq!(
        refusal_number(execute(
            &mut session,
            5,
            vec![ssn_param(), id_param(), id_param()]
        )),
        50109
    );
    let mut named = ssn_param();
    named.name = "@Other".into();
    assert_eq!(refusal_number(execute(&mut session, 5, vec![named])), 50109);
}

#[test]
fn unprepare_and_reset_forget_handles() {
    let rw = rewriter(&patients(), &[]);
    let mut session = rw.session(DB);
    prepare(&mut session, 1);
    prepare(&mut session, 2);
    let unprepare = request(
        proc_id::SP_UNPREPARE,
        vec![RpcParam::new("", 0, int(), &SqlValue::Int(1)).unwrap()],
    );
    assert_eq!(session.handle_rpc(&unprepare).unwrap(), Outcome::Unchanged);
    assert!(!session.knows_handle(1));
    assert_eq!(
        refusal_number(execute(&mut session, 1, vec![ssn_param()])),
        50109
    );
    assert!(session.knows_handle(2));
    session.handle_reset();
    assert_eq!(session.prepared_count(), 0);
    assert_eq!(
        refusal_number(execute(&mut session, 2, vec![ssn_param()])),
        50109
    );
}

#[test]
fn handles_are_per_session() {
    let rw = rewriter(&patients(), &[]);
    let mut a = rw.session(DB);
    let mut b = rw.session(DB);
    prepare(&mut a, 9);
    assert!(a.knows_handle(9));
    assert!(!b.knows_handle(9));
    assert_eq!(refusal_number(execute(&mut b, 9, vec![ssn_param()])), 50109);
}
