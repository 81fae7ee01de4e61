//! The sandbox's TDS listener: accepts connections, negotiates encryption as
//! Azure SQL does ([MS-TDS] 2.2.6.5 PRELOGIN, 3.3.5 server state machine,
//! TDS 8.0 strict), authenticates SQL logins (2.2.6.4) and runs requests
//! (SQL batch 2.2.6.7, RPC 2.2.6.6, attention 2.2.1.7) until the client
//! leaves.
//!
//! The sandbox is a stand-in for tests and the quick start, not a database
//! product: one SQLite file behind TDS, no MARS, SQL logins only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rusqlite::InterruptHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::config::{Config, SandboxConfig, SandboxUser};
use crate::sandbox::engine::{Engine, EngineConfig, EngineError};
use crate::sandbox::login::{self, EncryptionChoice, SessionStart};
use crate::sandbox::results::{Outgoing, TokenWriter, OUTGOING_QUEUE};
use crate::sandbox::rpc::SessionState;
use crate::tds::login7::Login7;
use crate::tds::packet::{
    status, Assembled, Message, MessageAssembler, PacketHeader, PacketReader, PacketType,
    DEFAULT_PACKET_SIZE, HEADER_LEN,
};
use crate::tds::prelogin::PreLogin;
use crate::tds::token::{self, Done, DoneKind, DoneStatus, Token, TokenContext};
use crate::tds::{DecodeError, EncodeError};
use crate::tls::certs::{self, ServerIdentity, GENERATED_CERT_FILE};
use crate::tls::{
    self, FirstPacket, Peer, PreloginWrapper, Replay, TlsAcceptors, TlsError, Transport,
};

/// Largest request message the sandbox assembles: LOB parameters of a few
/// MiB are normal in tests; the cap keeps a hostile client from making the
/// sandbox buffer without bound (policy, as `DEFAULT_MAX_MESSAGE_LEN`).
const MAX_REQUEST_LEN: usize = 64 * 1024 * 1024;

/// Largest PRELOGIN or LOGIN7 message: LOGIN7 is at most 128 KiB - 1
/// (2.2.6.4); PRELOGIN is far smaller.
const MAX_LOGIN_MESSAGE_LEN: usize = 128 * 1024;

