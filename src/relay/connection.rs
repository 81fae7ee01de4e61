//! One application connection, from accept to close.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, error, info, trace, Span};

use crate::relay::attention::AttentionSignal;
use crate::relay::budget::RequestBudget;
use crate::relay::client_handshake::{
    self, AcceptedClient, ClientEncryption, ClientSettings, ClientStream,
};
use crate::relay::error::{error_chain, Fault, Leg, RelayError};
use crate::relay::hook::{RewriterFactory, SessionInfo};
use crate::relay::io::{read_message_packets, PacketRead, PacketWrite};
use crate::relay::login::{
    self, LoginRequest, LoginResponse, MAX_LOGIN_MESSAGE_LEN, MAX_LOGIN_ROUNDS,
};
use crate::relay::pump::{self, Shared};
use crate::relay::redirect::RedirectBudget;
use crate::relay::reply::fatal_error;
use crate::relay::upstream::{self, ServerStream, Target, UpstreamSettings};
use crate::tds::packet::DEFAULT_PACKET_SIZE;
use crate::tds::token::{TdsVersion, TokenContext};

/// Time the server has to answer LOGIN7. SQL Server answers in well under
/// a second; Azure SQL may take several seconds while a database resumes.
/// Drivers give up after 15-30 s, so 60 s never cuts a login they would
/// have waited for.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a connection needs, shared by all connections of a listener.
pub struct Settings {
    pub client: ClientSettings,
    pub upstream: UpstreamSettings,
    pub target: Target,
    pub max_redirects: u8,
    pub cancel_timeout: Duration,
    /// Time the application has for PRELOGIN, TLS and LOGIN7.
    pub handshake_timeout: Duration,
    /// Log opens and closes at info rather than debug.
    pub log_connections: bool,
    pub rewriters: Arc<dyn RewriterFactory>,
    /// Room for requests held whole, shared by all connections.
    pub request_budget: RequestBudget,
}

/// Where a connection stands. Drawn from the application's side; the
/// upstream leg is opened while in `Login7`.
///
/// ```text
///   accept
///     |
///     v
///  FirstBytes --0x16 ClientHello (ALPN tds/8.0)--> StrictTls --PRELOGIN inside TLS--+
///     |  0x12                                                                         |
///     v                                                                               |
///  PreLogin --answer OFF/ON/REQ--> Tls (handshake in 0x12 packets) --+                |
///     |  answer NOT_SUP                                              |                |
///     +--------------------------------------------------------------+----------------+
///     |  0x10 first (no PRELOGIN, plaintext allowed)                 |
///     v                                                              v
///  Login7 --upstream: TCP, PRELOGIN, TLS, LOGIN7; routing followed--> LoggedIn
///     |  (login-only: TLS dropped after LOGIN7)                         |  ^
///     |                                                     request     |  | final DONE
///     |                                                                 v  |
///     |                                                               Request
///     |                                                                 |  ^
///     |                                                  0x06 attention |  | DONE(ATTN)
///     |                                                                 v  |
///     |                                                              Attention
///     v
///  Closed  <-- any error (the application gets ERROR + DONE when it waits for a reply)
/// ```
///
/// `Request` and `Attention` are tracked inside the relay loop (a request
/// being received, an attention awaiting its acknowledgement), and `Closed`
/// is the end itself; this value names the phase a connection ended in, for
/// its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    FirstBytes,
    Login7,
    LoggedIn,
}

/// A login that succeeded upstream.
struct LoggedIn {
    server: PacketRead<ServerStream>,
    session: SessionInfo,
    context: TokenContext,
}

/// Serves one connection; logs how it ended. Runs inside the connection's
/// span.
pub async fn serve(tcp: TcpStream, settings: Arc<Settings>) {
    let _ = tcp.set_nodelay(true);
    log_lifecycle(&settings, "connection opened");
    let mut state = ConnState::FirstBytes;
    let result = run(tcp, &settings, &mut state).await;
    log_end(&settings, state, result);
}

