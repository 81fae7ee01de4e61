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
//! - A response rewriter sees each server packet of a response in order. It
//!   either forwards the packet as it came or emits payload bytes of its own;
//!   emitted bytes are re-packetised at the client's packet size, and the
//!   message ends where the server's message ended.
//! - After an attention the server may cut a result anywhere; the response
//!   rewriter is told, and must cope with a result set that never ends.
//! - RESETCONNECTION drops per-session state (prepared handles, metadata).

use bytes::Bytes;
use thiserror::Error;

use crate::tds::packet::{Message, Packet, PacketHeader};

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

/// The outcome of offering a server packet to the response rewriter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseAction {
    /// Forward the packet as it came.
    Forward,
    /// Send these payload bytes instead (possibly none yet: held back).
    Emit(Bytes),
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
    /// Called with every packet of every response after login.
    fn on_packet(
        &mut self,
        _packet: &Packet,
        _session: &SessionInfo,
    ) -> Result<ResponseAction, RewriteError> {
        Ok(ResponseAction::Forward)
    }

    /// An attention went upstream: the current response may end early.
    fn on_attention(&mut self) {}

    /// The session was reset (see [`RequestRewriter::on_reset`]).
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
