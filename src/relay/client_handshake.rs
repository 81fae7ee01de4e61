//! The application leg up to its LOGIN7: first-bytes detection, PRELOGIN,
//! TLS, and the refusals an application must be able to show
//! ([MS-TDS] 2.2.6.5 PRELOGIN, 2.2.6.4 LOGIN7; TDS 8.0 strict).
//!
//! What tdsguard answers to the client's PRELOGIN ENCRYPTION, per
//! `listen.tls` (TDS-NOTES §2 outcome table):
//!
//! ```text
//! client says     off          optional         required
//! OFF             NOT_SUP      OFF  login-only  REQ  full TLS
//! ON / REQ        NOT_SUP (*)  ON   full TLS    REQ  full TLS
//! NOT_SUP         NOT_SUP      NOT_SUP plain    NOT_SUP, then an error after LOGIN7
//! (*) the client gives up with its own message.
//! ```
//!
//! MARS is always answered 0; a client that goes on with SMP framing
//! (first byte 0x53) instead of LOGIN7 gets an error. A client starting with
//! LOGIN7 and no PRELOGIN (jTDS) is served when plaintext is allowed. Errors
//! are sent as ERROR + DONE once the client waits for a login response.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, trace};

use crate::config::ClientTls as ListenTls;
use crate::relay::error::{Leg, RelayError};
use crate::relay::io::PacketRead;
use crate::relay::login::MAX_LOGIN_MESSAGE_LEN;
use crate::relay::reply::{fatal_error_default, prelogin_response};
use crate::relay::upstream::read_message;
use crate::tds::packet::{Packet, PacketType, DEFAULT_PACKET_SIZE, HEADER_LEN};
use crate::tds::prelogin::{Encryption, PreLogin, MAX_PRELOGIN_LEN};
use crate::tls::{detect, Encryption as TlsMode, FirstPacket, Replay, TlsAcceptors, Transport};

/// The application leg's stream.
pub type ClientStream = Transport<Replay<TcpStream>>;

/// Cap on the LOGIN7 packets, headers included: the payload cap plus the
/// headers of packets no smaller than the 512-byte minimum (2.2.6.4).
const MAX_LOGIN_WIRE_LEN: usize = MAX_LOGIN_MESSAGE_LEN / (512 - HEADER_LEN) * 512 + 512;

/// First byte of an SMP (MARS) frame, [MC-SMP] 2.2.1 SMID.
const SMP_SMID: u8 = 0x53;

/// How the application leg is protected after login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEncryption {
    /// No TLS at all.
    Plain,
    /// TLS for LOGIN7 only.
    LoginOnly,
    /// TLS for the whole session, negotiated in PRELOGIN.
    Full,
    /// TDS 8.0: TLS from the first byte.
    Strict,
}

impl ClientEncryption {
    /// Whether the session after login runs inside TLS.
    pub fn session_encrypted(self) -> bool {
        matches!(self, ClientEncryption::Full | ClientEncryption::Strict)
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientEncryption::Plain => "plain",
            ClientEncryption::LoginOnly => "login-only",
            ClientEncryption::Full => "tls",
            ClientEncryption::Strict => "strict",
        }
    }
}

/// What the application leg needs from the configuration.
#[derive(Clone)]
pub struct ClientSettings {
    pub tls: ListenTls,
    pub server_tls: Option<Arc<TlsAcceptors>>,
}

/// An application that has sent its LOGIN7.
pub struct AcceptedClient {
    /// Positioned after LOGIN7, on the stream the session runs on (TLS
    /// already dropped for login-only).
    pub io: PacketRead<ClientStream>,
    pub encryption: ClientEncryption,
    /// The LOGIN7 packets as they came.
    pub login: Vec<Packet>,
    /// The client's PRELOGIN FEDAUTHREQUIRED byte, if it sent one.
    pub fed_auth: Option<bool>,
}

/// What the PRELOGIN answer leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Plain,
    LoginOnly,
    Full,
    /// Plaintext refused: read LOGIN7, then answer with an error.
    Refuse,
}

/// Runs the application leg up to and including LOGIN7.
pub async fn accept(tcp: TcpStream, settings: &ClientSettings) -> Result<AcceptedClient, RelayError> {
    let (first, replay) = detect(tcp)
        .await
        .map_err(RelayError::io(Leg::Client, "reading the first bytes"))?;
    trace!(first = ?first, "client first bytes");
    match first {
        FirstPacket::Prelogin => prelogin(replay, settings).await,
        FirstPacket::Login7 => login7_first(replay, settings).await,
        FirstPacket::TlsClientHello { .. } => strict(replay, settings).await,
        FirstPacket::PreTds7Login => refuse_now(replay, RelayError::PreTds7Login).await,
        FirstPacket::Garbage => Err(garbage()),
    }
}