fn log_lifecycle(settings: &Settings, message: &'static str) {
    if settings.log_connections {
        info!("{message}");
    } else {
        debug!("{message}");
    }
}

fn log_end(settings: &Settings, state: ConnState, result: Result<(), RelayError>) {
    let Err(err) = result else {
        return log_lifecycle(settings, "connection closed");
    };
    let fault: &'static str = err.fault().into();
    let reason = error_chain(&err);
    match err.fault() {
        // Bad input from an application is worth an operator's eye at the
        // default level: the reason names the fault, never a value.
        Fault::Client | Fault::Server => info!(fault, state = ?state, reason, "connection ended"),
        Fault::Proxy => error!(fault, state = ?state, reason, "connection ended"),
    }
}

async fn run(tcp: TcpStream, settings: &Settings, state: &mut ConnState) -> Result<(), RelayError> {
    let handshake = client_handshake::accept(tcp, &settings.client);
    let accepted = tokio::time::timeout(settings.handshake_timeout, handshake)
        .await
        .map_err(|_| RelayError::HandshakeTimeout { leg: Leg::Client })??;
    *state = ConnState::Login7;
    debug!(
        encryption = accepted.encryption.name(),
        "client handshake done"
    );

    let request = LoginRequest::new(&accepted.login)?;
    let AcceptedClient {
        io: mut client,
        encryption,
        fed_auth,
        ..
    } = accepted;
    let logged_in = match login(&mut client, &request, encryption, fed_auth, settings).await {
        Ok(Some(logged_in)) => logged_in,
        Ok(None) => return Ok(()),
        Err(err) => return Err(tell_client(&mut client, &request, err).await),
    };
    drop(request);
    *state = ConnState::LoggedIn;
    // The state stays LoggedIn: the end is logged with the phase it ended in.
    relay(client, logged_in, settings).await
}

/// Sends a login failure the application must see: ERROR + DONE.
async fn tell_client(
    client: &mut PacketRead<ClientStream>,
    request: &LoginRequest,
    err: RelayError,
) -> RelayError {
    let version = request.tds_version;
    let Ok(reply) = fatal_error(&err.client_text(), version, DEFAULT_PACKET_SIZE) else {
        return err;
    };
    let mut writer = PacketWrite::new(client.get_mut(), Leg::Client);
    if writer.send_packets(&reply).await.is_ok() {
        writer.close().await;
    }
    err
}

/// Logs in upstream, following redirects; forwards the final response.
/// `None` when the server refused the login (the refusal was forwarded).
async fn login(
    client: &mut PacketRead<ClientStream>,
    request: &LoginRequest,
    encryption: ClientEncryption,
    fed_auth: Option<bool>,
    settings: &Settings,
) -> Result<Option<LoggedIn>, RelayError> {
    let mut budget = RedirectBudget::new(settings.max_redirects);
    let mut target = settings.target.clone();
    loop {
        let (server, response) = login_at(&target, request, fed_auth, settings).await?;
        let Some(next) = response.routing.clone() else {
            return finish_login(client, server, response, request, encryption).await;
        };
        budget.take()?;
        info!(redirect.to = %next, "server redirected the login; following");
        target = next;
    }
}

async fn login_at(
    target: &Target,
    request: &LoginRequest,
    fed_auth: Option<bool>,
    settings: &Settings,
) -> Result<(PacketRead<ServerStream>, LoginResponse), RelayError> {
    let conn = upstream::connect(target, &settings.upstream, fed_auth).await?;
    Span::current().record("server.addr", tracing::field::display(conn.addr));
    let mut server = PacketRead::new(conn.stream, Leg::Server);
    PacketWrite::new(server.get_mut(), Leg::Server)
        .send_packets(request.packets())
        .await?;
    trace!(len = request.packets().len(), "LOGIN7 forwarded");

    let ctx = login_context(request.tds_version);
    let response = tokio::time::timeout(LOGIN_TIMEOUT, login::read_response(&mut server, ctx))
        .await
        .map_err(|_| RelayError::LoginTimeout)??;
    Ok((server, response))
}