/// First session id handed out; SQL Server numbers user sessions above 50.
const FIRST_SPID: u16 = 51;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Everything that can end a sandbox connection or keep the server from
/// starting. Peer faults are logged at debug and end only their connection.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    #[error("tls")]
    Tls(#[from] TlsError),
    #[error("client sent a malformed message")]
    Decode(#[from] DecodeError),
    #[error("could not encode a response")]
    Encode(#[from] EncodeError),
    /// The client broke the protocol's order of messages.
    #[error("client protocol violation: {0}")]
    Protocol(&'static str),
    /// A message type the sandbox does not serve after login.
    #[error("client sent an unsupported {0} message")]
    UnexpectedMessage(&'static str),
    #[error("the engine thread failed")]
    EngineThread(#[from] tokio::task::JoinError),
    #[error("the engine could not open its data file")]
    Engine(#[from] EngineError),
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// A self-signed certificate for localhost, kept in this directory
    /// (`tls-cert.pem` / `tls-key.pem`), generated on first use.
    SelfSigned { dir: PathBuf },
    /// A PEM certificate chain and private key.
    PemFiles { cert: PathBuf, key: PathBuf },
}

/// Answer every successful login with a routing ENVCHANGE (Azure SQL
/// "Redirect" policy) pointing here, then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTarget {
    pub host: String,
    pub port: u16,
}

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The SQLite file of the default database.
    pub data_file: PathBuf,
    /// SQL logins.
    pub users: Vec<SandboxUser>,
    /// Database a login lands in when it names none.
    pub database: String,
    /// Serve clients that refuse encryption (PRELOGIN NOT_SUP, or LOGIN7
    /// without PRELOGIN). Azure SQL does not.
    pub allow_plaintext: bool,
    pub routing: Option<RoutingTarget>,
    pub tls: TlsSource,
}

impl SandboxOptions {
    /// Defaults for a data file: 127.0.0.1 on a free port, user `sa` with
    /// `password`, database `tdsguard`, plaintext allowed, a self-signed
    /// certificate beside the data file.
    pub fn new(data_file: impl Into<PathBuf>, password: &str) -> Self {
        let data_file = data_file.into();
        let dir = beside(&data_file);
        SandboxOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_file,
            users: vec![SandboxUser {
                name: "sa".to_owned(),
                password: password.to_owned(),
            }],
            database: "tdsguard".to_owned(),
            allow_plaintext: true,
            routing: None,
            tls: TlsSource::SelfSigned { dir },
        }
    }
}

impl SandboxOptions {
    /// Options from the `[sandbox]` section of the configuration, listening
    /// on `listen`, with the certificate kept beside the data file.
    pub fn from_config(config: &SandboxConfig, listen: SocketAddr) -> Self {
        let dir = beside(&config.data_file);
        SandboxOptions {
            listen,
            data_file: config.data_file.clone(),
            users: config.users.clone(),
            database: config.database.clone(),
            allow_plaintext: config.allow_plaintext,
            routing: None,
            tls: TlsSource::SelfSigned { dir },
        }
    }
}

impl SandboxOptions {
    /// The sandbox `serve` and the key commands start as their embedded
    /// upstream: a free loopback port, the data file inside
    /// `listen.data_dir` (unless absolute or already under it) and the
    /// generated certificate in `data_dir/sandbox`. Both use this so they
    /// open the same file.
    pub fn embedded(config: &Config) -> Self {
        let data_dir = &config.listen.data_dir;
        let mut options =
            SandboxOptions::from_config(&config.sandbox, SocketAddr::from(([127, 0, 0, 1], 0)));
        options.data_file = under(data_dir, &config.sandbox.data_file);
        options.tls = TlsSource::SelfSigned {
            dir: data_dir.join("sandbox"),
        };
        options
    }
}

/// `file` inside `dir`, unless it is absolute or already names `dir`.
fn under(dir: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() || file.starts_with(dir) {
        return file.to_path_buf();
    }
    dir.join(file)
}

/// The directory of a file (`.` for a bare file name).
fn beside(file: &Path) -> PathBuf {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A running sandbox.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    cert_pem: Option<PathBuf>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SandboxHandle {
    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM file of the certificate the sandbox presents, when it is a
    /// generated one (clients that verify certificates use it as CA file).
    pub fn cert_pem_path(&self) -> Option<&Path> {
        self.cert_pem.as_deref()
    }

    /// Stops accepting, ends every connection and waits until all are gone.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            warn!(error = %err, "sandbox listener task failed");
        }
    }
}

/// Entry point: `Sandbox::start(options)`.
pub struct Sandbox;

impl Sandbox {
    /// Binds the listener, loads or creates the certificate and serves
    /// connections in the background.
    pub async fn start(options: SandboxOptions) -> Result<SandboxHandle, SandboxError> {
        let (tls, cert_pem) = server_tls(&options.tls)?;
        let engine = open_engine(&options).await?;
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            tls,
            engine,
            next_spid: AtomicU16::new(FIRST_SPID),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared, stop.clone()));
        Ok(SandboxHandle {
            addr,
            cert_pem,
            stop,
            task,
        })
    }
}

/// The acceptors of a sandbox: TDS 8.0 strict from the TLS layer, and a TLS
/// 1.2-only acceptor for handshakes inside PRELOGIN packets. SQL Server
/// negotiates TLS 1.2 there even when the client offers 1.3 (captures of
/// SQL Server 2019 and 2022); ODBC Driver 18 relies on it: under TLS 1.3 it
/// sends its last handshake flight as bare records, which the PRELOGIN
/// framing refuses.
struct Acceptors {
    strict: TlsAcceptors,
    prelogin: TlsAcceptor,
}

