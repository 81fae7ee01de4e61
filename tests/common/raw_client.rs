//! A plaintext TDS client that sends exactly the bytes a test wants and
//! records exactly the bytes it gets back.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use tdsguard::tds::login7::Login7;
use tdsguard::tds::packet::{encode_message, PacketHeader, PacketType, HEADER_LEN};
use tdsguard::tds::prelogin::{Encryption, PreLogin};
use tdsguard::tds::token::{decode_all, Token, TokenContext};

/// Time any single read may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RawClient {
    pub tcp: TcpStream,
    /// Every byte received after the login response.
    pub received: Vec<u8>,
}

/// One packet as received.
pub struct RawPacket {
    pub header: PacketHeader,
    pub raw: Vec<u8>,
}

impl RawPacket {
    pub fn payload(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        tcp.set_nodelay(true).expect("nodelay");
        RawClient {
            tcp,
            received: Vec::new(),
        }
    }

    /// PRELOGIN without encryption (and MARS as asked); returns the answer.
    pub async fn prelogin(&mut self, mars: bool) -> PreLogin {
        let mut request = PreLogin::new();
        request.set_version(tdsguard::relay::reply::PRELOGIN_VERSION);
        request.set_encryption(Encryption::NotSupported, false);
        request.set_instance(&[0]);
        request.set_thread_id(1);
        request.set_mars(mars);
        let mut payload = BytesMut::new();
        request.encode(&mut payload).expect("encode");
        self.send_message(PacketType::PreLogin, &payload).await;
        let answer = self.read_message().await.expect("PRELOGIN answer");
        PreLogin::decode(&answer).expect("valid PRELOGIN answer")
    }

    /// LOGIN7 as user `sa`; returns the login response tokens.
    pub async fn login(&mut self, password: &str) -> Vec<Token> {
        self.send_login(password).await;
        let payload = self.read_message().await.expect("login response");
        decode_all(&payload, &mut TokenContext::default()).expect("valid login response")
    }

    pub async fn send_login(&mut self, password: &str) {
        let mut login = Login7::default();
        login.tds_version = 0x7400_0004;
        login.packet_size = 4096;
        login.client_prog_ver = 7;
        login.client_pid = 1;
        login.option_flags1 = 0xE0;
        login.option_flags2 = 0x03;
        login.hostname = "test".into();
        login.username = "sa".into();
        login.password = Zeroizing::new(password.to_owned());
        login.app_name = "relay-test".into();
        login.server_name = "127.0.0.1".into();
        login.library_name = "raw".into();
        login.database = "tdsguard".into();
        let mut payload = BytesMut::new();
        login.encode(&mut payload).expect("encode LOGIN7");
        self.send_message(PacketType::Login7, &payload).await;
    }

    /// A SQL batch with the transaction-descriptor ALL_HEADERS.
    pub async fn send_batch(&mut self, sql: &str) {
        self.send_message(PacketType::SqlBatch, &batch_payload(sql))
            .await;
    }

    pub async fn send_message(&mut self, ty: PacketType, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_message(ty, 0, payload, 4096, &mut out).expect("encode");
        self.tcp.write_all(&out).await.expect("write");
    }

    /// Bytes already framed as packets.
    pub async fn send_raw(&mut self, packets: &[u8]) {
        self.tcp.write_all(packets).await.expect("write");
    }

    pub async fn send_attention(&mut self) {
        self.send_message(PacketType::Attention, &[]).await;
    }

    /// The next packet; `None` when the proxy closed the connection.
    pub async fn read_packet(&mut self) -> Option<RawPacket> {
        let mut header = [0u8; HEADER_LEN];
        let read = tokio::time::timeout(READ_TIMEOUT, self.tcp.read_exact(&mut header))
            .await
            .expect("a packet or a close in time");
        read.ok()?;
        let parsed = PacketHeader::decode(&header).expect("valid header from the proxy");
        let mut raw = header.to_vec();
        raw.resize(usize::from(parsed.length), 0);
        self.tcp.read_exact(&mut raw[HEADER_LEN..]).await.ok()?;
        self.received.extend_from_slice(&raw);
        Some(RawPacket {
            header: parsed,
            raw,
        })
    }

    /// The payload of the next whole message; `None` on close.
    pub async fn read_message(&mut self) -> Option<Vec<u8>> {
        let mut payload = Vec::new();
        loop {
            let packet = self.read_packet().await?;
            payload.extend_from_slice(packet.payload());
            if packet.header.is_eom() {
                return Some(payload);
            }
        }
    }

    /// Whether the proxy closed the connection (no more bytes).
    pub async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(READ_TIMEOUT, self.tcp.read(&mut byte))
            .await
            .expect("a close in time");
        matches!(read, Ok(0) | Err(_))
    }
}

/// ALL_HEADERS with a zero transaction descriptor, then the UTF-16 text.
pub fn batch_payload(sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(22u32.to_le_bytes());
    out.extend(18u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    out.extend(sql.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

/// The ERROR tokens' messages in a token list.
pub fn error_messages(tokens: &[Token]) -> Vec<String> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::InfoError(e) if e.is_error => Some(e.message.to_string_lossy()),
            _ => None,
        })
        .collect()
}

/// Whether a message payload ends with DONE carrying the ATTN bit.
pub fn ends_with_attention_ack(payload: &[u8]) -> bool {
    let Some(done) = payload.len().checked_sub(13).map(|at| &payload[at..]) else {
        return false;
    };
    done[0] == 0xFD && u16::from_le_bytes([done[1], done[2]]) & 0x20 != 0
}
