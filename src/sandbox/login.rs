//! The sandbox's answers during connection setup: the PRELOGIN response
//! ([MS-TDS] 2.2.6.5), the SQL authentication check of LOGIN7 (2.2.6.4) and
//! the login response token stream (2.2.2.2, tokens of 2.2.7).
//!
//! The shapes follow what SQL Server 2022 sends (fixtures/captures
//! `sql2022-login-select`): ENVCHANGE database, INFO 5701, ENVCHANGE
//! collation, ENVCHANGE language, INFO 5703, LOGINACK, ENVCHANGE packet size,
//! FEATUREEXTACK, DONE. Nothing here does I/O.

use std::fmt;

use crate::config::SandboxUser;
use crate::tds::login7::{self, FeatureId, Login7};
use crate::tds::packet::{DEFAULT_PACKET_SIZE, MAX_PACKET_LEN, MIN_NEGOTIATED_PACKET_SIZE};
use crate::tds::prelogin::{token as option, Encryption, PreLogin, Version};
use crate::tds::token::env_change::{
    ENV_DATABASE, ENV_LANGUAGE, ENV_PACKETSIZE, ENV_ROUTING, ENV_SQLCOLLATION,
};
use crate::tds::token::feature_ext_ack::FEATURE_UTF8_SUPPORT;
use crate::tds::token::{
    Done, DoneKind, DoneStatus, EnvChange, FeatureAck, FeatureExtAck, InfoError, LoginAck, Routing,
    TdsVersion, Token, UcsString,
};

/// Product version announced in PRELOGIN and LOGINACK: SQL Server 2022 RTM,
/// 16.0.1000.6.
pub const PRODUCT_VERSION: Version = Version {
    major: 16,
    minor: 0,
    build: 1000,
    sub_build: 6,
};

/// LOGINACK ProgName as SQL Server 2019 and 2022 send it: the name followed
/// by two NUL characters inside the B_VARCHAR (length 22; captures).
pub const PROG_NAME: &str = "Microsoft SQL Server\0\0";

/// Server name in INFO and ERROR tokens (SQL Server puts its host name there).
pub const SERVER_NAME: &str = "tdsguard-sandbox";

/// SQL_Latin1_General_CP1_CI_AS as SQL Server sends it in ENVCHANGE type 7
/// and in every character TYPE_INFO: LCID 0x0409, ignore case/kana/width,
/// sort id 52 (captures, `09 04 D0 00 34`).
pub const DEFAULT_COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// Language every login gets (SQL Server's default for a new login).
pub const LANGUAGE: &str = "us_english";

/// LOGINACK interface: SQL_TSQL (2.2.7.14).
const INTERFACE_TSQL: u8 = 0x01;

/// UTF8_SUPPORT acknowledgement data: "supported" (2.2.7.11; 0x01 in the
/// SQL Server 2022 capture).
const UTF8_SUPPORTED: u8 = 0x01;

/// Login failed (SQL Server message 18456, severity 14, state 1 as sent to
/// clients).
const LOGIN_FAILED: u32 = 18456;
const LOGIN_FAILED_CLASS: u8 = 14;

/// "Changed database context to '...'." (SQL Server message 5701).
pub const INFO_DATABASE_CHANGED: u32 = 5701;
/// "Changed language setting to ...." (SQL Server message 5703).
const INFO_LANGUAGE_CHANGED: u32 = 5703;

/// What the sandbox decided from a client's PRELOGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionChoice {
    /// Client ENCRYPT_OFF: TLS for LOGIN7 only, then plaintext (TDS-NOTES §3.2).
    LoginOnly,
    /// Client ON or REQ: TLS for the whole connection.
    Full,
    /// Client NOT_SUP and plaintext allowed: no TLS.
    Plaintext,
    /// Client NOT_SUP and plaintext refused: the connection is closed.
    Refused,
}

