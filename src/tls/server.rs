//! TLS server side: the application leg, and the embedded stand-in server.
//!
//! Two rustls configurations share one certificate: one for TLS inside
//! PRELOGIN (TDS 7.x, [MS-TDS] 2.2.6.5) and one for TDS 8.0 strict mode, which
//! accepts ALPN `tds/8.0`. Both allow TLS 1.2 and 1.3 with the aws-lc-rs
//! provider. Clients that only speak TLS 1.0/1.1 cannot connect: rustls does
//! not implement them (keep such a leg plaintext).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::certs::{self, ServerIdentity};
use super::detect::ALPN_TDS_80;
use super::error::TlsError;

/// Acceptor configurations for one certificate.
#[derive(Debug, Clone)]
pub struct TlsAcceptors {
    prelogin: Arc<ServerConfig>,
    strict: Arc<ServerConfig>,
}

impl TlsAcceptors {
    /// Configurations presenting `identity`.
    pub fn new(identity: ServerIdentity) -> Result<Self, TlsError> {
        let mut prelogin = base_config(identity.clone())?;
        // TLS 1.3 tickets follow the handshake; inside PRELOGIN they would
        // arrive after the peer's wrapper switched to bare records, and in
        // login-only mode they would land in the plaintext stream.
        prelogin.send_tls13_tickets = 0;

        let mut strict = base_config(identity)?;
        strict.alpn_protocols = vec![ALPN_TDS_80.to_vec()];

        Ok(TlsAcceptors {
            prelogin: Arc::new(prelogin),
            strict: Arc::new(strict),
        })
    }

    /// Configurations from a PEM certificate chain and key.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        TlsAcceptors::new(certs::load_pem_files(cert_path, key_path)?)
    }

    /// Configurations with a self-signed certificate for `names`, kept in
    /// `data_dir` when one is given (see [`certs::load_or_generate`]).
    pub fn self_signed(names: &[String], data_dir: Option<&Path>) -> Result<Self, TlsError> {
        let identity = match data_dir {
            Some(dir) => certs::load_or_generate(dir, names)?,
            None => certs::generate_self_signed(names)?.identity,
        };

        TlsAcceptors::new(identity)
    }

    /// Acceptor for a TLS handshake inside PRELOGIN packets.
    pub fn prelogin_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.prelogin))
    }

    /// Acceptor for TDS 8.0 strict mode (TLS first, ALPN `tds/8.0`).
    pub fn strict_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.strict))
    }
}

fn base_config(identity: ServerIdentity) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(TlsError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_offers_tds_alpn_and_prelogin_sends_no_tickets() {
        let tls = TlsAcceptors::self_signed(&["localhost".into()], None).unwrap();

        assert_eq!(tls.strict.alpn_protocols, vec![b"tds/8.0".to_vec()]);
        assert!(tls.prelogin.alpn_protocols.is_empty());
        assert_eq!(tls.prelogin.send_tls13_tickets, 0);
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let one = certs::generate_self_signed(&["a".into()]).unwrap().identity;
        let other = certs::generate_self_signed(&["b".into()]).unwrap().identity;

        let mixed = ServerIdentity {
            chain: one.chain,
            key: other.key,
        };
        assert!(matches!(TlsAcceptors::new(mixed), Err(TlsError::Config(_))));
    }
}
