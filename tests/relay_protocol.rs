//! The relay loop against a scripted upstream: transparency, attention and
//! cancel timeouts, and errors the application must see.

mod common;

use tokio::io::AsyncWriteExt;

use common::fake_server::{FakeServer, Reply, PACKET_SIZE, SPID};
use common::proxy::TestProxy;
use common::raw_client::{ends_with_attention_ack, error_messages, RawClient};
use tdsguard::tds::packet::PacketType;
use tdsguard::tds::token::Token;

const PASSWORD: &str = "not-checked-by-the-fake";

async fn proxy_for(server: &FakeServer) -> TestProxy {
    TestProxy::start_with(server.addr, Some(server.cert_pem.clone()), |_| {}).await
}

/// A client logged in through the proxy.
async fn logged_in(proxy: &TestProxy) -> RawClient {
    let mut client = RawClient::connect(proxy.addr).await;
    client.prelogin(false).await;
    let tokens = client.login(PASSWORD).await;
    assert!(
        tokens.iter().any(|t| matches!(t, Token::LoginAck(_))),
        "login failed: {:?}",
        error_messages(&tokens)
    );
    client
}

/// Reads whole messages until one ends the response; returns them.
async fn read_response(client: &mut RawClient) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let message = client.read_message().await.expect("a response");
    messages.push(message);
    messages
}

