//! The relay's error type. Every variant records which side was at fault
//! (the application, the server, or tdsguard itself), so a log line says who
//! to look at, and carries the text an application may be shown.

use std::fmt;
use std::io;

use thiserror::Error;

use crate::relay::hook::RewriteError;
use crate::tds::{DecodeError, EncodeError};

/// One side of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The application's connection to tdsguard.
    Client,
    /// tdsguard's connection to the server.
    Server,
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Client => "client",
            Leg::Server => "server",
        })
    }
}

/// Who caused a relay error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The application or its driver.
    Client,
    /// The server, or the network path to it.
    Server,
    /// tdsguard: its configuration or a bug.
    Proxy,
}

impl From<Leg> for Fault {
    fn from(leg: Leg) -> Self {
        match leg {
            Leg::Client => Fault::Client,
            Leg::Server => Fault::Server,
        }
    }
}

/// Why a relayed connection ended early.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("i/o error on the {leg} leg while {action}")]
    Io {
        leg: Leg,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("the {leg} closed the connection {during}")]
    Closed { leg: Leg, during: &'static str },

    #[error("the {leg} sent invalid TDS")]
    Decode {
        leg: Leg,
        #[source]
        source: DecodeError,
    },

    #[error("the {leg} sent a {packet_type:#04x} packet {during}")]
    UnexpectedPacket {
        leg: Leg,
        packet_type: u8,
        during: &'static str,
    },

    #[error("the {leg} did not finish its part of the handshake in time")]
    HandshakeTimeout { leg: Leg },

    #[error("cannot connect to the server at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },

    #[error("timed out connecting to the server at {addr}")]
    ConnectTimeout { addr: String },

    #[error("TLS with the {leg} failed")]
    Tls {
        leg: Leg,
        #[source]
        source: crate::tls::TlsError,
    },

    #[error("the server does not support encryption; tdsguard never sends plaintext upstream")]
    ServerRefusedEncryption,

    #[error("the server redirected to an unsupported protocol {protocol}")]
    BadRouting { protocol: u8 },

    #[error("the server kept redirecting: more than {max} routing redirects")]
    TooManyRedirects { max: u8 },

    #[error("the server did not answer the login in time")]
    LoginTimeout,

    #[error("the client requires MARS, which tdsguard does not support")]
    MarsRequired,

    #[error("the client sent a pre-TDS 7 login, which tdsguard does not support")]
    PreTds7Login,

    #[error("the client does not encrypt and listen.tls = \"required\"")]
    EncryptionRequired,

    #[error("the client requires encryption and listen.tls = \"off\"")]
    EncryptionRefused,

    #[error("the server did not acknowledge a cancel within {timeout_ms} ms")]
    CancelTimeout { timeout_ms: u64 },

    #[error("the server did not answer tdsguard's own request within {timeout_ms} ms")]
    OwnRequestTimeout { timeout_ms: u64 },

    #[error("tdsguard could not encode a message")]
    Encode(#[from] EncodeError),

    #[error("rewriting a message failed")]
    Rewrite(#[from] RewriteError),

    #[error("cannot listen on {address}")]
    Bind {
        address: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },

    #[error("tdsguard is shutting down")]
    ShuttingDown,
}

impl RelayError {
    /// Which side caused the error.
    pub fn fault(&self) -> Fault {
        match self {
            RelayError::Io { leg, .. }
            | RelayError::Closed { leg, .. }
            | RelayError::Decode { leg, .. }
            | RelayError::UnexpectedPacket { leg, .. }
            | RelayError::HandshakeTimeout { leg } => (*leg).into(),
            RelayError::Tls { source, .. } => tls_fault(source.fault()),
            RelayError::Connect { .. }
            | RelayError::ServerRefusedEncryption
            | RelayError::BadRouting { .. }
            | RelayError::ConnectTimeout { .. }
            | RelayError::TooManyRedirects { .. }
            | RelayError::LoginTimeout
            | RelayError::CancelTimeout { .. }
            | RelayError::OwnRequestTimeout { .. } => Fault::Server,
            RelayError::MarsRequired
            | RelayError::PreTds7Login
            | RelayError::EncryptionRequired
            | RelayError::EncryptionRefused => Fault::Client,
            RelayError::Encode(_)
            | RelayError::Rewrite(_)
            | RelayError::Bind { .. }
            | RelayError::ShuttingDown => Fault::Proxy,
        }
    }

    /// The text shown to the application in a TDS ERROR token. It names the
    /// cause and what to check; never a credential or a value.
    pub fn client_text(&self) -> String {
        let detail = error_chain(self);
        format!("tdsguard: {detail}")
    }

    pub(crate) fn io(leg: Leg, action: &'static str) -> impl FnOnce(io::Error) -> RelayError {
        move |source| RelayError::Io {
            leg,
            action,
            source,
        }
    }

    pub(crate) fn tls(leg: Leg) -> impl FnOnce(crate::tls::TlsError) -> RelayError {
        move |source| RelayError::Tls { leg, source }
    }

    pub(crate) fn decode(leg: Leg) -> impl FnOnce(DecodeError) -> RelayError {
        move |source| RelayError::Decode { leg, source }
    }
}

fn tls_fault(fault: crate::tls::Fault) -> Fault {
    match fault {
        crate::tls::Fault::Client => Fault::Client,
        crate::tls::Fault::Server => Fault::Server,
        crate::tls::Fault::Proxy => Fault::Proxy,
    }
}

/// The error and its sources joined with ": ", as one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<Fault> for &'static str {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Client => "client",
            Fault::Server => "server",
            Fault::Proxy => "proxy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_follow_the_leg() {
        let err = RelayError::Closed {
            leg: Leg::Server,
            during: "mid-row",
        };
        assert_eq!(err.fault(), Fault::Server);
        assert_eq!(RelayError::MarsRequired.fault(), Fault::Client);
        assert_eq!(RelayError::ShuttingDown.fault(), Fault::Proxy);
    }

    #[test]
    fn client_text_carries_the_source_chain() {
        let err = RelayError::Connect {
            addr: "db.example:1433".into(),
            source: io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        };
        let text = err.client_text();
        assert!(text.starts_with("tdsguard: cannot connect"), "{text}");
        assert!(text.ends_with("refused"), "{text}");
    }
}