/// Maps the client's ENCRYPTION option to what the sandbox answers and does.
/// Azure SQL refuses NOT_SUP; the sandbox accepts it when configured to.
pub fn choose_encryption(client: Encryption, allow_plaintext: bool) -> EncryptionChoice {
    match client {
        Encryption::Off => EncryptionChoice::LoginOnly,
        Encryption::On | Encryption::Required => EncryptionChoice::Full,
        Encryption::NotSupported if allow_plaintext => EncryptionChoice::Plaintext,
        Encryption::NotSupported => EncryptionChoice::Refused,
    }
}

/// Builds the PRELOGIN response to `client` (2.2.6.5).
///
/// Option order and echo rules follow SQL Server 2022: VERSION, ENCRYPTION,
/// INSTOPT, THREADID (empty), MARS, then TRACEID (empty) and FEDAUTHREQUIRED
/// only when the client sent them. FEDAUTHREQUIRED is answered 0x01 as the
/// captured servers do; a LOGIN7 that then asks for FEDAUTH is refused at
/// login. NONCEOPT is answered with a fresh nonce when the client sent one,
/// as Azure SQL does. MARS is always 0: the sandbox has no SMP layer.
pub fn prelogin_response(client: &PreLogin, choice: EncryptionChoice) -> PreLogin {
    let mut out = PreLogin::new();
    out.set_version(PRODUCT_VERSION);
    out.set_encryption(answered_encryption(choice), false);
    out.set_instance(&[0x00]);
    out.set_option(option::THREADID, &[]);
    out.set_mars(false);
    if client.option(option::TRACEID).is_some() {
        out.set_option(option::TRACEID, &[]);
    }
    if client.option(option::FEDAUTHREQUIRED).is_some() {
        out.set_fed_auth_required(true);
    }
    if client.option(option::NONCEOPT).is_some() {
        out.set_nonce(rand::random());
    }
    out
}

fn answered_encryption(choice: EncryptionChoice) -> Encryption {
    match choice {
        EncryptionChoice::LoginOnly => Encryption::Off,
        EncryptionChoice::Full => Encryption::On,
        EncryptionChoice::Plaintext | EncryptionChoice::Refused => Encryption::NotSupported,
    }
}

/// Why a login was refused. The Display text is for logs: no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefusal {
    UnknownUser,
    WrongPassword,
    /// Integrated (SSPI) or federated authentication, which the sandbox lacks.
    UnsupportedAuthentication(&'static str),
}

impl fmt::Display for LoginRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginRefusal::UnknownUser => f.write_str("unknown user"),
            LoginRefusal::WrongPassword => f.write_str("wrong password"),
            LoginRefusal::UnsupportedAuthentication(kind) => {
                write!(f, "{kind} authentication is not supported")
            }
        }
    }
}

