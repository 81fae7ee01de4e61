//! The login exchange ([MS-TDS] 2.2.6.4 LOGIN7, 2.2.2.2 login response).
//!
//! The application's LOGIN7 goes upstream unchanged: SQL logins and FEDAUTH
//! access tokens pass through, and tdsguard keeps no credentials beyond the
//! login itself (the bytes are held, zeroed on drop, only until the login
//! ends so that a redirect can replay them). The server's answer is read
//! whole (it is small) through the codec's token reader, which also leaves
//! the token context (TDS version, acknowledged features) for the session.
//!
//! Packet size: the size the application asked for goes upstream. The size
//! the server confirms in ENVCHANGE type 4 is the size the application is
//! told and the size tdsguard then uses toward it, except that on an
//! encrypted application leg a size above 16383 is capped, as SQL Server
//! caps it when encryption is on (and as keeps each packet in one TLS
//! record).

use std::fmt;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;
use tracing::trace;
use zeroize::Zeroizing;

use crate::relay::error::{Leg, RelayError};
use crate::relay::io::PacketRead;
use crate::relay::redirect;
use crate::relay::upstream::Target;
use crate::tds::login7::{FeatureId, Login7};
use crate::tds::packet::{
    encode_message_with_spid, Assembled, MessageAssembler, Packet, PacketType, DEFAULT_PACKET_SIZE,
    MAX_PACKET_LEN,
};
use crate::tds::stream::{Item, RowMode, Signal, TokenReader};
use crate::tds::token::env_change::ENV_PACKETSIZE;
use crate::tds::token::{EnvChange, TdsVersion, Token, TokenContext, UcsString};
use crate::tls::MAX_ENCRYPTED_PACKET_SIZE;

/// Cap on one login response. SQL Server's is a few hundred bytes; session
/// recovery state and FEDAUTHINFO add a few KiB. 1 MiB bounds what a server
/// can make tdsguard hold before the session starts.
pub const MAX_LOGIN_RESPONSE_LEN: usize = 1 << 20;

/// Cap on a client message during login (LOGIN7, SSPI, FEDAUTH token):
/// LOGIN7 is at most 128 KiB - 1 (2.2.6.4); a FEDAUTH token is a few KiB.
pub const MAX_LOGIN_MESSAGE_LEN: usize = 128 * 1024;

/// Rounds of SSPI or FEDAUTH exchange allowed during one login. NTLM takes
/// two, Kerberos and the FEDAUTHINFO workflow one or two.
pub const MAX_LOGIN_ROUNDS: usize = 8;

/// The application's LOGIN7 as it arrived.
pub struct LoginRequest {
    packets: Zeroizing<Vec<u8>>,
    pub tds_version: TdsVersion,
    /// Requested packet size; 0 means the server's default.
    pub packet_size: u32,
    pub fed_auth: bool,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("len", &self.packets.len())
            .field("tds_version", &self.tds_version)
            .field("packet_size", &self.packet_size)
            .field("fed_auth", &self.fed_auth)
            .finish()
    }
}

impl LoginRequest {
    /// Checks the LOGIN7 packets and keeps their bytes.
    pub fn new(packets: &[Packet]) -> Result<Self, RelayError> {
        let mut assembler = MessageAssembler::new(MAX_LOGIN_MESSAGE_LEN);
        let mut payload = None;
        for packet in packets {
            if let Some(Assembled::Message(m)) = assembler
                .push(packet)
                .map_err(RelayError::decode(Leg::Client))?
            {
                payload = Some(Zeroizing::new(m.payload.to_vec()));
            }
        }
        let payload = payload.ok_or(RelayError::Closed {
            leg: Leg::Client,
            during: "inside LOGIN7",
        })?;
        let login = Login7::decode(&payload).map_err(RelayError::decode(Leg::Client))?;

        let mut bytes = Zeroizing::new(Vec::new());
        for packet in packets {
            bytes.extend_from_slice(&packet.raw);
        }
        Ok(LoginRequest {
            packets: bytes,
            tds_version: TdsVersion(login.tds_version),
            packet_size: login.packet_size,
            fed_auth: login.has_feature(FeatureId::FedAuth),
        })
    }

    /// The packets to send upstream, as the client sent them.
    pub fn packets(&self) -> &[u8] {
        &self.packets
    }

    /// The packet size that applies when the server does not say.
    pub fn requested_packet_size(&self) -> usize {
        match self.packet_size {
            0 => DEFAULT_PACKET_SIZE,
            size => (size as usize).min(MAX_PACKET_LEN),
        }
    }
}

