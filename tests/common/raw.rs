//! A minimal TDS client built from the codec, for protocol-level tests:
//! PRELOGIN without encryption, LOGIN7, SQL batches, attention, raw bytes.

use std::time::Duration;

use bytes::BytesMut;
use tdsguard::tds::all_headers::{AllHeaders, Header};
use tdsguard::tds::login7::{self, Login7};
use tdsguard::tds::packet::{self, Assembled, Message, MessageAssembler, PacketReader, PacketType};
use tdsguard::tds::prelogin::{Encryption, PreLogin, Version};
use tdsguard::tds::rpc::{RpcCall, RpcRequest};
use tdsguard::tds::sql_batch::SqlBatch;
use tdsguard::tds::token::{decode_all, TdsVersion, Token, TokenContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sandbox::{TestSandbox, PASSWORD};

/// How long a test waits for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RawClient {
    pub tcp: TcpStream,
    packets: PacketReader,
    assembler: MessageAssembler,
    pub ctx: TokenContext,
}

impl RawClient {
    pub async fn connect(sandbox: &TestSandbox) -> RawClient {
        let tcp = TcpStream::connect(sandbox.addr()).await.expect("connects");
        RawClient {
            tcp,
            packets: PacketReader::new(),
            assembler: MessageAssembler::default(),
            ctx: TokenContext {
                tds_version: TdsVersion::V7_4,
                ..TokenContext::default()
            },
        }
    }

    /// PRELOGIN asking for no encryption; returns the server's answer.
    pub async fn prelogin(&mut self, encryption: Encryption) -> PreLogin {
        let mut pre = PreLogin::new();
        pre.set_version(Version {
            major: 1,
            minor: 0,
            build: 0,
            sub_build: 0,
        });
        pre.set_encryption(encryption, false);
        pre.set_instance(&[0]);
        pre.set_thread_id(1);
        pre.set_mars(false);
        let mut payload = BytesMut::new();
        pre.encode(&mut payload).expect("encodes");
        self.send(PacketType::PreLogin, 0, &payload).await;
        let reply = self.message().await.expect("prelogin answered");
        PreLogin::decode(&reply.payload).expect("prelogin decodes")
    }

    /// LOGIN7 (TDS 7.4) for `sa` with `password`; returns the login
    /// response tokens.
    pub async fn login(&mut self, password: &str) -> Vec<Token> {
        self.login_at(login7::version::TDS74, password).await
    }

    /// LOGIN7 at `tds_version` (see `login7::version`).
    pub async fn login_at(&mut self, tds_version: u32, password: &str) -> Vec<Token> {
        // Until LOGINACK the client reads tokens in the version it asked for.
        self.ctx.tds_version = TdsVersion(tds_version);
        let mut login = Login7::default();
        login.tds_version = tds_version;
        login.packet_size = 4096;
        login.hostname = "test".into();
        login.username = "sa".into();
        *login.password = password.to_owned();
        login.app_name = "raw".into();
        login.library_name = "raw".into();
        login.database = "tdsguard".into();
        let mut payload = BytesMut::new();
        login.encode(&mut payload).expect("encodes");
        self.send(PacketType::Login7, 0, &payload).await;
        self.tokens().await.expect("login answered")
    }

    pub async fn logged_in(sandbox: &TestSandbox) -> RawClient {
        let mut client = RawClient::connect(sandbox).await;
        client.prelogin(Encryption::NotSupported).await;
        let tokens = client.login(PASSWORD).await;
        assert!(
            tokens.iter().any(|t| t.name() == "LOGINACK"),
            "login succeeds"
        );
        client
    }

    /// Sends a SQL batch with ALL_HEADERS (TDS 7.2+).
    pub async fn batch(&mut self, sql: &str, reset_flags: u8) {
        let batch = SqlBatch {
            all_headers: Some(AllHeaders {
                headers: vec![Header::TransactionDescriptor {
                    descriptor: 0,
                    outstanding_requests: 1,
                }],
            }),
            text: sql.to_owned(),
        };
        let mut payload = BytesMut::new();
        batch.encode(&mut payload).expect("encodes");
        self.send(PacketType::SqlBatch, reset_flags, &payload).await;
    }

    /// Runs a batch and returns its response tokens.
    pub async fn query(&mut self, sql: &str) -> Vec<Token> {
        self.batch(sql, 0).await;
        self.tokens().await.expect("batch answered")
    }

    /// Sends one RPC call with ALL_HEADERS and returns the response tokens.
    pub async fn rpc(&mut self, call: RpcCall) -> Vec<Token> {
        let request = RpcRequest {
            all_headers: Some(AllHeaders {
                headers: vec![Header::TransactionDescriptor {
                    descriptor: 0,
                    outstanding_requests: 1,
                }],
            }),
            calls: vec![call],
        };
        let payload = request.to_bytes().expect("encodes");
        self.send(PacketType::Rpc, 0, &payload).await;
        self.tokens().await.expect("rpc answered")
    }

    pub async fn attention(&mut self) {
        self.send(PacketType::Attention, 0, &[]).await;
    }

    pub async fn send(&mut self, ty: PacketType, reset_flags: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        packet::encode_message(ty, reset_flags, payload, 4096, &mut out).expect("packetises");
        self.tcp.write_all(&out).await.expect("writes");
    }

    /// The next whole message, `None` when the server closed.
    pub async fn message(&mut self) -> Option<Message> {
        tokio::time::timeout(REPLY_TIMEOUT, self.read_message())
            .await
            .expect("the server answers in time")
    }

    async fn read_message(&mut self) -> Option<Message> {
        let mut buf = vec![0u8; 65536];
        loop {
            while let Some(p) = self.packets.next_packet().expect("valid packets") {
                if let Some(Assembled::Message(m)) = self.assembler.push(&p).expect("valid message")
                {
                    return Some(m);
                }
            }
            let n = self.tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.packets.feed(&buf[..n]);
        }
    }

    /// The next message decoded as tokens.
    pub async fn tokens(&mut self) -> Option<Vec<Token>> {
        let message = self.message().await?;
        Some(decode_all(&message.payload, &mut self.ctx).expect("tokens decode"))
    }

    /// Whether the server closed the connection (reads end).
    pub async fn is_closed(&mut self) -> bool {
        self.message().await.is_none()
    }
}