fn server_tls(source: &TlsSource) -> Result<(Acceptors, Option<PathBuf>), SandboxError> {
    let (identity, pem) = match source {
        TlsSource::SelfSigned { dir } => {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let identity = certs::load_or_generate(dir, &names)?;
            (identity, Some(dir.join(GENERATED_CERT_FILE)))
        }
        TlsSource::PemFiles { cert, key } => (certs::load_pem_files(cert, key)?, None),
    };
    let prelogin = TlsAcceptor::from(Arc::new(tls12_config(identity.clone())?));
    let strict = TlsAcceptors::new(identity)?;
    Ok((Acceptors { strict, prelogin }, pem))
}

fn tls12_config(identity: ServerIdentity) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(TlsError::Config)
}

/// The TLS handshake inside PRELOGIN packets (TDS-NOTES §3.1); for
/// login-only encryption the wrapper is told so, for the later downgrade.
async fn accept_prelogin_tls(
    stream: Replay<TcpStream>,
    acceptor: &TlsAcceptor,
    mode: tls::Encryption,
) -> Result<SessionStream, SandboxError> {
    let wrapper = PreloginWrapper::new(stream, DEFAULT_PACKET_SIZE);
    let accepted = acceptor.accept(wrapper).await;
    let server_stream = accepted.map_err(|e| TlsError::from_handshake(e, Peer::Client))?;
    let mut tls_stream = TlsStream::from(server_stream);
    tls_stream
        .get_mut()
        .0
        .handshake_done(mode == tls::Encryption::LoginOnly);
    Ok(Transport::Prelogin(Box::new(tls_stream)))
}

/// Opens (or creates) the SQLite files on a blocking thread.
async fn open_engine(options: &SandboxOptions) -> Result<Engine, SandboxError> {
    let path = options.data_file.clone();
    let config = EngineConfig {
        default_database: options.database.clone(),
    };
    let opened = tokio::task::spawn_blocking(move || Engine::open_with(path, config)).await?;
    Ok(opened?)
}

/// State shared by all connections of one sandbox.
struct Shared {
    options: SandboxOptions,
    tls: Acceptors,
    engine: Engine,
    next_spid: AtomicU16,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 1;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                warn!(error = %err, "sandbox accept failed");
                continue;
            }
        };
        let span = tracing::debug_span!("sandbox.conn", conn.id = next_id, client.addr = %peer);
        next_id += 1;
        connections.spawn(serve(tcp, Arc::clone(&shared)).instrument(span));
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    debug!("connection opened");
    let _ = tcp.set_nodelay(true);
    match Connection::new(shared).run(tcp).await {
        Ok(()) => debug!("connection closed"),
        Err(err) => {
            debug!(error = %err, source = ?std::error::Error::source(&err), "connection ended")
        }
    }
}

/// The stream a session runs on after encryption was settled.
type SessionStream = Transport<Replay<TcpStream>>;

/// One client connection.
///
/// ```text
///            first bytes
///   ┌───────────┼──────────────────────────┬──────────────────────┐
///   │ 0x12      │ 0x16 (ALPN tds/8.0)      │ 0x10 (no PRELOGIN)   │ other
///   v           v                          v                      v
/// PRELOGIN   TLS handshake (strict)     LOGIN7, plaintext       close
///   │           │ then PRELOGIN inside     (allow_plaintext only)
///   │           │ TLS, answered
///   ├─ client OFF ───> TLS in 0x12 packets ─> LOGIN7 over TLS ─> drop TLS
///   ├─ client ON/REQ ─> TLS in 0x12 packets ─> LOGIN7 over TLS ─> keep TLS
///   ├─ client NOT_SUP, plaintext allowed ────> LOGIN7 in clear
///   └─ client NOT_SUP, refused ──────────────> answer REQ, close
///                            │
///                         LOGIN7 ── bad credentials ──> ERROR 18456, DONE, close
///                            │ ok (routing set: ENVCHANGE 20, close)
///                            v
///                       LOGGED IN <───────────────────────────────┐
///                            │ SQLBatch / RPC / TM request         │
///                            v                                     │
///                        REQUEST ── engine streams tokens ─────────┤
///                            │ Attention                           │
///                            v                                     │
///                       CANCELLING ── DONE(ATTN) ──────────────────┘
/// ```
struct Connection {
    shared: Arc<Shared>,
    spid: u16,
}