/// Checks a LOGIN7 against the configured SQL logins. Names compare without
/// case, as SQL Server's default collation does; passwords exactly.
pub fn authenticate(login: &Login7, users: &[SandboxUser]) -> Result<(), LoginRefusal> {
    if login.option_flags2 & login7::OPTION2_INTEGRATED_SECURITY != 0 {
        return Err(LoginRefusal::UnsupportedAuthentication("integrated"));
    }
    if login.has_feature(FeatureId::FedAuth) {
        return Err(LoginRefusal::UnsupportedAuthentication("federated"));
    }
    let user = users
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(&login.username))
        .ok_or(LoginRefusal::UnknownUser)?;
    if !constant_time_eq(user.password.as_bytes(), login.password.as_bytes()) {
        return Err(LoginRefusal::WrongPassword);
    }
    Ok(())
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (x, y) in a.iter().zip(b) {
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The TDS version the sandbox answers in LOGINACK: the client's, capped at
/// 7.4. A TDS 8.0 client gets 7.4 too: TDS 8.0 changes the transport (TLS
/// first), not the token formats.
/// TODO(tdsguard): confirm the LOGINACK version of a strict connection
/// against a SQL Server 2022 capture.
pub fn negotiated_version(client_version: u32) -> TdsVersion {
    if client_version == login7::version::TDS80 || client_version >= login7::version::TDS74 {
        return TdsVersion::V7_4;
    }
    login_ack_version(client_version)
}

/// LOGIN7 carries the version as an LE DWORD of the same number LOGINACK
/// writes big-endian; older minor versions map to their named constants.
fn login_ack_version(client_version: u32) -> TdsVersion {
    match client_version {
        v if v >= login7::version::TDS73B => TdsVersion::V7_3B,
        v if v >= login7::version::TDS73A => TdsVersion::V7_3A,
        v if v >= login7::version::TDS72 => TdsVersion::V7_2,
        v if v >= 0x7100_0000 => TdsVersion::V7_1,
        _ => TdsVersion::V7_0,
    }
}

/// The packet size both sides use after login: the client's request within
/// 512..=32767, or 4096 when it asked for the server default (0).
pub fn negotiated_packet_size(requested: u32) -> usize {
    if requested == 0 {
        return DEFAULT_PACKET_SIZE;
    }
    (requested as usize).clamp(MIN_NEGOTIATED_PACKET_SIZE, MAX_PACKET_LEN)
}

/// Everything the login response states about the new session.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub database: String,
    pub tds_version: TdsVersion,
    pub packet_size: usize,
    /// The client sent a FeatureExt block (TDS 7.4).
    pub has_feature_ext: bool,
    /// The client asked for UTF8_SUPPORT.
    pub utf8_support: bool,
}

impl SessionStart {
    /// Derives the session parameters from a LOGIN7; `database` is used when
    /// the client names none.
    pub fn from_login(login: &Login7, default_database: &str) -> Self {
        let database = if login.database.is_empty() {
            default_database.to_owned()
        } else {
            login.database.clone()
        };
        SessionStart {
            database,
            tds_version: negotiated_version(login.tds_version),
            packet_size: negotiated_packet_size(login.packet_size),
            has_feature_ext: login.features.is_some(),
            utf8_support: login.has_feature(FeatureId::Utf8Support),
        }
    }
}

/// The tokens of a successful login response, in SQL Server's order.
pub fn success_tokens(session: &SessionStart) -> Vec<Token> {
    let mut tokens = vec![
        env_text(ENV_DATABASE, &session.database, &session.database),
        info(
            INFO_DATABASE_CHANGED,
            2,
            &database_changed(&session.database),
        ),
        collation_change(),
        env_text(ENV_LANGUAGE, LANGUAGE, ""),
        info(
            INFO_LANGUAGE_CHANGED,
            1,
            &format!("Changed language setting to {LANGUAGE}."),
        ),
        Token::LoginAck(login_ack(session.tds_version)),
        packet_size_change(session.packet_size),
    ];
    if session.has_feature_ext {
        tokens.push(Token::FeatureExtAck(feature_acks(session)));
    }
    tokens.push(done(DoneStatus::default()));
    tokens
}

/// A login response that sends the client elsewhere (Azure SQL "Redirect"
/// policy): the successful login tokens with ENVCHANGE routing (type 20)
/// before the final DONE. The server then closes the connection.
pub fn routing_tokens(session: &SessionStart, host: &str, port: u16) -> Vec<Token> {
    let mut tokens = success_tokens(session);
    let routing = Token::EnvChange(EnvChange::Routing {
        routing: Routing {
            protocol: 0x00,
            port,
            server: UcsString::from(host),
        },
        old: Some(Vec::new()),
    });
    let done_at = tokens.len().saturating_sub(1);
    tokens.insert(done_at, routing);
    debug_assert_eq!(ENV_ROUTING, 0x14);
    tokens
}

/// ERROR 18456 and DONE with the error bit, as SQL Server answers a failed
/// SQL login (the real reason is only in the server's own log).
pub fn failure_tokens(user: &str) -> Vec<Token> {
    vec![
        error_token(
            LOGIN_FAILED,
            1,
            LOGIN_FAILED_CLASS,
            &format!("Login failed for user '{user}'."),
        ),
        done(DoneStatus(DoneStatus::ERROR)),
    ]
}

