//! Raw protocol through the proxy to the sandbox: several RPCs in one
//! message, and a request with RESETCONNECTION.

mod common;

use tdsguard::tds::all_headers::{AllHeaders, Header};
use tdsguard::tds::packet::{encode_message, status, PacketType};
use tdsguard::tds::rpc::{ProcName, RpcCall, RpcParam, RpcRequest};
use tdsguard::tds::token::{decode_all, DoneKind, Token, TokenContext};
use tdsguard::tds::types::value::SqlValue;
use tdsguard::tds::types::{Collation, TypeInfo};
use tokio::io::AsyncWriteExt;

use common::proxy::TestProxy;
use common::raw_client::{batch_payload, error_messages, RawClient};
use common::sandbox::{TestSandbox, PASSWORD};

/// sp_executesql, ProcID 10 (MS-TDS 2.2.6.6).
const SP_EXECUTESQL: u16 = 10;
/// BatchFlag between RPCs in one message, TDS 7.2 and later (2.2.6.6).
const BATCH_FLAG: u8 = 0xFF;

fn executesql(sql: &str, separator: Option<u8>) -> RpcCall {
    let collation = Collation {
        info: 0x00D0_0409,
        sort_id: 52,
    };
    let text = SqlValue::NVarChar(sql.into());
    let stmt = RpcParam::new("", 0, TypeInfo::nvarchar(0xFFFF, collation), &text).expect("param");
    let mut call = RpcCall::new(ProcName::Id(SP_EXECUTESQL), 0);
    call.params.push(stmt);
    call.separator = separator;
    call
}

async fn logged_in(proxy: &TestProxy) -> RawClient {
    let mut client = RawClient::connect(proxy.addr).await;
    client.prelogin(false).await;
    let tokens = client.login(PASSWORD).await;
    let logged_in = tokens.iter().any(|t| matches!(t, Token::LoginAck(_)));
    assert!(logged_in, "{:?}", error_messages(&tokens));
    client
}

async fn tokens(client: &mut RawClient) -> Vec<Token> {
    let payload = client.read_message().await.expect("a response");
    decode_all(&payload, &mut TokenContext::default()).expect("valid tokens")
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_several_rpcs_in_one_message() {
    let sandbox = TestSandbox::start().await;
    let proxy = TestProxy::start_with(sandbox.addr(), Some(sandbox.cert_pem()), |_| {}).await;
    let mut client = logged_in(&proxy).await;

    let request = RpcRequest {
        all_headers: Some(AllHeaders {
            headers: vec![Header::TransactionDescriptor {
                descriptor: 0,
                outstanding_requests: 1,
            }],
        }),
        calls: vec![
            executesql("SELECT 1 AS a", Some(BATCH_FLAG)),
            executesql("SELECT 2 AS b", None),
        ],
    };
    let payload = request.to_bytes().expect("encode");
    client.send_message(PacketType::Rpc, &payload).await;
    let tokens = tokens(&mut client).await;
    let procs = tokens
        .iter()
        .filter(|t| matches!(t, Token::Done(d) if d.kind == DoneKind::DoneProc))
        .count();
    assert_eq!(procs, 2, "{tokens:?}");
    let rows = tokens.iter().filter(|t| matches!(t, Token::Row(_))).count();
    assert_eq!(rows, 2, "{tokens:?}");
    drop(client);
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_resetconnection_is_forwarded_and_acknowledged() {
    let sandbox = TestSandbox::start().await;
    let proxy = TestProxy::start_with(sandbox.addr(), Some(sandbox.cert_pem()), |_| {}).await;
    let mut client = logged_in(&proxy).await;

    let mut out = bytes::BytesMut::new();
    let payload = batch_payload("SELECT 1");
    encode_message(
        PacketType::SqlBatch,
        status::RESETCONNECTION,
        &payload,
        4096,
        &mut out,
    )
    .expect("encode");
    client.tcp.write_all(&out).await.expect("write");
    let tokens = tokens(&mut client).await;
    let reset_ack = tokens
        .iter()
        .any(|t| matches!(t, Token::EnvChange(e) if e.is_reset_ack()));
    assert!(reset_ack, "{tokens:?}");
    drop(client);
    proxy.shutdown().await;
    sandbox.handle.shutdown().await;
}
