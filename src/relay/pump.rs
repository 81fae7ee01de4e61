//! The request/response loop after login: two directions running side by
//! side, each passing packets through the codec and a rewriter hook.
//!
//! Client to server: each request is either forwarded packet by packet or,
//! when the request rewriter asks, assembled and replaced. An attention goes
//! upstream at once, unless a request is still being forwarded: then right
//! after its last packet, never inside it. RESETCONNECTION is reported to
//! both rewriters.
//!
//! Server to client: every packet goes through the codec's streaming token
//! reader (rows as raw pieces, so a result of any size streams in constant
//! memory), which yields DONE(ATTN) and the reset acknowledgement; packets
//! are forwarded as they came unless the response rewriter intercepts the
//! message. After an attention the server must acknowledge within the cancel
//! timeout, or both legs are closed.
//!
//! Two side channels join the directions, both bounded: answers the request
//! rewriter gives in place of a request (sent to the client between server
//! messages), and requests of the proxy's own (the next server message is
//! their reply, read by the response rewriter and not forwarded).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::trace;

use crate::relay::attention::AttentionSignal;
use crate::relay::error::{Leg, RelayError};
use crate::relay::hook::{
    RequestInterest, RequestRewriter, ResponseAction, ResponseRewriter, RewriteError, Rewritten,
    SessionInfo,
};
use crate::relay::io::{fit_packet, PacketRead, PacketWrite};
use crate::tds::packet::{
    encode_message, encode_message_with_spid, Assembled, Message, MessageAssembler, Packet,
    PacketHeader, PacketType, HEADER_LEN,
};
use crate::tds::stream::{Item, RowMode, Signal, TokenReader};
use crate::tds::token::{Token, TokenContext};

/// Answers waiting for the client. The client waits for each answer before
/// its next request (no MARS), so one is normal; a few absorb a client that
/// pipelines anyway, and beyond them the request side waits.
const ANSWER_QUEUE: usize = 4;

/// Times the request rewriter may ask for a request of its own before one
/// client message (a key load, then perhaps a retry after a reset).
const MAX_OWN_REQUESTS_PER_MESSAGE: usize = 2;

/// Time the server has to answer a request of the proxy's own. It is a small
/// query; SQL Server answers in milliseconds, a resuming Azure database in
/// seconds. The login timeout is the same order of wait.
const OWN_REQUEST_TIMEOUT: Duration = crate::relay::connection::LOGIN_TIMEOUT;

/// The request side's ends of the side channels.
struct SideSend {
    answers: mpsc::Sender<Bytes>,
    own: mpsc::Sender<oneshot::Sender<()>>,
}

/// The response side's ends.
struct SideRecv {
    answers: mpsc::Receiver<Bytes>,
    own: mpsc::Receiver<oneshot::Sender<()>>,
}

fn side_channels() -> (SideSend, SideRecv) {
    let (answers_tx, answers_rx) = mpsc::channel(ANSWER_QUEUE);
    // One own request is outstanding at a time: the request side waits for
    // its reply.
    let (own_tx, own_rx) = mpsc::channel(1);
    let send = SideSend {
        answers: answers_tx,
        own: own_tx,
    };
    let recv = SideRecv {
        answers: answers_rx,
        own: own_rx,
    };
    (send, recv)
}

/// What both directions share.
#[derive(Clone)]
pub struct Shared {
    pub session: SessionInfo,
    pub attention: AttentionSignal,
    pub cancel_timeout: Duration,
}

/// Runs both directions until one ends; the connection then closes.
pub async fn run<CR, CW, SR, SW>(
    client: (PacketRead<CR>, PacketWrite<CW>),
    server: (PacketRead<SR>, PacketWrite<SW>),
    rewriters: (Box<dyn RequestRewriter>, Box<dyn ResponseRewriter>),
    shared: Shared,
    context: TokenContext,
) -> Result<(), RelayError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let (client_rd, client_wr) = client;
    let (server_rd, server_wr) = server;
    let (send, recv) = side_channels();
    let mut up = Upward::new(client_rd, server_wr, rewriters.0, shared.clone(), send);
    let mut down = Downward::new(server_rd, client_wr, rewriters.1, shared, context, recv);
    tokio::select! {
        result = up.run() => result,
        result = down.run() => result,
    }
}

