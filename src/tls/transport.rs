//! The byte stream a connection leg runs on: plain TCP, TLS whose handshake
//! travelled inside PRELOGIN packets (TDS 7.x, [MS-TDS] 2.2.6.5), or TLS from
//! the first byte (TDS 8.0 strict), in either role.
//!
//! ```text
//!   TDS 7.x:  PRELOGIN (clear) -> TLS handshake in 0x12 packets -> LOGIN7 over TLS
//!                 -> full:       everything after stays inside TLS
//!                 -> login-only: both sides drop TLS, no close_notify
//!   TDS 8.0:  TLS handshake (ALPN tds/8.0) -> PRELOGIN, LOGIN7, ... inside TLS
//! ```
//!
//! Record sizes: a TDS packet written with one `write` and then flushed
//! travels in one TLS record, provided it is at most 16384 bytes (rustls cuts
//! records at 2^14 bytes of plaintext). SQL Server limits the packet size on
//! encrypted connections to [`MAX_ENCRYPTED_PACKET_SIZE`]; legs that use TLS
//! must negotiate a packet size no larger.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::rustls::CommonState;
use tokio_rustls::TlsStream;

use super::client::TlsConnectors;
use super::error::{Peer, TlsError};
use super::prelogin_wrapper::{Phase, PreloginWrapper};
use super::replay::Replay;
use super::server::TlsAcceptors;

/// Largest packet size on a leg that uses TLS: SQL Server refuses a larger
/// network packet size when encryption is on, and it keeps each TDS packet
/// within one TLS record.
pub const MAX_ENCRYPTED_PACKET_SIZE: usize = 16383;

/// What happens to TLS after LOGIN7 on a TDS 7.x leg ([MS-TDS] 2.2.6.5,
/// the encryption outcome of the two PRELOGIN ENCRYPTION options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// The whole session stays encrypted.
    Full,
    /// Only LOGIN7 is encrypted (client and server both said ENCRYPT_OFF).
    LoginOnly,
}

/// Which kind of stream a [`Transport`] currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Plain,
    /// TLS whose handshake ran inside PRELOGIN packets.
    Prelogin,
    /// TDS 8.0 strict: TLS from the first byte.
    Strict,
}

/// One leg's byte stream. Reads and writes carry TDS packets.
#[derive(Debug)]
pub enum Transport<S> {
    Plain(Replay<S>),
    Prelogin(Box<TlsStream<PreloginWrapper<S>>>),
    Strict(Box<TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// An unencrypted leg.
    pub fn plain(stream: S) -> Self {
        Transport::Plain(Replay::new(Vec::new(), stream))
    }

    /// Server role, TDS 7.x: runs the TLS handshake inside PRELOGIN packets
    /// of at most `packet_size` bytes, after the PRELOGIN exchange agreed on
    /// encryption.
    pub async fn accept_prelogin(
        stream: S,
        tls: &TlsAcceptors,
        packet_size: usize,
        encryption: Encryption,
    ) -> Result<Self, TlsError> {
        let wrapper = PreloginWrapper::new(stream, packet_size);
        let accepted = tls
            .prelogin_acceptor()
            .accept(wrapper)
            .into_fallible()
            .await;
        let tls_stream = match accepted {
            Ok(tls_stream) => tls_stream,
            Err((err, wrapper)) => return Err(send_alert(err, wrapper, Peer::Client).await),
        };

        Ok(Transport::after_prelogin_handshake(
            tls_stream.into(),
            encryption,
        ))
    }

    /// Server role, TDS 8.0 strict: the TLS handshake is the first thing on
    /// the stream (replay the sniffed bytes with [`super::detect::detect`]).
    pub async fn accept_strict(stream: S, tls: &TlsAcceptors) -> Result<Self, TlsError> {
        let accepted = tls.strict_acceptor().accept(stream).await;
        let tls_stream = accepted.map_err(|e| TlsError::from_handshake(e, Peer::Client))?;

        Ok(Transport::Strict(Box::new(tls_stream.into())))
    }

    /// Client role, TDS 7.x: the handshake inside PRELOGIN packets.
    pub async fn connect_prelogin(
        stream: S,
        tls: &TlsConnectors,
        packet_size: usize,
        encryption: Encryption,
    ) -> Result<Self, TlsError> {
        let wrapper = PreloginWrapper::new(stream, packet_size);
        let name = tls.server_name().clone();
        let connecting = tls.prelogin_connector().connect(name, wrapper);
        let tls_stream = match connecting.into_fallible().await {
            Ok(tls_stream) => tls_stream,
            Err((err, wrapper)) => return Err(send_alert(err, wrapper, Peer::Server).await),
        };

        Ok(Transport::after_prelogin_handshake(
            tls_stream.into(),
            encryption,
        ))
    }

    /// Client role, TDS 8.0 strict: TLS first, offering ALPN `tds/8.0`.
    pub async fn connect_strict(stream: S, tls: &TlsConnectors) -> Result<Self, TlsError> {
        let name = tls.server_name().clone();
        let connected = tls.strict_connector().connect(name, stream).await;
        let tls_stream = connected.map_err(|e| TlsError::from_handshake(e, Peer::Server))?;

        Ok(Transport::Strict(Box::new(tls_stream.into())))
    }

    fn after_prelogin_handshake(
        mut tls_stream: TlsStream<PreloginWrapper<S>>,
        encryption: Encryption,
    ) -> Self {
        let login_only = encryption == Encryption::LoginOnly;
        tls_stream.get_mut().0.handshake_done(login_only);

        Transport::Prelogin(Box::new(tls_stream))
    }

    /// Login-only encryption: once LOGIN7 has been read (server role) or
    /// written (client role), drops TLS without close_notify and continues in
    /// plaintext on the raw stream. Flushes what was written first.
    ///
    /// Fails if the peer sent more over TLS than was read, since those bytes
    /// could be neither returned as plaintext TDS nor dropped silently. The
    /// transport is consumed either way: a leg that was not set up with
    /// [`Encryption::LoginOnly`] gives [`TlsError::WrongState`], a bug in the
    /// caller.
    pub async fn end_login_encryption(self) -> Result<Self, TlsError> {
        let Transport::Prelogin(mut tls_stream) = self else {
            return Err(TlsError::WrongState("login-only downgrade without tls"));
        };
        if tls_stream.get_ref().0.phase() != Phase::RecordBounded {
            return Err(TlsError::WrongState(
                "login-only downgrade of a full-tls leg",
            ));
        }

        let peer = remote_of(&tls_stream);
        tls_stream
            .flush()
            .await
            .map_err(|source| TlsError::Io { peer, source })?;
        abandon(*tls_stream, peer)
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            Transport::Plain(_) => TransportKind::Plain,
            Transport::Prelogin(_) => TransportKind::Prelogin,
            Transport::Strict(_) => TransportKind::Strict,
        }
    }