/// The server's answer to a login message, read whole.
pub struct LoginResponse {
    packets: Vec<Packet>,
    items: Vec<(Token, Bytes)>,
    /// Where the server redirects the client, if it does.
    pub routing: Option<Target>,
    /// The TDS version LOGINACK reported.
    pub login_ack: Option<TdsVersion>,
    /// ENVCHANGE type 4.
    pub packet_size: Option<u32>,
    /// The context the tokens left: carried into the session.
    pub context: TokenContext,
    spid: u16,
}

impl LoginResponse {
    /// Whether the response ends the login exchange: logged in or refused.
    /// SSPI and FEDAUTHINFO responses ask the client for another message.
    pub fn is_final(&self) -> bool {
        self.login_ack.is_some() || !self.asks_for_more()
    }

    /// The ENVCHANGE tokens of the response, in order.
    pub fn env_changes(&self) -> Vec<EnvChange> {
        self.items
            .iter()
            .filter_map(|(token, _)| match token {
                Token::EnvChange(change) => Some(change.clone()),
                _ => None,
            })
            .collect()
    }

    fn asks_for_more(&self) -> bool {
        self.items
            .iter()
            .any(|(token, _)| matches!(token, Token::Sspi(_) | Token::FedAuthInfo(_)))
    }

    /// The packet size the server runs the session at.
    pub fn server_packet_size(&self, request: &LoginRequest) -> usize {
        match self.packet_size {
            Some(size) => (size as usize).min(MAX_PACKET_LEN),
            None => request.requested_packet_size(),
        }
    }

    /// The bytes for the client: as received, unless `client_size` differs
    /// from what the server confirmed, in which case ENVCHANGE type 4 is
    /// re-encoded with `client_size`.
    pub fn for_client(&self, client_size: usize) -> Result<Bytes, RelayError> {
        let confirmed = self.packet_size.map(|s| s as usize);
        if confirmed.is_none() || confirmed == Some(client_size) {
            return Ok(self.original());
        }
        let mut payload = Vec::new();
        for (token, raw) in &self.items {
            match token {
                Token::EnvChange(change) if change.packet_size().is_some() => {
                    capped_packet_size(change, client_size).encode(&mut payload)?;
                }
                _ => payload.extend_from_slice(raw),
            }
        }
        let mut out = BytesMut::new();
        let ty = PacketType::TabularResult;
        encode_message_with_spid(ty, 0, self.spid, &payload, DEFAULT_PACKET_SIZE, &mut out)?;
        Ok(out.freeze())
    }

    fn original(&self) -> Bytes {
        let mut out = BytesMut::new();
        for packet in &self.packets {
            out.extend_from_slice(&packet.raw);
        }
        out.freeze()
    }
}

/// The packet size the client leg uses: the server's, capped on an
/// encrypted client leg.
pub fn client_packet_size(server_size: usize, client_encrypted: bool) -> usize {
    if client_encrypted {
        return server_size.min(MAX_ENCRYPTED_PACKET_SIZE);
    }
    server_size
}

fn capped_packet_size(change: &EnvChange, size: usize) -> EnvChange {
    let old = match change {
        EnvChange::Text { old, .. } => old.clone(),
        _ => UcsString::default(),
    };
    EnvChange::Text {
        env_type: ENV_PACKETSIZE,
        new: UcsString::from(size.to_string().as_str()),
        old,
    }
}

/// Reads one login response message through the token reader.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut PacketRead<R>,
    ctx: TokenContext,
) -> Result<LoginResponse, RelayError> {
    let mut tokens = TokenReader::new(ctx);
    tokens.set_row_mode(RowMode::Whole {
        max_row_bytes: MAX_LOGIN_RESPONSE_LEN,
    });
    let mut response = LoginResponse {
        packets: Vec::new(),
        items: Vec::new(),
        routing: None,
        login_ack: None,
        packet_size: None,
        context: TokenContext::default(),
        spid: 0,
    };
    let mut total = 0;
    loop {
        let packet = reader.expect("before answering the login").await?;
        total += packet.raw.len();
        check_login_packet(&packet, total)?;
        response.spid = packet.header.spid;
        tokens.handle_bytes(&packet.payload());
        drain(&mut tokens, &mut response)?;
        let eom = packet.header.is_eom();
        response.packets.push(packet);
        if eom {
            break;
        }
    }
    finish(tokens, response)
}