/// Client to server.
struct Upward<R, W> {
    client: PacketRead<R>,
    server: PacketWrite<W>,
    rewriter: Box<dyn RequestRewriter>,
    shared: Shared,
    assembler: MessageAssembler,
    /// Mode of the request being received, while one is.
    current: Option<RequestInterest>,
    /// Packets of a request held for the rewriter.
    held: Vec<Bytes>,
    /// An attention that arrived while a request was being forwarded.
    pending_attention: Option<Packet>,
    side: SideSend,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Upward<R, W> {
    fn new(
        client: PacketRead<R>,
        server: PacketWrite<W>,
        rewriter: Box<dyn RequestRewriter>,
        shared: Shared,
        side: SideSend,
    ) -> Self {
        Upward {
            client,
            server,
            rewriter,
            shared,
            assembler: MessageAssembler::default(),
            current: None,
            held: Vec::new(),
            pending_attention: None,
            side,
        }
    }

    async fn run(&mut self) -> Result<(), RelayError> {
        while let Some(packet) = self.client.next().await? {
            trace!(
                packet.kind = packet.header.packet_type.name(),
                packet.len = packet.raw.len(),
                "client packet"
            );
            self.handle(packet).await?;
        }
        if self.current.is_some() {
            return Err(RelayError::Closed {
                leg: Leg::Client,
                during: "in the middle of a request",
            });
        }
        Ok(())
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), RelayError> {
        if packet.header.packet_type == PacketType::Attention {
            return self.attention(packet).await;
        }
        if self.current.is_none() {
            self.start_request(&packet.header)?;
        }
        let eom = packet.header.is_eom();
        match self.current {
            Some(RequestInterest::WholeMessage) => self.hold(packet).await?,
            _ => self.pass(&packet).await?,
        }
        if eom {
            self.end_request().await?;
        }
        Ok(())
    }

    fn start_request(&mut self, header: &PacketHeader) -> Result<(), RelayError> {
        if !is_request(header.packet_type) {
            return Err(RelayError::UnexpectedPacket {
                leg: Leg::Client,
                packet_type: header.packet_type.to_u8(),
                during: "the session",
            });
        }
        if header.reset_flags() != 0 {
            trace!(reset = header.reset_flags(), "session reset requested");
            self.rewriter.on_reset();
        }
        self.current = Some(self.rewriter.interest(header));
        Ok(())
    }

    async fn pass(&mut self, packet: &Packet) -> Result<(), RelayError> {
        for piece in fit_packet(packet, self.shared.session.server_packet_size) {
            self.server.send(&piece).await?;
        }
        Ok(())
    }

    async fn hold(&mut self, packet: Packet) -> Result<(), RelayError> {
        let assembled = self
            .assembler
            .push(&packet)
            .map_err(RelayError::decode(Leg::Client))?;
        self.held.push(packet.raw);
        match assembled {
            Some(Assembled::Message(message)) => self.rewrite(message).await,
            // The client abandoned the message (EOM|IGNORE): nothing of it
            // has gone upstream, so the buffer is dropped (2.2.3.1.2).
            Some(Assembled::Discarded { .. }) => {
                self.held.clear();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Offers a whole message to the rewriter, running the requests of its
    /// own it asks for first.
    async fn rewrite(&mut self, mut message: Message) -> Result<(), RelayError> {
        for _ in 0..=MAX_OWN_REQUESTS_PER_MESSAGE {
            let outcome = self
                .rewriter
                .rewrite_request(&message, &self.shared.session)?;
            let Rewritten::OwnRequestFirst(payload) = outcome else {
                return self.forward_rewritten(&message, outcome).await;
            };
            self.own_request(&payload, message.reset_flags).await?;
            message.reset_flags = 0;
            self.clear_held_reset();
        }
        Err(RelayError::Rewrite(RewriteError {
            reason: "the rewriter kept asking for requests of its own".into(),
        }))
    }

    async fn forward_rewritten(
        &mut self,
        message: &Message,
        outcome: Rewritten,
    ) -> Result<(), RelayError> {
        let payload = match outcome {
            Rewritten::Replaced(payload) => payload,
            Rewritten::Answered(tokens) => return self.answer(&tokens).await,
            Rewritten::Unchanged | Rewritten::OwnRequestFirst(_) => return self.flush_held().await,
        };
        self.held.clear();
        let mut out = BytesMut::new();
        let size = self.shared.session.server_packet_size;
        encode_message(
            message.packet_type,
            message.reset_flags,
            &payload,
            size,
            &mut out,
        )?;
        self.server.send_packets(&out).await
    }

    /// Answers the client instead of the server: the request is dropped.
    async fn answer(&mut self, tokens: &[u8]) -> Result<(), RelayError> {
        self.held.clear();
        let mut out = BytesMut::new();
        let size = self.shared.session.client_packet_size;
        encode_message_with_spid(PacketType::TabularResult, 0, 0, tokens, size, &mut out)?;
        self.side
            .answers
            .send(out.freeze())
            .await
            .map_err(|_| closed_inside())
    }

    /// Sends a SQL batch of the proxy's own and waits until the response
    /// side has read its whole reply.
    async fn own_request(&mut self, payload: &[u8], reset_flags: u8) -> Result<(), RelayError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.side
            .own
            .send(done_tx)
            .await
            .map_err(|_| closed_inside())?;
        let mut out = BytesMut::new();
        let size = self.shared.session.server_packet_size;
        encode_message(PacketType::SqlBatch, reset_flags, payload, size, &mut out)?;
        self.server.send_packets(&out).await?;
        trace!(len = out.len(), "own request sent");

        match tokio::time::timeout(OWN_REQUEST_TIMEOUT, done_rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(closed_inside()),
            Err(_) => Err(RelayError::OwnRequestTimeout {
                timeout_ms: OWN_REQUEST_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// The reset bits went with the own request; the held first packet
    /// must not reset the session a second time.
    fn clear_held_reset(&mut self) {
        let Some(first) = self.held.first_mut() else {
            return;
        };
        let mut packet = BytesMut::from(&first[..]);
        if let Some(status_byte) = packet.get_mut(1) {
            *status_byte &= !crate::tds::packet::status::RESET_MASK;
        }
        *first = packet.freeze();
    }

    async fn flush_held(&mut self) -> Result<(), RelayError> {
        for raw in std::mem::take(&mut self.held) {
            self.server.send(&raw).await?;
        }
        Ok(())
    }

    async fn end_request(&mut self) -> Result<(), RelayError> {
        self.current = None;
        match self.pending_attention.take() {
            Some(attention) => self.send_attention(&attention).await,
            None => Ok(()),
        }
    }

    async fn attention(&mut self, packet: Packet) -> Result<(), RelayError> {
        if self.current.is_some() {
            trace!("attention held until the request is forwarded");
            self.pending_attention = Some(packet);
            return Ok(());
        }
        self.send_attention(&packet).await
    }

    async fn send_attention(&mut self, packet: &Packet) -> Result<(), RelayError> {
        self.server.send(&packet.raw).await?;
        trace!("attention forwarded");
        let deadline = Instant::now() + self.shared.cancel_timeout;
        self.shared.attention.sent(deadline);
        Ok(())
    }
}

/// The other direction ended while this one waited for it.
fn closed_inside() -> RelayError {
    RelayError::Closed {
        leg: Leg::Server,
        during: "while tdsguard waited for its own request",
    }
}

/// Client packet types that start a request after login (2.2.3.1.1).
fn is_request(packet_type: PacketType) -> bool {
    matches!(
        packet_type,
        PacketType::SqlBatch
            | PacketType::Rpc
            | PacketType::BulkLoad
            | PacketType::TransactionManager
            | PacketType::FedAuthToken
            | PacketType::Sspi
    )
}

/// Server to client.
struct Downward<R, W> {
    server: PacketRead<R>,
    client: PacketWrite<W>,
    rewriter: Box<dyn ResponseRewriter>,
    shared: Shared,
    tokens: TokenReader,
    attention: watch::Receiver<Option<Instant>>,
    /// Bytes of an intercepted message not yet sent.
    emitted: BytesMut,
    /// Whether a server message has started and not ended.
    in_message: bool,
    /// Whether the current message is intercepted by the rewriter.
    intercepting: bool,
    side: SideRecv,
    /// While the current message is the reply to a request of the proxy's
    /// own: whom to tell when it ends.
    own_reply: Option<oneshot::Sender<()>>,
}

/// What the response side waits for.
enum Event {
    Server(Option<Packet>),
    /// An answer of the request side for the client.
    Answer(Bytes),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Downward<R, W> {
    fn new(
        server: PacketRead<R>,
        client: PacketWrite<W>,
        rewriter: Box<dyn ResponseRewriter>,
        shared: Shared,
        context: TokenContext,
        side: SideRecv,
    ) -> Self {
        let attention = shared.attention.subscribe();
        let mut tokens = TokenReader::new(context);
        tokens.set_row_mode(RowMode::Pieces);
        Downward {
            server,
            client,
            rewriter,
            shared,
            tokens,
            attention,
            emitted: BytesMut::new(),
            in_message: false,
            intercepting: false,
            side,
            own_reply: None,
        }
    }

    async fn run(&mut self) -> Result<(), RelayError> {
        loop {
            let packet = match self.next_event().await? {
                Event::Server(Some(packet)) => packet,
                Event::Server(None) => return self.server_closed(),
                Event::Answer(answer) => {
                    self.client.send_packets(&answer).await?;
                    continue;
                }
            };
            trace!(
                packet.kind = packet.header.packet_type.name(),
                packet.len = packet.raw.len(),
                "server packet"
            );
            self.handle(packet).await?;
        }
    }

    fn server_closed(&self) -> Result<(), RelayError> {
        if self.in_message {
            return Err(RelayError::Closed {
                leg: Leg::Server,
                during: "in the middle of a response",
            });
        }
        Ok(())
    }

    /// The next server packet or answer for the client, watching the
    /// cancel deadline meanwhile. Answers go out only between server
    /// messages.
    async fn next_event(&mut self) -> Result<Event, RelayError> {
        loop {
            let between = !self.in_message;
            let deadline = *self.attention.borrow_and_update();
            let Some(deadline) = deadline else {
                tokio::select! {
                    biased;
                    Some(answer) = self.side.answers.recv(), if between => return Ok(Event::Answer(answer)),
                    packet = self.server.next() => return packet.map(Event::Server),
                    _ = self.attention.changed() => self.rewriter.on_attention(),
                }
                continue;
            };
            tokio::select! {
                biased;
                Some(answer) = self.side.answers.recv(), if between => return Ok(Event::Answer(answer)),
                packet = self.server.next() => return packet.map(Event::Server),
                _ = self.attention.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Err(self.cancel_timed_out()),
            }
        }
    }

    fn cancel_timed_out(&self) -> RelayError {
        RelayError::CancelTimeout {
            timeout_ms: self.shared.cancel_timeout.as_millis() as u64,
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), RelayError> {
        if packet.header.packet_type != PacketType::TabularResult {
            return Err(RelayError::UnexpectedPacket {
                leg: Leg::Server,
                packet_type: packet.header.packet_type.to_u8(),
                during: "the session",
            });
        }
        self.start_of_message();
        self.tokens.handle_bytes(&packet.payload());
        self.drain_items()?;

        if self.own_reply.is_some() {
            trace!("own request reply read");
        } else if self.intercepting {
            self.send_emitted(&packet.header).await?;
        } else {
            self.forward(&packet).await?;
        }
        if packet.header.is_eom() {
            self.end_of_message()?;
        }
        Ok(())
    }

    fn start_of_message(&mut self) {
        if self.in_message {
            return;
        }
        self.in_message = true;
        // Without MARS the server answers in request order, and the request
        // side sends nothing else while its own request is outstanding: the
        // next message is that reply. (A client that pipelines requests
        // against the protocol could make an earlier reply be read as it;
        // the key reply parser then fails closed.)
        if let Ok(done) = self.side.own.try_recv() {
            self.own_reply = Some(done);
            self.intercepting = false;
            return;
        }
        self.intercepting = self.rewriter.intercept(&self.shared.session);
        if !self.intercepting {
            self.tokens.set_row_mode(RowMode::Pieces);
        }
    }

    fn end_of_message(&mut self) -> Result<(), RelayError> {
        self.in_message = false;
        if let Some(done) = self.own_reply.take() {
            self.rewriter.on_own_reply_end();
            self.tokens.set_row_mode(RowMode::Pieces);
            let _ = done.send(());
        }
        if self.tokens.is_idle() {
            return Ok(());
        }
        Err(RelayError::Decode {
            leg: Leg::Server,
            source: crate::tds::DecodeError::Malformed {
                structure: "server message",
                reason: "the message ends inside a token",
            },
        })
    }

    /// Runs every complete item through the signals and, when
    /// intercepting, the rewriter.
    fn drain_items(&mut self) -> Result<(), RelayError> {
        while let Some(item) = self
            .tokens
            .poll_item()
            .map_err(RelayError::decode(Leg::Server))?
        {
            self.observe(&item);
            if self.own_reply.is_some() {
                self.own_item(&item)?;
            } else if self.intercepting {
                self.rewrite_item(&item)?;
            }
        }
        Ok(())
    }

    fn observe(&mut self, item: &Item) {
        if let Some(Token::EnvChange(change)) = item.token() {
            self.rewriter.on_env_change(change);
        }
        match item.signal() {
            Some(Signal::Done {
                attention: true, ..
            }) => {
                trace!("attention acknowledged");
                self.shared.attention.acknowledged();
            }
            Some(Signal::ResetAck) => {
                trace!("session reset acknowledged");
                self.rewriter.on_reset();
            }
            _ => {}
        }
    }

    fn own_item(&mut self, item: &Item) -> Result<(), RelayError> {
        self.rewriter.on_own_item(item)?;
        if let Some(Token::ColMetadata(metadata)) = item.token() {
            let mode = self.rewriter.row_mode(metadata);
            self.tokens.set_row_mode(mode);
        }
        Ok(())
    }

    /// The rewriter sees COLMETADATA first, then picks the row mode: the
    /// reader has not decoded any row yet, since items are polled one by one.
    fn rewrite_item(&mut self, item: &Item) -> Result<(), RelayError> {
        let ctx = self.tokens.context();
        let action = self.rewriter.on_item(item, ctx, &self.shared.session)?;
        if let Some(Token::ColMetadata(metadata)) = item.token() {
            let mode = self.rewriter.row_mode(metadata);
            self.tokens.set_row_mode(mode);
        }
        match action {
            ResponseAction::Forward => {
                if let Some(raw) = item.raw() {
                    self.emitted.extend_from_slice(raw);
                }
            }
            ResponseAction::Replace(bytes) => self.emitted.extend_from_slice(&bytes),
        }
        Ok(())
    }

    async fn forward(&mut self, packet: &Packet) -> Result<(), RelayError> {
        for piece in fit_packet(packet, self.shared.session.client_packet_size) {
            self.client.send(&piece).await?;
        }
        Ok(())
    }

    /// Sends the intercepted bytes in whole packets; at the end of the
    /// server's message, the rest with EOM.
    async fn send_emitted(&mut self, header: &PacketHeader) -> Result<(), RelayError> {
        let chunk = self.shared.session.client_packet_size - HEADER_LEN;
        while self.emitted.len() > chunk {
            let part = self.emitted.split_to(chunk);
            self.send_payload(header, &part, false).await?;
        }
        if header.is_eom() {
            let part = self.emitted.split();
            self.send_payload(header, &part, true).await?;
        }
        Ok(())
    }

    /// Sends one packet of re-emitted payload, with the server's SPID.
    async fn send_payload(
        &mut self,
        header: &PacketHeader,
        payload: &[u8],
        eom: bool,
    ) -> Result<(), RelayError> {
        let mut out = BytesMut::new();
        let size = (payload.len() + HEADER_LEN).max(HEADER_LEN + 1);
        let ty = PacketType::TabularResult;
        encode_message_with_spid(ty, 0, header.spid, payload, size, &mut out)?;
        if !eom {
            clear_eom(&mut out);
        }
        self.client.send(&out).await
    }
}

/// Clears EOM on a single encoded packet.
fn clear_eom(packet: &mut BytesMut) {
    if let Some(status_byte) = packet.get_mut(1) {
        *status_byte &= !crate::tds::packet::status::EOM;
    }
}
