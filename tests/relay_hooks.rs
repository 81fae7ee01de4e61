//! The rewriting hook points: an intercepting response rewriter that keeps
//! every item gives the client the same message bytes (re-packetised), a
//! request rewriter can replace a request, and session resets reach both.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use common::fake_server::{FakeServer, Reply, SPID};
use common::proxy::TestProxy;
use common::raw_client::{batch_payload, RawClient};
use tdsguard::relay::hook::{
    RequestInterest, ResponseAction, RewriteError, Rewritten, SessionInfo,
};
use tdsguard::relay::{RequestRewriter, ResponseRewriter, RewriterFactory};
use tdsguard::tds::packet::{encode_message, Message, PacketHeader, PacketType};
use tdsguard::tds::stream::Item;
use tdsguard::tds::token::TokenContext;

#[derive(Default)]
struct Counters {
    requests_rewritten: AtomicUsize,
    request_resets: AtomicUsize,
    rows: AtomicUsize,
}

struct Hooked(Arc<Counters>);

struct Requests(Arc<Counters>);
struct Responses(Arc<Counters>);

impl RequestRewriter for Requests {
    fn interest(&mut self, _first: &PacketHeader) -> RequestInterest {
        RequestInterest::WholeMessage
    }

    fn rewrite_request(
        &mut self,
        message: &Message,
        _session: &SessionInfo,
    ) -> Result<Rewritten, RewriteError> {
        self.0.requests_rewritten.fetch_add(1, Ordering::SeqCst);
        let mut payload = message.payload.to_vec();
        payload.extend("-- rewritten".encode_utf16().flat_map(u16::to_le_bytes));
        Ok(Rewritten::Replaced(Bytes::from(payload)))
    }

    fn on_reset(&mut self) {
        self.0.request_resets.fetch_add(1, Ordering::SeqCst);
    }
}

impl ResponseRewriter for Responses {
    fn intercept(&mut self, _session: &SessionInfo) -> bool {
        true
    }

    fn on_item(
        &mut self,
        item: &Item,
        _ctx: &TokenContext,
        _session: &SessionInfo,
    ) -> Result<ResponseAction, RewriteError> {
        if matches!(item, Item::RowEnd) {
            self.0.rows.fetch_add(1, Ordering::SeqCst);
        }
        Ok(ResponseAction::Forward)
    }
}

impl RewriterFactory for Hooked {
    fn request(&self) -> Box<dyn RequestRewriter> {
        Box::new(Requests(Arc::clone(&self.0)))
    }

    fn response(&self) -> Box<dyn ResponseRewriter> {
        Box::new(Responses(Arc::clone(&self.0)))
    }
}

/// Payloads of the messages in a stream of whole packets.
fn message_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = PacketHeader::decode(rest).expect("a packet header");
        let (packet, tail) = rest.split_at(usize::from(header.length));
        current.extend_from_slice(&packet[8..]);
        if header.is_eom() {
            messages.push(std::mem::take(&mut current));
        }
        rest = tail;
    }
    messages
}

#[tokio::test]
async fn relay_hooks_intercepted_results_keep_their_bytes() {
    let server = FakeServer::start(|n| Reply::Rows([20_000, 1][n % 2])).await;
    let counters = Arc::new(Counters::default());
    let factory = Arc::new(Hooked(Arc::clone(&counters)));
    let ca = Some(server.cert_pem.clone());
    let proxy = TestProxy::start_hooked(server.addr, ca, |_| {}, factory).await;

    let mut client = RawClient::connect(proxy.addr).await;
    client.prelogin(false).await;
    client.login("x").await;
    client.received.clear();
    client.send_batch("SELECT id, name FROM t").await;
    client.read_message().await.expect("the first result");

    let mut out = bytes::BytesMut::new();
    let reset = tdsguard::tds::packet::status::RESETCONNECTION;
    encode_message(
        PacketType::SqlBatch,
        reset,
        &batch_payload("SELECT 1"),
        4096,
        &mut out,
    )
    .expect("encode");
    tokio::io::AsyncWriteExt::write_all(&mut client.tcp, &out)
        .await
        .expect("write");
    client.read_message().await.expect("the second result");

    let sent = server.sent.lock().unwrap().clone();
    assert_eq!(message_payloads(&client.received), message_payloads(&sent));
    let first = PacketHeader::decode(&client.received).expect("header");
    assert_eq!(first.spid, SPID);
    assert_eq!(counters.rows.load(Ordering::SeqCst), 20_001);
    assert_eq!(counters.requests_rewritten.load(Ordering::SeqCst), 2);
    assert_eq!(counters.request_resets.load(Ordering::SeqCst), 1);
    drop(client);
    proxy.shutdown().await;
}