fn check_login_packet(packet: &Packet, total: usize) -> Result<(), RelayError> {
    if packet.header.packet_type != PacketType::TabularResult {
        return Err(RelayError::UnexpectedPacket {
            leg: Leg::Server,
            packet_type: packet.header.packet_type.to_u8(),
            during: "the login response",
        });
    }
    if total > MAX_LOGIN_RESPONSE_LEN {
        return Err(RelayError::Decode {
            leg: Leg::Server,
            source: crate::tds::DecodeError::TooLarge {
                structure: "login response",
                length: total,
                limit: MAX_LOGIN_RESPONSE_LEN,
            },
        });
    }
    Ok(())
}

fn drain(tokens: &mut TokenReader, response: &mut LoginResponse) -> Result<(), RelayError> {
    while let Some(item) = tokens
        .poll_item()
        .map_err(RelayError::decode(Leg::Server))?
    {
        note_signal(&item, response)?;
        if let Item::Token { token, raw } = item {
            trace!(
                token = token.name(),
                len = raw.len(),
                "login response token"
            );
            response.items.push((token, raw));
        }
    }
    Ok(())
}

fn note_signal(item: &Item, response: &mut LoginResponse) -> Result<(), RelayError> {
    match item.signal() {
        Some(Signal::LoginAck(version)) => response.login_ack = Some(version),
        Some(Signal::PacketSize(size)) => response.packet_size = Some(size),
        Some(Signal::Routing(routing)) => response.routing = Some(redirect::target(routing)?),
        _ => {}
    }
    Ok(())
}

fn finish(tokens: TokenReader, mut response: LoginResponse) -> Result<LoginResponse, RelayError> {
    if !tokens.is_idle() {
        return Err(RelayError::Decode {
            leg: Leg::Server,
            source: crate::tds::DecodeError::Malformed {
                structure: "login response",
                reason: "the message ends inside a token",
            },
        });
    }
    response.context = tokens.context().clone();
    Ok(response)
}

/// Whether a login response's final DONE carries an error without LOGINACK:
/// the server refused the login and will close.
pub fn refused(response: &LoginResponse) -> bool {
    response.login_ack.is_none() && response.is_final()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::packet::PacketHeader;
    use crate::tds::token::{encode_all, Done, DoneKind, DoneStatus, LoginAck};

    fn env_packet_size(new: &str, old: &str) -> Token {
        Token::EnvChange(EnvChange::Text {
            env_type: ENV_PACKETSIZE,
            new: new.into(),
            old: old.into(),
        })
    }

    fn done() -> Token {
        Token::Done(Done {
            kind: DoneKind::Done,
            status: DoneStatus(0),
            cur_cmd: 0,
            row_count: 0,
        })
    }

    fn login_ack() -> Token {
        Token::LoginAck(LoginAck {
            interface: 1,
            tds_version: TdsVersion::V7_4,
            prog_name: "srv".into(),
            prog_version: [16, 0, 0, 1],
        })
    }

    async fn response_of(tokens: &[Token]) -> LoginResponse {
        let payload = encode_all(tokens, &mut TokenContext::default()).unwrap();
        let mut out = BytesMut::new();
        let ty = PacketType::TabularResult;
        encode_message_with_spid(ty, 0, 51, &payload, 512, &mut out).unwrap();
        let mut reader = PacketRead::new(&out[..], Leg::Server);
        read_response(&mut reader, TokenContext::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn unchanged_response_goes_to_the_client_as_received() {
        let tokens = [login_ack(), env_packet_size("8000", "4096"), done()];
        let response = response_of(&tokens).await;
        assert_eq!(response.login_ack, Some(TdsVersion::V7_4));
        assert_eq!(response.packet_size, Some(8000));
        assert!(response.is_final() && !refused(&response));
        assert_eq!(response.for_client(8000).unwrap(), response.original());
    }

    #[tokio::test]
    async fn capped_packet_size_is_re_encoded() {
        let tokens = [login_ack(), env_packet_size("32767", "4096"), done()];
        let response = response_of(&tokens).await;
        let size = client_packet_size(response.server_packet_size_for_test(), true);
        assert_eq!(size, 16383);
        let bytes = response.for_client(size).unwrap();
        let header = PacketHeader::decode(&bytes).unwrap();
        assert_eq!(header.spid, 51);
        let mut ctx = TokenContext::default();
        let decoded = crate::tds::token::decode_all(&bytes[8..], &mut ctx).unwrap();
        let Token::EnvChange(change) = &decoded[1] else {
            panic!("{decoded:?}");
        };
        assert_eq!(change.packet_size(), Some(16383));
    }

    impl LoginResponse {
        fn server_packet_size_for_test(&self) -> usize {
            self.packet_size.unwrap_or(4096) as usize
        }
    }
}