/// The text of INFO 5701.
pub fn database_changed(database: &str) -> String {
    format!("Changed database context to '{database}'.")
}

/// An ENVCHANGE with B_VARCHAR values (database, language, packet size).
pub fn env_text(env_type: u8, new: &str, old: &str) -> Token {
    Token::EnvChange(EnvChange::Text {
        env_type,
        new: UcsString::from(new),
        old: UcsString::from(old),
    })
}

/// ENVCHANGE type 7 with the default collation; SQL Server leaves the old
/// value empty.
pub fn collation_change() -> Token {
    Token::EnvChange(EnvChange::Bytes {
        env_type: ENV_SQLCOLLATION,
        new: DEFAULT_COLLATION.to_vec(),
        old: Vec::new(),
    })
}

fn packet_size_change(size: usize) -> Token {
    env_text(
        ENV_PACKETSIZE,
        &size.to_string(),
        &DEFAULT_PACKET_SIZE.to_string(),
    )
}

fn login_ack(version: TdsVersion) -> LoginAck {
    let build = PRODUCT_VERSION.build.to_be_bytes();
    LoginAck {
        interface: INTERFACE_TSQL,
        tds_version: version,
        prog_name: UcsString::from(PROG_NAME),
        prog_version: [
            PRODUCT_VERSION.major,
            PRODUCT_VERSION.minor,
            build[0],
            build[1],
        ],
    }
}

/// Acknowledges only what the sandbox really does: UTF-8 support (it never
/// sends a UTF-8 collation, which is allowed). Session recovery, column
/// encryption, data classification and federated authentication are left
/// unacknowledged, so clients fall back.
fn feature_acks(session: &SessionStart) -> FeatureExtAck {
    let mut acks = Vec::new();
    if session.utf8_support {
        acks.push(FeatureAck {
            feature: FEATURE_UTF8_SUPPORT,
            data: vec![UTF8_SUPPORTED],
        });
    }
    FeatureExtAck(acks)
}

/// An INFO token (class 0) from the sandbox, line 1 as SQL Server reports
/// for login messages.
pub fn info(number: u32, state: u8, message: &str) -> Token {
    Token::InfoError(message_token(false, number, state, 0, message))
}

/// An ERROR token from the sandbox.
pub fn error_token(number: u32, state: u8, class: u8, message: &str) -> Token {
    Token::InfoError(message_token(true, number, state, class, message))
}

fn message_token(is_error: bool, number: u32, state: u8, class: u8, text: &str) -> InfoError {
    InfoError {
        is_error,
        number,
        state,
        class,
        message: UcsString::from(text),
        server: UcsString::from(SERVER_NAME),
        procedure: UcsString::default(),
        line: 1,
    }
}

