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
//! - A request rewriter may answer a request itself ([`Rewritten::Answered`]):
//!   nothing goes upstream and the answer reaches the client between server
//!   messages. It may also ask for a request of the proxy's own to run
//!   first on the same session ([`Rewritten::OwnRequestFirst`]): its reply
//!   goes to [`ResponseRewriter::on_own_item`], never to the client, and
//!   the client's message is offered again once the reply has ended.
//! - Every ENVCHANGE reaches [`ResponseRewriter::on_env_change`], whether
//!   the message is intercepted or not.

use bytes::Bytes;
use thiserror::Error;

use crate::tds::packet::{Message, PacketHeader};
use crate::tds::stream::{Item, RowMode};
use crate::tds::token::{ColMetadata, EnvChange, TokenContext};

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
    /// Send nothing upstream; answer the client with this token stream (a
    /// whole response, ending in a DONE without MORE).
    Answered(Bytes),
    /// First run this SQL batch payload of the proxy's own on the session
    /// (the client's reset bits move onto it, so it runs after the reset);
    /// its reply goes to the response rewriter. Then the message is offered
    /// again.
    OwnRequestFirst(Bytes),
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
    /// The ENVCHANGE tokens of the login response, in order: the database
    /// the session starts in, its collation, the packet size.
    pub login_env: Vec<EnvChange>,
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

    /// While intercepting, after each COLMETADATA has been offered to
    /// `on_item` (or `on_own_item`): how the following rows are handed over
    /// (whole and decoded, or as raw pieces).
    fn row_mode(&mut self, _metadata: &ColMetadata) -> RowMode {
        RowMode::Pieces
    }

    /// While intercepting: each token, row piece or row end, in order, with
    /// the reader's context (version, features) for re-encoding.
    fn on_item(
        &mut self,
        _item: &Item,
        _ctx: &TokenContext,
        _session: &SessionInfo,
    ) -> Result<ResponseAction, RewriteError> {
        Ok(ResponseAction::Forward)
    }

    /// Each item of the reply to a request of the proxy's own
    /// ([`Rewritten::OwnRequestFirst`]); nothing of it reaches the client.
    /// After its COLMETADATA, [`row_mode`](Self::row_mode) is asked too.
    fn on_own_item(&mut self, _item: &Item) -> Result<(), RewriteError> {
        Ok(())
    }

    /// The reply to the proxy's own request has ended.
    fn on_own_reply_end(&mut self) {}

    /// Every ENVCHANGE token of the server, intercepted or not.
    fn on_env_change(&mut self, _change: &EnvChange) {}

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

    /// Both rewriters of one connection after its login; they may share
    /// state. By default two independent ones.
    fn pair(
        &self,
        _session: &SessionInfo,
    ) -> (Box<dyn RequestRewriter>, Box<dyn ResponseRewriter>) {
        (self.request(), self.response())
    }
}

impl RewriterFactory for PassThrough {
    fn request(&self) -> Box<dyn RequestRewriter> {
        Box::new(PassThrough)
    }

    fn response(&self) -> Box<dyn ResponseRewriter> {
        Box::new(PassThrough)
    }
}
