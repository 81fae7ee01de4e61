//! A scripted upstream for relay tests: it negotiates TLS inside PRELOGIN as
//! SQL Server does, answers LOGIN7 with a fixed login response, then answers
//! each request as its script says and records every byte it sends after
//! login and the type of every packet it receives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use tdsguard::relay::io::PacketRead;
use tdsguard::relay::reply::prelogin_response;
use tdsguard::relay::Leg;
use tdsguard::tds::packet::{encode_message_with_spid, PacketType};
use tdsguard::tds::prelogin::{Encryption, PreLogin};
use tdsguard::tds::token::env_change::ENV_PACKETSIZE;
use tdsguard::tds::token::{
    encode_all, Done, DoneKind, DoneStatus, EnvChange, LoginAck, TdsVersion, Token, TokenContext,
};
use tdsguard::tls::{Encryption as TlsMode, TlsAcceptors, Transport};

/// SPID the fake server puts in its packets.
pub const SPID: u16 = 57;
/// Packet size of the fake server's session.
pub const PACKET_SIZE: usize = 4096;

/// How the fake server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A result of this many rows, then DONE.
    Rows(usize),
    /// Rows until an attention arrives, then DONE(ATTN).
    RowsUntilAttention,
    /// A few packets of rows, then silence: the attention is never
    /// acknowledged.
    IgnoreAttention,
    /// Half a row, then the connection closes.
    CloseMidRow,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A running fake server.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub cert_pem: PathBuf,
    /// Bytes sent after the login response, all connections together.
    pub sent: Arc<Mutex<Vec<u8>>>,
    /// Packet types received after login, in order.
    pub received: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    /// Starts a server answering request `n` (from 0, counted over all
    /// connections) with `script(n)`.
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let tls = TlsAcceptors::self_signed(&names, Some(dir.path())).expect("certificate");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = FakeServer {
            addr: listener.local_addr().expect("address"),
            cert_pem: dir.path().join("tls-cert.pem"),
            sent: Arc::default(),
            received: Arc::default(),
            _dir: dir,
        };
        let shared = Shared {
            tls: Arc::new(tls),
            script: Arc::new(script),
            requests: Arc::default(),
            sent: Arc::clone(&server.sent),
            received: Arc::clone(&server.received),
        };
        tokio::spawn(accept_loop(listener, shared));
        server
    }
}

#[derive(Clone)]
struct Shared {
    tls: Arc<TlsAcceptors>,
    script: Script,
    /// Requests answered so far, all connections together.
    requests: Arc<std::sync::atomic::AtomicUsize>,
    sent: Arc<Mutex<Vec<u8>>>,
    received: Arc<Mutex<Vec<u8>>>,
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(serve(tcp, shared.clone()));
    }
}

async fn serve(mut tcp: TcpStream, shared: Shared) -> Option<()> {
    let mut reader = PacketRead::new(&mut tcp, Leg::Client);
    let prelogin = reader.next().await.ok()??;
    let request = PreLogin::decode(&prelogin.payload()).ok()?;
    let answer = prelogin_response(&request, Encryption::On).ok()?;
    tcp.write_all(&answer).await.ok()?;

    let stream = Transport::accept_prelogin(tcp, &shared.tls, PACKET_SIZE, TlsMode::Full)
        .await
        .ok()?;
    let mut reader = PacketRead::new(stream, Leg::Client);
    loop {
        let packet = reader.next().await.ok()??;
        if packet.header.is_eom() {
            break;
        }
    }
    let (stream, _) = reader.into_parts();
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(&login_response()).await.ok()?;
    write.flush().await.ok()?;

    let (events, mut incoming) = mpsc::unbounded_channel();
    tokio::spawn(read_requests(read, events, Arc::clone(&shared.received)));
    answer_requests(&mut write, &mut incoming, &shared).await;
    let _ = write.shutdown().await;
    Some(())
}

/// What the reading half saw.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Request,
    Attention,
}