/// A logged-in session: its packet size and version, and the engine state.
struct Session {
    start: SessionStart,
    encrypted: bool,
    state: SessionState,
}

impl Connection {
    fn new(shared: Arc<Shared>) -> Self {
        let spid = shared.next_spid.fetch_add(1, Ordering::Relaxed);
        Connection { shared, spid }
    }

    async fn run(self, tcp: TcpStream) -> Result<(), SandboxError> {
        let (first, replay) = tls::detect(tcp).await?;
        debug!(first = ?first, "first bytes");
        let stream = match first {
            FirstPacket::Prelogin => self.prelogin(replay).await?,
            // TLS first is TDS 8.0 strict; clients offer ALPN tds/8.0, and a
            // ClientHello without it is served the same way.
            FirstPacket::TlsClientHello { .. } => self.strict(replay).await?,
            FirstPacket::Login7 if self.shared.options.allow_plaintext => {
                Some((Transport::plain(replay), false))
            }
            FirstPacket::Login7 => return Err(SandboxError::Protocol("LOGIN7 without PRELOGIN")),
            _ => return Err(SandboxError::Protocol("first bytes are not TDS")),
        };
        let Some((stream, encrypted)) = stream else {
            return Ok(());
        };
        self.login_and_serve(stream, encrypted).await
    }

    /// TDS 7.x: PRELOGIN in clear, then TLS inside PRELOGIN packets.
    async fn prelogin(
        &self,
        replay: Replay<TcpStream>,
    ) -> Result<Option<(SessionStream, bool)>, SandboxError> {
        let mut io = MessageIo::new(replay, MAX_LOGIN_MESSAGE_LEN);
        let request = io.expect_message(PacketType::PreLogin).await?;
        let client = PreLogin::decode(&request.payload)?;
        let (client_mode, _) = client
            .encryption()
            .ok_or(SandboxError::Protocol("PRELOGIN without ENCRYPTION"))?;
        let choice = login::choose_encryption(client_mode, self.shared.options.allow_plaintext);
        debug!(client = ?client_mode, answer = ?choice, "prelogin");

        let mut response = BytesMut::new();
        login::prelogin_response(&client, choice).encode(&mut response)?;
        io.write_message(0, &response, DEFAULT_PACKET_SIZE).await?;
        let replay = io.into_replay()?;

        let acceptor = &self.shared.tls.prelogin;
        let stream = match choice {
            EncryptionChoice::Refused => return Ok(None),
            EncryptionChoice::Plaintext => (Transport::plain(replay), false),
            EncryptionChoice::LoginOnly => {
                let mode = tls::Encryption::LoginOnly;
                (accept_prelogin_tls(replay, acceptor, mode).await?, false)
            }
            EncryptionChoice::Full => {
                let mode = tls::Encryption::Full;
                (accept_prelogin_tls(replay, acceptor, mode).await?, true)
            }
        };
        Ok(Some(stream))
    }

    /// TDS 8.0 strict: TLS first, then PRELOGIN inside TLS.
    async fn strict(
        &self,
        replay: Replay<TcpStream>,
    ) -> Result<Option<(SessionStream, bool)>, SandboxError> {
        let transport = Transport::accept_strict(replay, &self.shared.tls.strict).await?;
        let mut io = MessageIo::new(transport, MAX_LOGIN_MESSAGE_LEN);
        let request = io.expect_message(PacketType::PreLogin).await?;
        let client = PreLogin::decode(&request.payload)?;
        let mut response = BytesMut::new();
        login::prelogin_response(&client, EncryptionChoice::Full).encode(&mut response)?;
        io.write_message(0, &response, DEFAULT_PACKET_SIZE).await?;
        let transport = io.into_stream_checked()?;
        Ok(Some((transport, true)))
    }