fn login_context(version: TdsVersion) -> TokenContext {
    TokenContext {
        tds_version: version,
        ..TokenContext::default()
    }
}

/// Runs SSPI / FEDAUTH rounds if any, then forwards the final response.
async fn finish_login(
    client: &mut PacketRead<ClientStream>,
    mut server: PacketRead<ServerStream>,
    mut response: LoginResponse,
    request: &LoginRequest,
    encryption: ClientEncryption,
) -> Result<Option<LoggedIn>, RelayError> {
    for _ in 0..MAX_LOGIN_ROUNDS {
        if response.is_final() {
            break;
        }
        response = login_round(client, &mut server, response).await?;
    }

    let Some(version) = response.login_ack else {
        debug!("server refused the login");
        send_to_client(client, &response.for_client(DEFAULT_PACKET_SIZE)?).await?;
        return Ok(None);
    };
    let server_size = response.server_packet_size(request);
    let client_size = login::client_packet_size(server_size, encryption.session_encrypted());
    send_to_client(client, &response.for_client(client_size)?).await?;
    debug!(
        tds.version = format_args!("{:#010x}", version.0),
        packet_size.server = server_size,
        packet_size.client = client_size,
        "logged in"
    );

    let session = SessionInfo {
        client_packet_size: client_size,
        server_packet_size: server_size,
        tds_version: version.0,
        login_env: response.env_changes(),
    };
    let context = response.context;
    Ok(Some(LoggedIn {
        server,
        session,
        context,
    }))
}

/// Forwards a response that asks the client for more (SSPI, FEDAUTHINFO),
/// then the client's next message, and reads the server's answer.
async fn login_round(
    client: &mut PacketRead<ClientStream>,
    server: &mut PacketRead<ServerStream>,
    response: LoginResponse,
) -> Result<LoginResponse, RelayError> {
    send_to_client(client, &response.for_client(DEFAULT_PACKET_SIZE)?).await?;
    let packets = read_message_packets(client, MAX_LOGIN_MESSAGE_LEN).await?;
    let mut writer = PacketWrite::new(server.get_mut(), Leg::Server);
    for packet in &packets {
        writer.send(&packet.raw).await?;
    }
    login::read_response(server, response.context).await
}

async fn send_to_client(
    client: &mut PacketRead<ClientStream>,
    bytes: &[u8],
) -> Result<(), RelayError> {
    PacketWrite::new(client.get_mut(), Leg::Client)
        .send_packets(bytes)
        .await
}

/// The request/response loop, until either side closes.
async fn relay(
    client: PacketRead<ClientStream>,
    logged_in: LoggedIn,
    settings: &Settings,
) -> Result<(), RelayError> {
    let (client_stream, client_rest) = client.into_parts();
    let (server_stream, server_rest) = logged_in.server.into_parts();
    let (client_rd, client_wr) = tokio::io::split(client_stream);
    let (server_rd, server_wr) = tokio::io::split(server_stream);

    let client = (
        PacketRead::with_pending(client_rd, &client_rest, Leg::Client),
        PacketWrite::new(client_wr, Leg::Client),
    );
    let server = (
        PacketRead::with_pending(server_rd, &server_rest, Leg::Server),
        PacketWrite::new(server_wr, Leg::Server),
    );
    let rewriters = settings.rewriters.pair(&logged_in.session);
    let shared = Shared {
        session: logged_in.session,
        attention: AttentionSignal::new(),
        cancel_timeout: settings.cancel_timeout,
        budget: settings.request_budget.clone(),
    };
    pump::run(client, server, rewriters, shared, logged_in.context).await
}
