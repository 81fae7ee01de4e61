//! Where message rewriting plugs into the relay.
//!
//! The relay calls a [`RequestRewriter`] for every client request and a
//! [`ResponseRewriter`] for every server packet after login. The pass-through
//! implementations change nothing, and then every packet is forwarded as it
//! came. Column encryption implements both traits: requests whose parameters
//! or literals touch a mapped column are buffered whole and replaced;
//! results are run through the codec's streaming token reader and cells of
//! mapped columns re-encoded.
//!
//! Contract:
//! - A request rewriter sees the first packet of each message and decides
//!   whether it needs the whole message. Only then is the message assembled
//!   (bounded by the assembler's cap) and offered to
//!   [`RequestRewriter::rewrite_request`]. A replacement payload is
//!   re-packetised at the upstream packet size.
//! - Every server message runs through the codec's streaming token reader
//!   (rows as raw pieces unless a rewriter asks for them whole). A response
//!   rewriter decides per message whether to intercept it; if not, its
//!   packets are forwarded as they came. If so, it sees each item and
//!   forwards or replaces its bytes; the result is re-packetised at the
//!   client's packet size and ends where the server's message ended.
//! - After an attention the server may cut a result anywhere; the response
//!   rewriter is told, and must cope with a result set that never ends.
//! - RESETCONNECTION drops per-session state (prepared handles, metadata).

use bytes::Bytes;
use thiserror::Error;

use crate::tds::packet::{Message, PacketHeader};
use crate::tds::stream::{Item, RowMode};
use crate::tds::token::ColMetadata;

/// A rewriter refused or failed to rewrite a message. The relay ends the
/// connection; the message says why without quoting values.
#[derive(Debug, Error)]
#[error("{reason}")]
pub struct RewriteError {
    pub reason: String,
}

/// What the request rewriter wants to see of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestInterest {
    /// Forward each packet as it arrives.
    PassThrough,
    /// Assemble the message and offer it to `rewrite_request`.
    WholeMessage,
}

/// The outcome of rewriting an assembled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// Forward the packets as they came.
    Unchanged,
    /// Send this payload instead, same packet type and reset bits.
    Replaced(Bytes),
}

/// What to send for one server item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseAction {
    /// The item's bytes as they came.
    Forward,
    /// These bytes instead (possibly none: the item is dropped or held).
    Replace(Bytes),
}

/// Facts about the session a rewriter may need.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Packet size toward the client, after login.
    pub client_packet_size: usize,
    /// Packet size toward the server, after login.
    pub server_packet_size: usize,
    /// The TDS version LOGINACK reported, as LOGINACK carries it.
    pub tds_version: u32,
}

/// Client-to-server hook.
pub trait RequestRewriter: Send {
    /// Called with the header of the first packet of each request.
    fn interest(&mut self, _first: &PacketHeader) -> RequestInterest {
        RequestInterest::PassThrough
    }

    /// Called with a whole request when `interest` asked for it.
    fn rewrite_request(
        &mut self,
        _message: &Message,
        _session: &SessionInfo,
    ) -> Result<Rewritten, RewriteError> {
        Ok(Rewritten::Unchanged)
    }

    /// The client asked for a session reset (RESETCONNECTION or
    /// RESETCONNECTIONSKIPTRAN on a request).
    fn on_reset(&mut self) {}
}

/// Server-to-client hook.
pub trait ResponseRewriter: Send {
    /// Called at the start of each server message: whether to see its items
    /// and have them re-emitted, rather than its packets forwarded as they
    /// came.
    fn intercept(&mut self, _session: &SessionInfo) -> bool {
        false
    }

    /// While intercepting, after each COLMETADATA: how the following rows
    /// are handed over (whole and decoded, or as raw pieces).
    fn row_mode(&mut self, _metadata: &ColMetadata) -> RowMode {
        RowMode::Pieces
    }

    /// While intercepting: each token, row piece or row end, in order.
    fn on_item(
        &mut self,
        _item: &Item,
        _session: &SessionInfo,
    ) -> Result<ResponseAction, RewriteError> {
        Ok(ResponseAction::Forward)
    }

    /// An attention went upstream: the current response may end early, in
    /// the middle of a result set.
    fn on_attention(&mut self) {}

    /// The server acknowledged a session reset (ENVCHANGE type 18).
    fn on_reset(&mut self) {}
}

/// Changes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl RequestRewriter for PassThrough {}
impl ResponseRewriter for PassThrough {}

/// Makes the rewriters for each new connection.
pub trait RewriterFactory: Send + Sync {
    fn request(&self) -> Box<dyn RequestRewriter>;
    fn response(&self) -> Box<dyn ResponseRewriter>;
}

impl RewriterFactory for PassThrough {
    fn request(&self) -> Box<dyn RequestRewriter> {
        Box::new(PassThrough)
    }

    fn response(&self) -> Box<dyn ResponseRewriter> {
        Box::new(PassThrough)
    }
}