    /// The ALPN protocol agreed in the handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls_state()?.alpn_protocol()
    }

    /// The TLS protocol version in use, if any.
    pub fn protocol_version(&self) -> Option<tokio_rustls::rustls::ProtocolVersion> {
        self.tls_state()?.protocol_version()
    }

    fn tls_state(&self) -> Option<&CommonState> {
        match self {
            Transport::Plain(_) => None,
            Transport::Prelogin(tls) => Some(tls.get_ref().1),
            Transport::Strict(tls) => Some(tls.get_ref().1),
        }
    }
}

/// The remote end of a TLS stream: our role's opposite.
fn remote_of<T>(tls: &TlsStream<T>) -> Peer {
    match tls {
        TlsStream::Client(_) => Peer::Server,
        TlsStream::Server(_) => Peer::Client,
    }
}

/// How long a failed handshake may take to deliver its alert to the peer.
const ALERT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// After a failed handshake the TLS engine has written its alert into the
/// wrapper without flushing it; sends it in a final 0x12 packet so the peer
/// learns why, then classifies the error.
async fn send_alert<S: AsyncWrite + Unpin>(
    err: io::Error,
    mut wrapper: PreloginWrapper<S>,
    peer: Peer,
) -> TlsError {
    let _ = tokio::time::timeout(ALERT_FLUSH_TIMEOUT, wrapper.flush()).await;

    TlsError::from_handshake(err, peer)
}

/// Drops the TLS session and returns the raw stream, with any bytes the
/// wrapper read but did not hand to TLS in front.
fn abandon<S>(
    tls_stream: TlsStream<PreloginWrapper<S>>,
    peer: Peer,
) -> Result<Transport<S>, TlsError> {
    let (wrapper, unread_plaintext) = match tls_stream {
        TlsStream::Client(tls) => {
            let (wrapper, mut conn) = tls.into_inner();
            (wrapper, has_plaintext(conn.reader()))
        }
        TlsStream::Server(tls) => {
            let (wrapper, mut conn) = tls.into_inner();
            (wrapper, has_plaintext(conn.reader()))
        }
    };
    if unread_plaintext || wrapper.is_mid_record() {
        return Err(TlsError::DataAfterLogin { peer });
    }

    let (stream, leftover) = wrapper.into_parts();
    Ok(Transport::Plain(Replay::new(leftover, stream)))
}

fn has_plaintext(mut reader: tokio_rustls::rustls::Reader<'_>) -> bool {
    matches!(io::Read::read(&mut reader, &mut [0u8; 1]), Ok(1))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Prelogin(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Strict(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

/// Writes `buf` as one TLS record: first drains TLS data still waiting from
/// an earlier write, so rustls accepts the whole buffer at once rather than
/// part of it (which would split a packet across records).
fn poll_write_whole<T: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut TlsStream<T>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    if tls.get_ref().1.wants_write() {
        ready!(Pin::new(&mut *tls).poll_flush(cx))?;
    }

    Pin::new(tls).poll_write(cx, buf)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Prelogin(s) => poll_write_whole(s.as_mut(), cx, buf),
            Transport::Strict(s) => poll_write_whole(s.as_mut(), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Prelogin(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Strict(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Prelogin(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Strict(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