async fn read_requests<R: AsyncRead + Unpin>(
    read: ReadHalf<R>,
    events: mpsc::UnboundedSender<Event>,
    received: Arc<Mutex<Vec<u8>>>,
) {
    let mut reader = PacketRead::new(read, Leg::Client);
    while let Ok(Some(packet)) = reader.next().await {
        let ty = packet.header.packet_type;
        received.lock().unwrap().push(ty.to_u8());
        let event = match ty {
            PacketType::Attention => Event::Attention,
            _ if packet.header.is_eom() => Event::Request,
            _ => continue,
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

async fn answer_requests<W: AsyncWrite + Unpin>(
    write: &mut WriteHalf<W>,
    incoming: &mut mpsc::UnboundedReceiver<Event>,
    shared: &Shared,
) {
    use std::sync::atomic::Ordering;
    while let Some(event) = incoming.recv().await {
        let reply = match event {
            Event::Request => (shared.script)(shared.requests.fetch_add(1, Ordering::SeqCst)),
            // An attention after the response ended: acknowledge it alone.
            Event::Attention => {
                let mut out = Vec::new();
                out.extend(done(DoneStatus::ATTN, 0));
                let _ = send_message(write, &out, shared, true).await;
                continue;
            }
        };
        if respond(write, incoming, reply, shared).await.is_err() {
            return;
        }
    }
}

async fn respond<W: AsyncWrite + Unpin>(
    write: &mut WriteHalf<W>,
    incoming: &mut mpsc::UnboundedReceiver<Event>,
    reply: Reply,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut payload = col_metadata();
    let limit = match reply {
        Reply::Rows(n) => n,
        Reply::RowsUntilAttention => 10_000_000,
        Reply::IgnoreAttention => 200,
        Reply::CloseMidRow => {
            payload.extend(row(1));
            let half = row(2);
            payload.extend(&half[..half.len() / 2]);
            send_message(write, &payload, shared, false).await?;
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
    };
    for i in 0..limit {
        payload.extend(row(i as i32));
        if payload.len() < PACKET_SIZE * 4 {
            continue;
        }
        let chunk = payload.len() / (PACKET_SIZE - 8) * (PACKET_SIZE - 8);
        let rest = payload.split_off(chunk);
        send_message(write, &payload, shared, false).await?;
        payload = rest;
        if reply != Reply::Rows(limit) && incoming.try_recv() == Ok(Event::Attention) {
            payload.extend(done(DoneStatus::ATTN, 0));
            return send_message(write, &payload, shared, true).await;
        }
    }
    if reply == Reply::IgnoreAttention {
        std::future::pending::<()>().await;
    }
    payload.extend(done(DoneStatus::COUNT, limit as u64));
    send_message(write, &payload, shared, true).await
}

/// Sends `payload` in packets of [`PACKET_SIZE`]; EOM on the last only
/// when `eom`.
async fn send_message<W: AsyncWrite + Unpin>(
    write: &mut WriteHalf<W>,
    payload: &[u8],
    shared: &Shared,
    eom: bool,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let ty = PacketType::TabularResult;
    encode_message_with_spid(ty, 0, SPID, payload, PACKET_SIZE, &mut out).expect("encode");
    if !eom {
        clear_last_eom(&mut out);
    }
    shared.sent.lock().unwrap().extend_from_slice(&out);
    for packet in out.chunks(PACKET_SIZE) {
        write.write_all(packet).await?;
        write.flush().await?;
    }
    Ok(())
}

fn clear_last_eom(out: &mut BytesMut) {
    let mut at = 0;
    let mut last = 0;
    while at + 4 <= out.len() {
        last = at;
        at += usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
    }
    out[last + 1] &= !0x01;
}

fn login_response() -> BytesMut {
    let tokens = [
        Token::LoginAck(LoginAck {
            interface: 1,
            tds_version: TdsVersion::V7_4,
            prog_name: "fake".into(),
            prog_version: [16, 0, 0, 1],
        }),
        Token::EnvChange(EnvChange::Text {
            env_type: ENV_PACKETSIZE,
            new: PACKET_SIZE.to_string().as_str().into(),
            old: "4096".into(),
        }),
        Token::Done(Done {
            kind: DoneKind::Done,
            status: DoneStatus(0),
            cur_cmd: 0,
            row_count: 0,
        }),
    ];
    let payload = encode_all(&tokens, &mut TokenContext::default()).expect("encode");
    let mut out = BytesMut::new();
    let ty = PacketType::TabularResult;
    encode_message_with_spid(ty, 0, SPID, &payload, PACKET_SIZE, &mut out).expect("encode");
    out
}

/// COLMETADATA: `id int NULL`, `name nvarchar(100) NULL`.
pub fn col_metadata() -> Vec<u8> {
    let mut out = vec![0x81, 0x02, 0x00];
    out.extend([0, 0, 0, 0, 0x01, 0x00, 0x26, 0x04]);
    out.extend(b_varchar("id"));
    out.extend([
        0, 0, 0, 0, 0x01, 0x00, 0xE7, 0xC8, 0x00, 0x09, 0x04, 0xD0, 0x00, 0x34,
    ]);
    out.extend(b_varchar("name"));
    out
}

/// One ROW for [`col_metadata`].
pub fn row(id: i32) -> Vec<u8> {
    let name: Vec<u8> = format!("row number {id:>10} of the fake result")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut out = vec![0xD1, 0x04];
    out.extend(id.to_le_bytes());
    out.extend((name.len() as u16).to_le_bytes());
    out.extend(name);
    out
}

/// A DONE token (TDS 7.2+ layout).
pub fn done(status: u16, rows: u64) -> Vec<u8> {
    let mut out = vec![0xFD];
    out.extend(status.to_le_bytes());
    out.extend(0xC1u16.to_le_bytes());
    out.extend(rows.to_le_bytes());
    out
}

fn b_varchar(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().collect();
    let mut out = vec![units.len() as u8];
    out.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    out
}