/// A DONE token with no row count.
pub fn done(status: DoneStatus) -> Token {
    Token::Done(Done {
        kind: DoneKind::Done,
        status,
        cur_cmd: 0,
        row_count: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::{decode_all, encode_all, TokenContext};

    /// The server direction of the SQL Server 2022 capture: PRELOGIN
    /// response, two TLS flights in 0x12 packets, then the plaintext login
    /// response and later replies.
    const SQL2022_SERVER: &[u8] =
        include_bytes!("../../fixtures/sql2022-login-select/server.node1.bin");

    /// Payload of the `index`-th packet of type 0x04 in `stream`.
    fn tabular_payload(stream: &[u8], index: usize) -> Vec<u8> {
        let mut at = 0;
        let mut seen = 0;
        while at + 8 <= stream.len() {
            let len = usize::from(u16::from_be_bytes([stream[at + 2], stream[at + 3]]));
            if stream[at] == 0x04 {
                if seen == index {
                    return stream[at + 8..at + len].to_vec();
                }
                seen += 1;
            }
            at += len;
        }
        panic!("no tabular packet {index}");
    }

    fn shape(token: &Token) -> String {
        match token {
            Token::EnvChange(e) => format!("ENVCHANGE {}", e.env_type()),
            Token::InfoError(i) => format!("{} {}", token.name(), i.number),
            Token::FeatureExtAck(_) => "FEATUREEXTACK".to_owned(),
            other => other.name().to_owned(),
        }
    }

    fn sample_session() -> SessionStart {
        SessionStart {
            database: "master".to_owned(),
            tds_version: TdsVersion::V7_4,
            packet_size: 4096,
            has_feature_ext: true,
            utf8_support: true,
        }
    }

    #[test]
    fn login_response_matches_sql_server_2022_token_sequence() {
        let captured = tabular_payload(SQL2022_SERVER, 1);
        let real = decode_all(&captured, &mut TokenContext::default()).expect("capture decodes");

        let ours = success_tokens(&sample_session());
        let real_shapes: Vec<String> = real.iter().map(shape).collect();
        let our_shapes: Vec<String> = ours.iter().map(shape).collect();
        assert_eq!(our_shapes, real_shapes);
    }

    #[test]
    fn login_response_tokens_equal_the_capture_where_nothing_is_host_specific() {
        let captured = tabular_payload(SQL2022_SERVER, 1);
        let real = decode_all(&captured, &mut TokenContext::default()).expect("capture decodes");
        let ours = success_tokens(&sample_session());

        // Database, collation, language and packet size ENVCHANGEs and the
        // DONE are byte-identical; INFO differs only in the server name.
        for i in [0, 2, 3, 6, 8] {
            assert!(ours[i] == real[i], "token {i} ({}) differs", ours[i].name());
        }
        let (Token::InfoError(a), Token::InfoError(b)) = (&ours[1], &real[1]) else {
            panic!("not INFO")
        };
        assert_eq!(
            (a.number, a.state, a.class, &a.message),
            (b.number, b.state, b.class, &b.message)
        );
        let (Token::LoginAck(a), Token::LoginAck(b)) = (&ours[5], &real[5]) else {
            panic!("not LOGINACK")
        };
        assert_eq!(
            (a.interface, a.tds_version, &a.prog_name),
            (b.interface, b.tds_version, &b.prog_name)
        );
        assert_eq!(a.prog_version[0], 16);
    }

    #[test]
    fn login_response_round_trips() {
        let tokens = success_tokens(&sample_session());
        let bytes = encode_all(&tokens, &mut TokenContext::default()).expect("encodes");
        let back = decode_all(&bytes, &mut TokenContext::default()).expect("decodes");
        assert!(back == tokens);
    }

    #[test]
    fn failed_login_is_error_18456_then_done_error() {
        let tokens = failure_tokens("sa");
        let Token::InfoError(e) = &tokens[0] else {
            panic!("not ERROR")
        };
        assert!(e.is_error);
        assert_eq!((e.number, e.class, e.state), (18456, 14, 1));
        assert_eq!(e.message.to_string_lossy(), "Login failed for user 'sa'.");
        let Token::Done(d) = &tokens[1] else {
            panic!("not DONE")
        };
        assert!(d.status.has(DoneStatus::ERROR));
        let bytes = encode_all(&tokens, &mut TokenContext::default()).expect("encodes");
        assert_eq!(
            decode_all(&bytes, &mut TokenContext::default())
                .expect("decodes")
                .len(),
            2
        );
    }

    #[test]
    fn routing_envchange_sits_before_the_final_done() {
        let tokens = routing_tokens(&sample_session(), "worker.local", 11000);
        let n = tokens.len();
        let Token::EnvChange(e) = &tokens[n - 2] else {
            panic!("not ENVCHANGE")
        };
        let routing = e.routing().expect("routing");
        assert_eq!(
            (routing.port, routing.server.to_string_lossy().as_str()),
            (11000, "worker.local")
        );
        assert_eq!(tokens[n - 1].name(), "DONE");
    }

    #[test]
    fn feature_ack_only_for_requested_utf8() {
        let mut session = sample_session();
        session.utf8_support = false;
        let tokens = success_tokens(&session);
        let Token::FeatureExtAck(ack) = &tokens[7] else {
            panic!("not FEATUREEXTACK")
        };
        assert!(ack.0.is_empty());
        session.has_feature_ext = false;
        assert!(!success_tokens(&session)
            .iter()
            .any(|t| t.name() == "FEATUREEXTACK"));
    }

    #[test]
    fn prelogin_response_echoes_like_sql_server_2022() {
        let client_bytes =
            include_bytes!("../../fixtures/client-first-packets/tedious-prelogin.bin");
        let client = PreLogin::decode(&client_bytes[8..]).expect("client prelogin");
        let ours = prelogin_response(&client, EncryptionChoice::Full);
        let tokens: Vec<u8> = ours.options().iter().map(|o| o.token).collect();
        assert_eq!(tokens, [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        assert_eq!(ours.option(option::TRACEID), Some(&[][..]));
        assert_eq!(ours.fed_auth_required(), Some(true));
        assert_eq!(ours.mars(), Some(false));
        assert_eq!(ours.encryption(), Some((Encryption::On, false)));
        assert_eq!(ours.version(), Some(PRODUCT_VERSION));
    }

    #[test]
    fn prelogin_response_layout_matches_the_2022_capture() {
        let client_bytes = include_bytes!("../../fixtures/sql2022-login-select/client.node0.bin");
        let client = PreLogin::decode(&client_bytes[8..88]).expect("client prelogin");
        let ours = prelogin_response(&client, EncryptionChoice::LoginOnly);
        let mut bytes = bytes::BytesMut::new();
        ours.encode(&mut bytes).expect("encodes");
        let real = &SQL2022_SERVER[8..48];
        // Same option table; the VERSION data (bytes 31..37) names another build.
        assert_eq!(&bytes[..31], &real[..31]);
        assert_eq!(&bytes[37..], &real[37..]);
    }

    #[test]
    fn encryption_choices() {
        assert_eq!(
            choose_encryption(Encryption::Off, false),
            EncryptionChoice::LoginOnly
        );
        assert_eq!(
            choose_encryption(Encryption::Required, false),
            EncryptionChoice::Full
        );
        assert_eq!(
            choose_encryption(Encryption::NotSupported, true),
            EncryptionChoice::Plaintext
        );
        assert_eq!(
            choose_encryption(Encryption::NotSupported, false),
            EncryptionChoice::Refused
        );
    }

    #[test]
    fn versions_and_packet_sizes() {
        assert_eq!(negotiated_version(login7::version::TDS80), TdsVersion::V7_4);
        assert_eq!(negotiated_version(login7::version::TDS74), TdsVersion::V7_4);
        assert_eq!(negotiated_version(login7::version::TDS71), TdsVersion::V7_1);
        assert_eq!(
            negotiated_version(login7::version::TDS73B),
            TdsVersion::V7_3B
        );
        assert_eq!(negotiated_packet_size(0), 4096);
        assert_eq!(negotiated_packet_size(100), 512);
        assert_eq!(negotiated_packet_size(8000), 8000);
        assert_eq!(negotiated_packet_size(70000), 32767);
    }

    #[test]
    fn authentication() {
        let users = vec![SandboxUser {
            name: "sa".to_owned(),
            password: "pw".to_owned(),
        }];
        let mut login = Login7::default();
        login.username = "SA".to_owned();
        *login.password = "pw".to_owned();
        assert_eq!(authenticate(&login, &users), Ok(()));
        *login.password = "px".to_owned();
        assert_eq!(
            authenticate(&login, &users),
            Err(LoginRefusal::WrongPassword)
        );
        login.username = "bob".to_owned();
        assert_eq!(authenticate(&login, &users), Err(LoginRefusal::UnknownUser));
    }
}