    async fn login_and_serve(
        mut self,
        stream: SessionStream,
        encrypted: bool,
    ) -> Result<(), SandboxError> {
        let mut io = MessageIo::new(stream, MAX_LOGIN_MESSAGE_LEN);
        let message = io.expect_message(PacketType::Login7).await?;
        let login7 = Login7::decode(&message.payload)?;
        let mut stream = io.into_stream_checked()?;
        if stream.kind() == tls::TransportKind::Prelogin && !encrypted {
            stream = stream.end_login_encryption().await?;
        }

        let mut io = MessageIo::new(stream, MAX_REQUEST_LEN);
        let Some(session) = self.login(&login7, &mut io, encrypted).await? else {
            return Ok(());
        };
        drop(login7);
        let stream = io.into_stream_checked()?;
        self.spid = session.state.spid();
        self.serve_requests(stream, session).await
    }

    /// Answers LOGIN7; `None` when the connection is to close afterwards.
    async fn login(
        &self,
        login7: &Login7,
        io: &mut MessageIo<SessionStream>,
        encrypted: bool,
    ) -> Result<Option<Session>, SandboxError> {
        let start = self.session_start(login7, encrypted);
        let mut ctx = TokenContext {
            tds_version: start.tds_version,
            ..TokenContext::default()
        };
        let (tokens, session) = self.answer_login(login7, start, encrypted).await?;
        self.write_tokens(io, &tokens, &mut ctx, DEFAULT_PACKET_SIZE)
            .await?;
        Ok(session)
    }

    /// Database, version and packet size of a new session.
    fn session_start(&self, login7: &Login7, encrypted: bool) -> SessionStart {
        let mut start = SessionStart::from_login(login7, &self.shared.options.database);
        // "The maximum network packet size for encrypted connections is
        // 16,383 bytes" (SQL Server, "network packet size" option).
        if encrypted {
            start.packet_size = start.packet_size.min(tls::MAX_ENCRYPTED_PACKET_SIZE);
        }
        start
    }

    /// The login response, and the session when the client may stay.
    async fn answer_login(
        &self,
        login7: &Login7,
        mut start: SessionStart,
        encrypted: bool,
    ) -> Result<(Vec<Token>, Option<Session>), SandboxError> {
        let options = &self.shared.options;
        if let Err(refusal) = login::authenticate(login7, &options.users) {
            debug!(reason = %refusal, tds.version = login7.version_name(), "login refused");
            return Ok((login::failure_tokens(&login7.username), None));
        }
        let ctx = TokenContext {
            tds_version: start.tds_version,
            ..TokenContext::default()
        };
        let state = match self.open_session(&start, ctx).await? {
            Ok(state) => state,
            Err(tokens) => return Ok((tokens, None)),
        };
        start.database = state.database();
        if let Some(route) = &options.routing {
            return Ok((login::routing_tokens(&start, &route.host, route.port), None));
        }
        debug!(
            tds.version = login7.version_name(),
            packet_size = start.packet_size,
            "logged in"
        );
        let tokens = login::success_tokens(&start);
        let session = Session {
            start,
            encrypted,
            state,
        };
        Ok((tokens, Some(session)))
    }

    /// The engine session of a login, or the tokens refusing the login.
    async fn open_session(
        &self,
        start: &SessionStart,
        ctx: TokenContext,
    ) -> Result<Result<SessionState, Vec<Token>>, SandboxError> {
        let engine = self.shared.engine.clone();
        let database = start.database.clone();
        let opened =
            tokio::task::spawn_blocking(move || SessionState::open(&engine, &database, ctx))
                .await?;
        Ok(opened.map_err(|err| {
            let number = u32::try_from(err.number).unwrap_or(0);
            // SQL Server: the reason (4060, class 11), then 18456.
            let mut tokens = vec![login::error_token(number, 1, 11, &err.message)];
            tokens.extend(login::failure_tokens(&start.username));
            tokens
        }))
    }

