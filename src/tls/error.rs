//! Errors of the TLS layer: handshakes on either leg, certificates, the
//! PRELOGIN (0x12) framing of TDS 7.x handshakes ([MS-TDS] 2.2.6.5, 3.2.5.1)
//! and the login-only downgrade.
//!
//! Each error says who was at fault: the client (application leg), the server
//! (upstream leg) or tdsguard itself (configuration, files). Messages carry no
//! secrets: no key bytes, no plaintext.

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use tokio_rustls::rustls;

use super::prelogin_wrapper::MAX_PACKET_LEN;

/// The remote end of a TLS session, seen from tdsguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The application connecting to tdsguard (tdsguard is the TLS server).
    Client,
    /// The database tdsguard connects to (tdsguard is the TLS client).
    Server,
}

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Server,
    /// tdsguard: its configuration, its files, or a bug.
    Proxy,
}

impl From<Peer> for Fault {
    fn from(peer: Peer) -> Self {
        match peer {
            Peer::Client => Fault::Client,
            Peer::Server => Fault::Server,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Client => f.write_str("client"),
            Peer::Server => f.write_str("server"),
        }
    }
}

/// A violation of the TDS framing that wraps a TLS handshake. Travels inside
/// an [`io::Error`] of kind `InvalidData` through the TLS engine and is turned
/// into [`TlsError::PreloginFraming`] by [`TlsError::from_handshake`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// A packet of another type than PRELOGIN (0x12) arrived while the
    /// handshake was still running.
    #[error("packet type {0:#04x} during the tls handshake, expected 0x12")]
    UnexpectedPacketType(u8),

    /// A packet header whose length is below the header size or above the cap.
    #[error("packet length {0} is outside 8..={MAX_PACKET_LEN}")]
    BadPacketLength(u16),

    /// The stream ended inside a packet header or payload.
    #[error("stream ended inside a prelogin packet")]
    EndOfStreamInPacket,

    /// A TLS record header announced more than a TLS record may hold.
    #[error("tls record length {0} exceeds the limit")]
    RecordTooLong(u16),
}

/// Everything that can go wrong in the TLS layer.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The TLS handshake failed for a reason not covered below.
    #[error("tls handshake with the {peer} failed")]
    Handshake {
        peer: Peer,
        #[source]
        source: io::Error,
    },

    /// The server's certificate (or, in principle, a client certificate) was
    /// not accepted by our verifier.
    #[error("the {peer}'s certificate was rejected")]
    CertificateRejected {
        peer: Peer,
        #[source]
        source: rustls::Error,
    },

    /// The peer refused our certificate with a TLS alert: the certificate
    /// tdsguard presents is not trusted there.
    #[error("the {peer} rejected our certificate ({alert:?})")]
    OurCertificateRefused {
        peer: Peer,
        alert: rustls::AlertDescription,
    },

    /// The TDS packets wrapping the handshake were malformed.
    #[error("bad prelogin framing from the {peer} during the tls handshake")]
    PreloginFraming {
        peer: Peer,
        #[source]
        source: FramingError,
    },

    /// Reading or writing an established session failed.
    #[error("i/o with the {peer} failed")]
    Io {
        peer: Peer,
        #[source]
        source: io::Error,
    },

    /// The login-only downgrade found TLS data after the login that would be
    /// lost by dropping the session.
    #[error("the {peer} sent tls data after the login in login-only mode")]
    DataAfterLogin { peer: Peer },

    /// The transport is not in the state the operation needs.
    #[error("tls transport misuse: {0}")]
    WrongState(&'static str),

    /// A host name that cannot be used as a TLS server name.
    #[error("invalid tls server name {0:?}")]
    InvalidServerName(String),

    /// A certificate, key or CA file could not be read or written.
    #[error("cannot access {path}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A PEM file held nothing usable.
    #[error("{path} holds no {what}")]
    EmptyPem { path: PathBuf, what: &'static str },

    /// A stored private key is readable by other users.
    #[error("{path} is readable by other users; chmod 600 it")]
    KeyFilePermissions { path: PathBuf },

    /// No trusted root certificate could be loaded.
    #[error("no trusted root certificates found")]
    NoRootCertificates,

    /// Self-signed certificate generation failed.
    #[error("cannot generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),

    /// rustls refused the configuration (e.g. a key that does not match).
    #[error("invalid tls configuration")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// Who caused this error.
    pub fn fault(&self) -> Fault {
        match self {
            TlsError::Handshake { peer, .. }
            | TlsError::CertificateRejected { peer, .. }
            | TlsError::PreloginFraming { peer, .. }
            | TlsError::Io { peer, .. }
            | TlsError::DataAfterLogin { peer } => (*peer).into(),
            _ => Fault::Proxy,
        }
    }

    /// Classifies an I/O error returned by a handshake with `peer`: a framing
    /// violation, a certificate we rejected, a certificate the peer refused,
    /// or a plain handshake failure.
    pub fn from_handshake(source: io::Error, peer: Peer) -> TlsError {
        if let Some(framing) = inner_error::<FramingError>(&source) {
            return TlsError::PreloginFraming {
                peer,
                source: framing.clone(),
            };
        }

        match inner_error::<rustls::Error>(&source) {
            Some(rustls::Error::InvalidCertificate(_)) => TlsError::CertificateRejected {
                peer,
                source: into_rustls(source),
            },
            Some(rustls::Error::AlertReceived(alert)) if is_certificate_alert(*alert) => {
                TlsError::OurCertificateRefused {
                    peer,
                    alert: *alert,
                }
            }
            _ => TlsError::Handshake { peer, source },
        }
    }
}

fn inner_error<E: std::error::Error + 'static>(err: &io::Error) -> Option<&E> {
    err.get_ref().and_then(|inner| inner.downcast_ref::<E>())
}

/// Takes the rustls error out of an I/O error known to hold one.
fn into_rustls(err: io::Error) -> rustls::Error {
    match err
        .into_inner()
        .map(|inner| inner.downcast::<rustls::Error>())
    {
        Some(Ok(rustls_error)) => *rustls_error,
        _ => rustls::Error::General("certificate error".into()),
    }
}

fn is_certificate_alert(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;

    matches!(
        alert,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
    )
}

/// Wraps a framing error so it can travel through the TLS engine.
pub(crate) fn framing_io(err: FramingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_errors_survive_the_io_wrapper() {
        let io = framing_io(FramingError::UnexpectedPacketType(0x17));
        let err = TlsError::from_handshake(io, Peer::Client);

        assert!(matches!(
            err,
            TlsError::PreloginFraming {
                source: FramingError::UnexpectedPacketType(0x17),
                ..
            }
        ));
        assert_eq!(err.fault(), Fault::Client);
    }

    #[test]
    fn certificate_errors_keep_the_rustls_source() {
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, rustls_err);
        let err = TlsError::from_handshake(io, Peer::Server);

        let TlsError::CertificateRejected { source, .. } = &err else {
            panic!("not a certificate error: {err:?}");
        };
        assert_eq!(
            *source,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        assert_eq!(err.fault(), Fault::Server);
    }

    #[test]
    fn a_refused_certificate_is_our_fault() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let io = io::Error::new(io::ErrorKind::InvalidData, alert);
        let err = TlsError::from_handshake(io, Peer::Client);

        assert!(matches!(err, TlsError::OurCertificateRefused { .. }));
        assert_eq!(err.fault(), Fault::Proxy);
    }
}
