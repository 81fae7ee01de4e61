//! tdsguard's own connection to the server: TCP, then either its PRELOGIN
//! and a TLS handshake carried in PRELOGIN packets (TDS 7.x, [MS-TDS]
//! 2.2.6.5) or TLS first with ALPN `tds/8.0` and PRELOGIN inside it (TDS 8.0
//! strict). The upstream leg is never plaintext: a server that answers
//! ENCRYPT_NOT_SUP is refused. The certificate and host name are verified
//! unless `trust_server_certificate` is set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, trace};

use crate::config::UpstreamEncryption;
use crate::relay::error::{Leg, RelayError};
use crate::relay::io::{PacketRead, PacketWrite};
use crate::relay::reply::PRELOGIN_VERSION;
use crate::tds::packet::{
    encode_message, Assembled, MessageAssembler, PacketType, DEFAULT_PACKET_SIZE,
};
use crate::tds::prelogin::{Encryption, PreLogin, MAX_PRELOGIN_LEN};
use crate::tls::{TlsConnectors, ConnectorOptions, Encryption as TlsMode, Transport};

/// The server leg's stream.
pub type ServerStream = Transport<TcpStream>;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name: resolved, sent as SNI and checked against the certificate.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How to connect, from `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub encryption: UpstreamEncryption,
    pub ca_file: Option<PathBuf>,
    pub trust_server_certificate: bool,
    /// TCP connect plus TLS handshake plus PRELOGIN.
    pub connect_timeout: Duration,
}

/// A connected, encrypted server leg, ready for LOGIN7.
pub struct ServerConn {
    pub stream: ServerStream,
    pub addr: SocketAddr,
}

/// Connects to `target` within the connect timeout. `fed_auth` is the
/// client's PRELOGIN FEDAUTHREQUIRED byte, passed on.
pub async fn connect(
    target: &Target,
    settings: &UpstreamSettings,
    fed_auth: Option<bool>,
) -> Result<ServerConn, RelayError> {
    let attempt = connect_inner(target, settings, fed_auth);
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(RelayError::ConnectTimeout {
            addr: target.to_string(),
        }),
    }
}

async fn connect_inner(
    target: &Target,
    settings: &UpstreamSettings,
    fed_auth: Option<bool>,
) -> Result<ServerConn, RelayError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| RelayError::Connect {
            addr: target.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let addr = tcp.peer_addr().map_err(RelayError::io(Leg::Server, "connecting"))?;
    debug!(server.addr = %addr, "connected upstream");

    let tls = client_tls(target, settings)?;
    let stream = match settings.encryption {
        UpstreamEncryption::Tls => prelogin_then_tls(tcp, &tls, fed_auth).await?,
        UpstreamEncryption::Strict => tls_then_prelogin(tcp, &tls, fed_auth).await?,
    };
    Ok(ServerConn { stream, addr })
}

fn client_tls(target: &Target, settings: &UpstreamSettings) -> Result<TlsConnectors, RelayError> {
    let options = ConnectorOptions {
        host_name: target.host.clone(),
        ca_file: settings.ca_file.clone(),
        trust_server_certificate: settings.trust_server_certificate,
    };
    TlsConnectors::new(&options).map_err(RelayError::tls(Leg::Server))
}

/// TDS 7.x: PRELOGIN in the clear, then TLS inside PRELOGIN packets.
async fn prelogin_then_tls(
    mut tcp: TcpStream,
    tls: &TlsConnectors,
    fed_auth: Option<bool>,
) -> Result<ServerStream, RelayError> {
    let answer = exchange_prelogin(&mut tcp, fed_auth).await?;
    check_server_encryption(&answer)?;
    Transport::connect_prelogin(tcp, tls, DEFAULT_PACKET_SIZE, TlsMode::Full)
        .await
        .map_err(RelayError::tls(Leg::Server))
}

/// TDS 8.0 strict: TLS first, PRELOGIN inside it.
async fn tls_then_prelogin(
    tcp: TcpStream,
    tls: &TlsConnectors,
    fed_auth: Option<bool>,
) -> Result<ServerStream, RelayError> {
    let mut stream = Transport::connect_strict(tcp, tls)
        .await
        .map_err(RelayError::tls(Leg::Server))?;
    exchange_prelogin(&mut stream, fed_auth).await?;
    Ok(stream)
}

fn check_server_encryption(answer: &PreLogin) -> Result<(), RelayError> {
    match answer.encryption() {
        Some((Encryption::On | Encryption::Required | Encryption::Off, _)) => Ok(()),
        _ => Err(RelayError::ServerRefusedEncryption),
    }
}

/// Sends tdsguard's PRELOGIN and reads the server's answer.
async fn exchange_prelogin<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    fed_auth: Option<bool>,
) -> Result<PreLogin, RelayError> {
    let request = own_prelogin(fed_auth)?;
    PacketWrite::new(&mut *stream, Leg::Server)
        .send_packets(&request)
        .await?;

    let mut reader = PacketRead::new(&mut *stream, Leg::Server);
    let payload = read_message(&mut reader, PacketType::TabularResult, MAX_PRELOGIN_LEN).await?;
    if reader.buffered() != 0 {
        return Err(unexpected_bytes());
    }
    let answer = PreLogin::decode(&payload).map_err(RelayError::decode(Leg::Server))?;
    trace!(options = answer.options().len(), "server PRELOGIN answer");
    Ok(answer)
}

fn unexpected_bytes() -> RelayError {
    RelayError::UnexpectedPacket {
        leg: Leg::Server,
        packet_type: 0,
        during: "after its PRELOGIN answer",
    }
}

/// ENCRYPT_ON, MARS off, tdsguard's version. FEDAUTHREQUIRED is passed on
/// when the client sent it. No NONCEOPT is sent and the server's nonce is not
/// passed to the client: with separate PRELOGINs on each leg a client
/// cannot echo a nonce it never saw, so FEDAUTH logins that rely on the
/// nonce echo (TDS-NOTES §16) need tdsguard to authenticate with its own
/// identity; access tokens carried in LOGIN7 pass through unchanged.
fn own_prelogin(fed_auth: Option<bool>) -> Result<BytesMut, RelayError> {
    let mut request = PreLogin::new();
    request.set_version(PRELOGIN_VERSION);
    request.set_encryption(Encryption::On, false);
    request.set_instance(&[0x00]);
    request.set_thread_id(std::process::id());
    request.set_mars(false);
    if let Some(required) = fed_auth {
        request.set_fed_auth_required(required);
    }

    let mut payload = BytesMut::new();
    request.encode(&mut payload)?;
    let mut out = BytesMut::new();
    encode_message(PacketType::PreLogin, 0, &payload, DEFAULT_PACKET_SIZE, &mut out)?;
    Ok(out)
}

/// Reads one whole message of `packet_type`, at most `max_len` bytes.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut PacketRead<R>,
    packet_type: PacketType,
    max_len: usize,
) -> Result<bytes::Bytes, RelayError> {
    let leg = reader_leg(packet_type);
    let mut assembler = MessageAssembler::new(max_len);
    loop {
        let packet = reader.expect("during the handshake").await?;
        if packet.header.packet_type != packet_type {
            return Err(RelayError::UnexpectedPacket {
                leg,
                packet_type: packet.header.packet_type.to_u8(),
                during: "the handshake",
            });
        }
        let assembled = assembler.push(&packet).map_err(RelayError::decode(leg))?;
        if let Some(Assembled::Message(message)) = assembled {
            return Ok(message.payload);
        }
    }
}

/// Server messages are tabular results; everything else comes from clients.
fn reader_leg(packet_type: PacketType) -> Leg {
    if packet_type == PacketType::TabularResult {
        Leg::Server
    } else {
        Leg::Client
    }
}