    async fn write_tokens<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut MessageIo<S>,
        tokens: &[Token],
        ctx: &mut TokenContext,
        packet_size: usize,
    ) -> Result<(), SandboxError> {
        let payload = token::encode_all(tokens, ctx)?;
        io.write_message(self.spid, &payload, packet_size).await
    }

    /// The logged-in state: one request at a time until the client leaves.
    async fn serve_requests(
        &self,
        stream: SessionStream,
        session: Session,
    ) -> Result<(), SandboxError> {
        let (read, write) = tokio::io::split(stream);
        let mut input = MessageIo::new(read, MAX_REQUEST_LEN);
        let mut output = PacketOut::new(write, session.start.packet_size, self.spid);
        output.coalesce = !session.encrypted;
        let mut state = session.state;
        debug!(encrypted = session.encrypted, "serving requests");

        while let Some(message) = input.next_message().await? {
            match message.packet_type {
                PacketType::SqlBatch
                | PacketType::Rpc
                | PacketType::TransactionManager
                | PacketType::BulkLoad => {
                    self.run_request(message, &mut state, &mut input, &mut output)
                        .await?;
                }
                PacketType::Attention => output.attention_ack(&state.token_context()).await?,
                other => return Err(SandboxError::UnexpectedMessage(other.name())),
            }
        }
        Ok(())
    }

    /// Runs one request on a blocking thread and streams its response,
    /// watching the client for an attention meanwhile.
    async fn run_request(
        &self,
        message: Message,
        state: &mut SessionState,
        input: &mut MessageIo<ReadHalf<SessionStream>>,
        output: &mut PacketOut<WriteHalf<SessionStream>>,
    ) -> Result<(), SandboxError> {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let cancel = Cancel {
            flag: Arc::new(AtomicBool::new(false)),
            interrupt: state.interrupt_handle(),
        };
        let ctx = state.token_context();
        let writer = TokenWriter::new(ctx.clone(), output.packet_size, tx, cancel.flag());
        let job = state
            .start_request(message, writer)
            .ok_or(SandboxError::Protocol("request while the session is busy"))?;
        let engine = tokio::task::spawn_blocking(job);

        let streamed = self.stream_response(rx, input, output, &cancel, &ctx).await;
        let finished = engine.await?;
        state.request_done(finished);
        streamed
    }

    /// Writes the response as the engine produces it; an attention from the
    /// client cancels the request and ends the response with DONE(ATTN).
    async fn stream_response(
        &self,
        mut rx: mpsc::Receiver<Outgoing>,
        input: &mut MessageIo<ReadHalf<SessionStream>>,
        output: &mut PacketOut<WriteHalf<SessionStream>>,
        cancel: &Cancel,
        ctx: &TokenContext,
    ) -> Result<(), SandboxError> {
        let mut attention = false;
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Payload(p)) => output.packets(&p).await?,
                    Some(Outgoing::Last(p)) => return output.finish(p, attention, ctx).await,
                    None => return Ok(()),
                },
                incoming = input.next_message(), if !attention => {
                    expect_attention(incoming?)?;
                    attention = true;
                    cancel.fire();
                }
            }
        }
    }
}

/// A message that arrived while a request ran: only an attention is legal
/// without MARS.
fn expect_attention(incoming: Option<Message>) -> Result<(), SandboxError> {
    match incoming {
        Some(m) if m.packet_type == PacketType::Attention => {
            debug!("attention");
            Ok(())
        }
        Some(_) => Err(SandboxError::Protocol(
            "request while another runs (no MARS)",
        )),
        None => Err(SandboxError::Protocol("client left during a request")),
    }
}