fn garbage() -> RelayError {
    RelayError::Decode {
        leg: Leg::Client,
        source: crate::tds::DecodeError::Malformed {
            structure: "first packet",
            reason: "neither PRELOGIN, LOGIN7 nor a TLS ClientHello",
        },
    }
}

/// The answer and plan for the client's ENCRYPTION option.
fn plan(listen: ListenTls, client: Option<Encryption>) -> (Encryption, Plan) {
    let client = client.unwrap_or(Encryption::NotSupported);
    match (listen, client) {
        (ListenTls::Off, _) | (_, Encryption::NotSupported) if listen != ListenTls::Required => {
            (Encryption::NotSupported, Plan::Plain)
        }
        (ListenTls::Required, Encryption::NotSupported) => (Encryption::NotSupported, Plan::Refuse),
        (ListenTls::Required, _) => (Encryption::Required, Plan::Full),
        (_, Encryption::Off) => (Encryption::Off, Plan::LoginOnly),
        _ => (Encryption::On, Plan::Full),
    }
}

/// TDS 7.x: PRELOGIN in the clear, then TLS as agreed, then LOGIN7.
async fn prelogin(
    replay: Replay<TcpStream>,
    settings: &ClientSettings,
) -> Result<AcceptedClient, RelayError> {
    let mut reader = PacketRead::new(replay, Leg::Client);
    let payload = read_message(&mut reader, PacketType::PreLogin, MAX_PRELOGIN_LEN).await?;
    let request = PreLogin::decode(&payload).map_err(RelayError::decode(Leg::Client))?;
    let (answer, plan) = plan(settings.tls, request.encryption().map(|(mode, _)| mode));
    trace!(answer = ?answer, mars = ?request.mars(), "client PRELOGIN");

    let (mut replay, rest) = reader.into_parts();
    if !rest.is_empty() {
        return Err(early_bytes());
    }
    write_raw(&mut replay, &prelogin_response(&request, answer)?).await?;

    let stream = start_tls(replay, settings, plan).await?;
    let encryption = match plan {
        Plan::LoginOnly => ClientEncryption::LoginOnly,
        Plan::Full => ClientEncryption::Full,
        Plan::Plain | Plan::Refuse => ClientEncryption::Plain,
    };
    let accepted = read_login(stream, encryption, request.fed_auth_required()).await?;
    if plan == Plan::Refuse {
        return refuse(accepted.io, RelayError::EncryptionRequired).await;
    }
    finish_login_only(accepted).await
}

fn early_bytes() -> RelayError {
    RelayError::UnexpectedPacket {
        leg: Leg::Client,
        packet_type: 0,
        during: "before the PRELOGIN answer",
    }
}

async fn start_tls(
    replay: Replay<TcpStream>,
    settings: &ClientSettings,
    plan: Plan,
) -> Result<ClientStream, RelayError> {
    let mode = match plan {
        Plan::Plain | Plan::Refuse => return Ok(Transport::plain(replay)),
        Plan::LoginOnly => TlsMode::LoginOnly,
        Plan::Full => TlsMode::Full,
    };
    let tls = server_tls(settings)?;
    Transport::accept_prelogin(replay, tls, DEFAULT_PACKET_SIZE, mode)
        .await
        .map_err(RelayError::tls(Leg::Client))
}

fn server_tls(settings: &ClientSettings) -> Result<&TlsAcceptors, RelayError> {
    settings
        .server_tls
        .as_deref()
        .ok_or(RelayError::EncryptionRefused)
}

/// TDS 8.0 strict: TLS first, PRELOGIN and LOGIN7 inside it.
async fn strict(
    replay: Replay<TcpStream>,
    settings: &ClientSettings,
) -> Result<AcceptedClient, RelayError> {
    if settings.tls == ListenTls::Off {
        return Err(RelayError::EncryptionRefused);
    }
    let tls = server_tls(settings)?;
    let stream = Transport::accept_strict(replay, tls)
        .await
        .map_err(RelayError::tls(Leg::Client))?;

    let mut reader = PacketRead::new(stream, Leg::Client);
    let payload = read_message(&mut reader, PacketType::PreLogin, MAX_PRELOGIN_LEN).await?;
    let request = PreLogin::decode(&payload).map_err(RelayError::decode(Leg::Client))?;
    let answer = prelogin_response(&request, Encryption::On)?;
    write_raw(reader.get_mut(), &answer).await?;

    let (stream, rest) = reader.into_parts();
    if !rest.is_empty() {
        return Err(early_bytes());
    }
    read_login(stream, ClientEncryption::Strict, request.fed_auth_required()).await
}