#[tokio::test]
async fn relay_transparency_bytes_out_equal_bytes_in() {
    let server = FakeServer::start(|n| Reply::Rows([3, 2_000, 0, 50_000][n % 4])).await;
    let proxy = proxy_for(&server).await;
    let mut client = logged_in(&proxy).await;
    client.received.clear();

    for _ in 0..4 {
        client.send_batch("SELECT id, name FROM t").await;
        read_response(&mut client).await;
    }
    let sent = server.sent.lock().unwrap().clone();
    assert!(
        sent.len() > 2_000_000,
        "the server sent {} bytes",
        sent.len()
    );
    assert!(
        client.received == sent,
        "the client got different bytes than the server sent"
    );
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_packets_keep_the_server_spid_and_size() {
    let server = FakeServer::start(|_| Reply::Rows(10_000)).await;
    let proxy = proxy_for(&server).await;
    let mut client = logged_in(&proxy).await;
    client.send_batch("SELECT 1").await;
    loop {
        let packet = client.read_packet().await.expect("a packet");
        assert_eq!(packet.header.spid, SPID);
        assert!(packet.raw.len() <= PACKET_SIZE);
        if packet.header.is_eom() {
            break;
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_cancel_mid_stream_then_reuse_the_connection() {
    let server = FakeServer::start(|n| match n {
        0 => Reply::RowsUntilAttention,
        _ => Reply::Rows(3),
    })
    .await;
    let proxy = proxy_for(&server).await;
    let mut client = logged_in(&proxy).await;

    client.send_batch("SELECT * FROM big").await;
    for _ in 0..3 {
        let packet = client.read_packet().await.expect("result packets");
        assert!(
            !packet.header.is_eom(),
            "the result ended before the cancel"
        );
    }
    client.send_attention().await;
    let mut last = Vec::new();
    while !ends_with_attention_ack(&last) {
        last = client
            .read_message()
            .await
            .expect("the cancelled result ends");
    }

    client.send_batch("SELECT * FROM small").await;
    let message = client.read_message().await.expect("the next result");
    let done = &message[message.len() - 13..];
    assert_eq!(done[0], 0xFD);
    assert_eq!(u64::from_le_bytes(done[5..13].try_into().unwrap()), 3);
    assert!(!ends_with_attention_ack(&message));
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_attention_inside_a_request_goes_up_after_it() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = proxy_for(&server).await;
    let mut client = logged_in(&proxy).await;

    let payload = common::raw_client::batch_payload(&"SELECT 1 ".repeat(1_000));
    let mut out = bytes::BytesMut::new();
    tdsguard::tds::packet::encode_message(PacketType::SqlBatch, 0, &payload, 4096, &mut out)
        .unwrap();
    let first_len = usize::from(u16::from_be_bytes([out[2], out[3]]));
    let (first, rest) = out.split_at(first_len);
    client.tcp.write_all(first).await.unwrap();
    client.send_attention().await;
    client.tcp.write_all(rest).await.unwrap();

    let mut last = Vec::new();
    while !ends_with_attention_ack(&last) {
        last = client.read_message().await.expect("responses");
    }
    let received = server.received.lock().unwrap().clone();
    let attention = received
        .iter()
        .position(|&t| t == 0x06)
        .expect("attention went up");
    assert!(received[..attention].iter().all(|&t| t == 0x01));
    assert_eq!(
        attention,
        received.len() - 1,
        "the attention came after the whole batch"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_cancel_not_acknowledged_closes_both_legs() {
    let server = FakeServer::start(|_| Reply::IgnoreAttention).await;
    let proxy = TestProxy::start_with(server.addr, Some(server.cert_pem.clone()), |config| {
        config.upstream.cancel_timeout_ms = 200;
    })
    .await;
    let mut client = logged_in(&proxy).await;
    client.send_batch("SELECT * FROM big").await;
    client.read_packet().await.expect("the result starts");
    client.send_attention().await;
    while client.read_packet().await.is_some() {}
    assert!(client.closed().await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_upstream_closing_mid_row_ends_only_that_connection() {
    let server = FakeServer::start(|n| match n {
        0 => Reply::CloseMidRow,
        _ => Reply::Rows(5),
    })
    .await;
    let proxy = proxy_for(&server).await;
    let mut first = logged_in(&proxy).await;
    first.send_batch("SELECT 1").await;
    while first.read_packet().await.is_some() {}

    let mut second = logged_in(&proxy).await;
    second.send_batch("SELECT 2").await;
    let message = second
        .read_message()
        .await
        .expect("the second client is served");
    assert!(message.ends_with(&common::fake_server::done(0x10, 5)));
    drop(second);
    proxy.shutdown().await;
}

/// After `break_it` misbehaves on one connection, a second client still
/// logs in and gets a result.
async fn proxy_survives(break_it: impl AsyncFnOnce(&TestProxy)) {
    let server = FakeServer::start(|_| Reply::Rows(2)).await;
    let proxy = proxy_for(&server).await;
    break_it(&proxy).await;
    let mut client = logged_in(&proxy).await;
    client.send_batch("SELECT 1").await;
    let message = client.read_message().await.expect("served");
    assert!(message.ends_with(&common::fake_server::done(0x10, 2)));
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_garbage_before_prelogin_closes_that_connection() {
    proxy_survives(async |proxy| {
        let mut client = RawClient::connect(proxy.addr).await;
        client
            .tcp
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn relay_truncated_packet_closes_that_connection() {
    proxy_survives(async |proxy| {
        let mut client = logged_in(proxy).await;
        let mut header = vec![0x01, 0x01, 0x00, 0x64, 0, 0, 1, 0];
        header.extend([0u8; 20]);
        client.tcp.write_all(&header).await.unwrap();
        client.tcp.shutdown().await.unwrap();
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn relay_wrong_packet_length_closes_that_connection() {
    proxy_survives(async |proxy| {
        let mut client = logged_in(proxy).await;
        client
            .tcp
            .write_all(&[0x01, 0x01, 0x00, 0x04, 0, 0, 1, 0])
            .await
            .unwrap();
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn relay_client_stopping_mid_message_closes_that_connection() {
    proxy_survives(async |proxy| {
        let mut client = logged_in(proxy).await;
        let payload = common::raw_client::batch_payload(&"x".repeat(5_000));
        let mut out = bytes::BytesMut::new();
        tdsguard::tds::packet::encode_message(PacketType::SqlBatch, 0, &payload, 4096, &mut out)
            .unwrap();
        client.tcp.write_all(&out[..4096]).await.unwrap();
        client.tcp.shutdown().await.unwrap();
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn relay_truncated_prelogin_closes_that_connection() {
    proxy_survives(async |proxy| {
        let mut client = RawClient::connect(proxy.addr).await;
        client
            .tcp
            .write_all(&[0x12, 0x01, 0x00, 0x40, 0, 0, 1, 0, 0x00])
            .await
            .unwrap();
        client.tcp.shutdown().await.unwrap();
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn relay_mars_insisting_client_gets_an_error() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = proxy_for(&server).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let answer = client.prelogin(true).await;
    assert_eq!(answer.mars(), Some(false));
    let syn = [0x53, 0x01, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
    client.tcp.write_all(&syn).await.unwrap();
    let reply = client.read_message().await.expect("an error reply");
    let tokens = tdsguard::tds::token::decode_all(&reply, &mut Default::default()).unwrap();
    let errors = error_messages(&tokens);
    assert!(errors.iter().any(|e| e.contains("MARS")), "{errors:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_pre_tds7_login_gets_an_error() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = proxy_for(&server).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send_message(PacketType::PreTds7Login, &[0u8; 100])
        .await;
    let reply = client.read_message().await.expect("an error reply");
    let tokens = tdsguard::tds::token::decode_all(&reply, &mut Default::default()).unwrap();
    let errors = error_messages(&tokens);
    assert!(errors.iter().any(|e| e.contains("pre-TDS 7")), "{errors:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_required_tls_refuses_a_plaintext_client_with_an_error() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = TestProxy::start_with(server.addr, Some(server.cert_pem.clone()), |config| {
        config.listen.tls = tdsguard::config::ClientTls::Required;
    })
    .await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.prelogin(false).await;
    let tokens = client.login(PASSWORD).await;
    let errors = error_messages(&tokens);
    assert!(
        errors.iter().any(|e| e.contains("listen.tls")),
        "{errors:?}"
    );
    assert!(client.closed().await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_login7_without_prelogin_is_served() {
    let server = FakeServer::start(|_| Reply::Rows(4)).await;
    let proxy = proxy_for(&server).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let tokens = client.login(PASSWORD).await;
    assert!(tokens.iter().any(|t| matches!(t, Token::LoginAck(_))));
    client.send_batch("SELECT 1").await;
    let message = client.read_message().await.expect("a result");
    assert!(message.ends_with(&common::fake_server::done(0x10, 4)));
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_unreachable_upstream_is_an_error_the_app_can_show() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = TestProxy::start_with(addr, None, |_| {}).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.prelogin(false).await;
    let tokens = client.login(PASSWORD).await;
    let errors = error_messages(&tokens);
    assert!(
        errors.iter().any(|e| e.contains("cannot connect")),
        "{errors:?}"
    );
    let class = tokens.iter().find_map(|t| match t {
        Token::InfoError(e) => Some(e.class),
        _ => None,
    });
    assert_eq!(class, Some(20));
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_untrusted_server_certificate_is_an_error_the_app_can_show() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = TestProxy::start_with(server.addr, None, |_| {}).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.prelogin(false).await;
    let tokens = client.login(PASSWORD).await;
    let errors = error_messages(&tokens);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("TLS with the server failed")),
        "{errors:?}"
    );
    assert!(server.sent.lock().unwrap().is_empty());
    proxy.shutdown().await;
}