/// How an attention stops a running request: the flag the token writer
/// checks, and an interrupt of the running SQLite statement.
struct Cancel {
    flag: Arc<AtomicBool>,
    interrupt: Option<InterruptHandle>,
}

impl Cancel {
    fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    fn fire(&self) {
        self.flag.store(true, Ordering::Relaxed);
        if let Some(handle) = &self.interrupt {
            handle.interrupt();
        }
    }
}

/// Reads whole TDS messages from a stream and writes small replies.
struct MessageIo<S> {
    stream: S,
    packets: PacketReader,
    assembler: MessageAssembler,
    chunk: Box<[u8]>,
}

impl<S: AsyncRead + Unpin> MessageIo<S> {
    fn new(stream: S, max_message_len: usize) -> Self {
        MessageIo {
            stream,
            packets: PacketReader::new(),
            assembler: MessageAssembler::new(max_message_len),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// The next whole message, or `None` at a clean end of stream. Cancel
    /// safe: the only await is a socket read whose bytes are fed at once.
    async fn next_message(&mut self) -> Result<Option<Message>, SandboxError> {
        loop {
            if let Some(message) = self.buffered_message()? {
                return Ok(Some(message));
            }
            let n = match self.stream.read(&mut self.chunk).await {
                Ok(n) => n,
                // A TLS peer that leaves without close_notify (drivers do):
                // an end of stream like any other.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return self.end_of_stream();
            }
            self.packets.feed(&self.chunk[..n]);
        }
    }

    fn buffered_message(&mut self) -> Result<Option<Message>, SandboxError> {
        while let Some(packet) = self.packets.next_packet()? {
            match self.assembler.push(&packet)? {
                Some(Assembled::Message(m)) => return Ok(Some(m)),
                Some(Assembled::Discarded { .. }) | None => {}
            }
        }
        Ok(None)
    }

    fn end_of_stream(&self) -> Result<Option<Message>, SandboxError> {
        if self.packets.buffered() > 0 || self.assembler.in_message() {
            return Err(SandboxError::Protocol("stream ended inside a packet"));
        }
        Ok(None)
    }

    async fn expect_message(&mut self, ty: PacketType) -> Result<Message, SandboxError> {
        match self.next_message().await? {
            Some(m) if m.packet_type == ty => Ok(m),
            Some(_) => Err(SandboxError::Protocol(
                "unexpected message type during login",
            )),
            None => Err(SandboxError::Protocol("client left during login")),
        }
    }

    /// The stream, provided no bytes beyond the last message were read (a
    /// client must wait for our answer before sending more at this point).
    fn into_stream_checked(self) -> Result<S, SandboxError> {
        if self.packets.buffered() > 0 {
            return Err(SandboxError::Protocol(
                "client sent data before the server answered",
            ));
        }
        Ok(self.stream)
    }
}

impl MessageIo<Replay<TcpStream>> {
    /// The stream with any bytes read ahead put back.
    fn into_replay(mut self) -> Result<Replay<TcpStream>, SandboxError> {
        let pending = self.packets.take_pending();
        self.stream.unread(&pending);
        Ok(self.stream)
    }
}

impl<S: AsyncWrite + Unpin> MessageIo<S> {
    /// One tabular-result message (every server reply is type 0x04).
    async fn write_message(
        &mut self,
        spid: u16,
        payload: &[u8],
        packet_size: usize,
    ) -> Result<(), SandboxError> {
        let mut out = PacketOut::new(&mut self.stream, packet_size, spid);
        out.message(payload).await
    }
}

/// Writes response packets with continuing packet ids. Under TLS each
/// packet is written on its own so it lands in its own record (TDS-NOTES
/// §3.1); in plaintext the packets of a chunk go out in one write.
struct PacketOut<W> {
    writer: W,
    packet_size: usize,
    spid: u16,
    packet_id: u8,
    coalesce: bool,
    scratch: BytesMut,
}

impl<W: AsyncWrite + Unpin> PacketOut<W> {
    fn new(writer: W, packet_size: usize, spid: u16) -> Self {
        PacketOut {
            writer,
            packet_size,
            spid,
            packet_id: 1,
            coalesce: false,
            scratch: BytesMut::with_capacity(packet_size),
        }
    }

    /// Appends one packet (header and payload) to the scratch buffer.
    fn push_packet(&mut self, payload: &[u8], eom: bool) {
        let header = PacketHeader {
            packet_type: PacketType::TabularResult,
            status: if eom { status::EOM } else { 0 },
            length: (HEADER_LEN + payload.len()) as u16,
            spid: self.spid,
            packet_id: self.packet_id,
            window: 0,
        };
        self.packet_id = self.packet_id.wrapping_add(1);
        header.encode(&mut self.scratch);
        self.scratch.extend_from_slice(payload);
    }

    /// One packet of at most a packet's payload.
    async fn packet(&mut self, payload: &[u8], eom: bool) -> Result<(), SandboxError> {
        self.push_packet(payload, eom);
        if !self.coalesce || eom {
            self.write_scratch().await?;
        }
        if eom {
            self.writer.flush().await?;
        }
        Ok(())
    }

    async fn write_scratch(&mut self) -> Result<(), SandboxError> {
        self.writer.write_all(&self.scratch).await?;
        self.scratch.clear();
        Ok(())
    }

    /// Whole packets of a response that continues (no EOM).
    async fn packets(&mut self, payloads: &[u8]) -> Result<(), SandboxError> {
        for payload in payloads.chunks(self.packet_size - HEADER_LEN) {
            self.packet(payload, false).await?;
        }
        if !self.scratch.is_empty() {
            self.write_scratch().await?;
        }
        Ok(())
    }

    /// A whole message, cut at the packet size; the last packet has EOM.
    async fn message(&mut self, payload: &[u8]) -> Result<(), SandboxError> {
        let chunk = self.packet_size - HEADER_LEN;
        let mut rest = payload;
        while rest.len() > chunk {
            let (now, later) = rest.split_at(chunk);
            self.packet(now, false).await?;
            rest = later;
        }
        self.packet(rest, true).await?;
        self.packet_id = 1;
        Ok(())
    }

    /// Ends a response; after an attention the response closes with
    /// DONE(ATTN) (2.2.1.7: the acknowledgement ends what was cancelled).
    async fn finish(
        &mut self,
        last: Bytes,
        attention: bool,
        ctx: &TokenContext,
    ) -> Result<(), SandboxError> {
        let mut payload = last.to_vec();
        if attention {
            Token::Done(attention_done()).encode(ctx, &mut payload)?;
        }
        self.message(&payload).await
    }

    /// An attention that arrived after its request had finished gets its
    /// own DONE(ATTN) message.
    async fn attention_ack(&mut self, ctx: &TokenContext) -> Result<(), SandboxError> {
        self.finish(Bytes::new(), true, ctx).await
    }
}

fn attention_done() -> Done {
    Done {
        kind: DoneKind::Done,
        status: DoneStatus(DoneStatus::ATTN),
        cur_cmd: 0,
        row_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_file_lands_under_the_data_dir_once() {
        let dir = Path::new("data");
        assert_eq!(
            under(dir, Path::new("data/s.sqlite")),
            PathBuf::from("data/s.sqlite")
        );
        assert_eq!(
            under(dir, Path::new("s.sqlite")),
            PathBuf::from("data/s.sqlite")
        );
        assert_eq!(
            under(dir, Path::new("/tmp/s.sqlite")),
            PathBuf::from("/tmp/s.sqlite")
        );

        let source = crate::config::Source {
            file: None,
            env: vec![],
        };
        let config = Config::load(&source, &crate::config::Overrides::default()).unwrap();
        let options = SandboxOptions::embedded(&config);
        assert_eq!(options.data_file, PathBuf::from("data/sandbox.sqlite"));
        assert!(options.listen.ip().is_loopback());
        assert_eq!(options.listen.port(), 0);
    }
}