/// A client that starts with LOGIN7 and no PRELOGIN (jTDS).
async fn login7_first(
    replay: Replay<TcpStream>,
    settings: &ClientSettings,
) -> Result<AcceptedClient, RelayError> {
    let stream = Transport::plain(replay);
    let accepted = read_login(stream, ClientEncryption::Plain, None).await?;
    if settings.tls == ListenTls::Required {
        return refuse(accepted.io, RelayError::EncryptionRequired).await;
    }
    Ok(accepted)
}

/// Reads LOGIN7 (refusing SMP frames and other packet types).
async fn read_login(
    stream: ClientStream,
    encryption: ClientEncryption,
    fed_auth: Option<bool>,
) -> Result<AcceptedClient, RelayError> {
    let mut io = PacketRead::new(stream, Leg::Client);
    let mut login = Vec::new();
    let mut total = 0;
    loop {
        let packet = match io.next().await {
            Err(RelayError::Decode { .. }) if starts_with_smp(&io) => {
                return refuse(io, RelayError::MarsRequired).await;
            }
            other => other?.ok_or(RelayError::Closed {
                leg: Leg::Client,
                during: "before LOGIN7",
            })?,
        };
        check_login_packet(&packet, total)?;
        total += packet.raw.len();
        let eom = packet.header.is_eom();
        login.push(packet);
        if eom {
            break;
        }
    }
    Ok(AcceptedClient {
        io,
        encryption,
        login,
        fed_auth,
    })
}

fn starts_with_smp(io: &PacketRead<ClientStream>) -> bool {
    io.peek_pending().first() == Some(&SMP_SMID)
}

fn check_login_packet(packet: &Packet, total: usize) -> Result<(), RelayError> {
    let total = total + packet.raw.len();
    match packet.header.packet_type {
        PacketType::Login7 if total <= MAX_LOGIN_WIRE_LEN => Ok(()),
        PacketType::Login7 => Err(RelayError::Decode {
            leg: Leg::Client,
            source: crate::tds::DecodeError::TooLarge {
                structure: "LOGIN7",
                length: total,
                limit: MAX_LOGIN_WIRE_LEN,
            },
        }),
        PacketType::PreTds7Login => Err(RelayError::PreTds7Login),
        other => Err(RelayError::UnexpectedPacket {
            leg: Leg::Client,
            packet_type: other.to_u8(),
            during: "login, where LOGIN7 was expected",
        }),
    }
}

/// Login-only: drop TLS now that LOGIN7 has been read.
async fn finish_login_only(mut accepted: AcceptedClient) -> Result<AcceptedClient, RelayError> {
    if accepted.encryption != ClientEncryption::LoginOnly {
        return Ok(accepted);
    }
    let (stream, rest) = accepted.io.into_parts();
    if !rest.is_empty() {
        return Err(early_bytes());
    }
    let stream = stream
        .end_login_encryption()
        .await
        .map_err(RelayError::tls(Leg::Client))?;
    accepted.io = PacketRead::new(stream, Leg::Client);
    debug!("login-only encryption ended after LOGIN7");
    Ok(accepted)
}

/// Sends the error to a client waiting for a login response, then fails.
pub async fn refuse<T>(mut io: PacketRead<ClientStream>, err: RelayError) -> Result<T, RelayError> {
    let reply = fatal_error_default(&err.client_text())?;
    let _ = write_raw(io.get_mut(), &reply).await;
    let _ = io.get_mut().shutdown().await;
    Err(err)
}

/// A refusal before any PRELOGIN (pre-TDS7 login): best effort.
async fn refuse_now<T>(replay: Replay<TcpStream>, err: RelayError) -> Result<T, RelayError> {
    refuse(PacketRead::new(Transport::plain(replay), Leg::Client), err).await
}

async fn write_raw<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &Bytes,
) -> Result<(), RelayError> {
    crate::relay::io::PacketWrite::new(stream, Leg::Client)
        .send_packets(bytes)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_the_table() {
        use Encryption::*;
        let cases = [
            (ListenTls::Off, Some(Off), NotSupported, Plan::Plain),
            (ListenTls::Off, Some(Required), NotSupported, Plan::Plain),
            (ListenTls::Optional, Some(Off), Off, Plan::LoginOnly),
            (ListenTls::Optional, Some(On), On, Plan::Full),
            (ListenTls::Optional, Some(Required), On, Plan::Full),
            (ListenTls::Optional, Some(NotSupported), NotSupported, Plan::Plain),
            (ListenTls::Optional, None, NotSupported, Plan::Plain),
            (ListenTls::Required, Some(Off), Required, Plan::Full),
            (ListenTls::Required, Some(On), Required, Plan::Full),
            (ListenTls::Required, Some(NotSupported), NotSupported, Plan::Refuse),
        ];
        for (listen, client, answer, expected) in cases {
            assert_eq!(plan(listen, client), (answer, expected), "{listen:?} {client:?}");
        }
    }
}
