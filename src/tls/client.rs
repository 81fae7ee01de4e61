//! TLS client side: the upstream leg toward the database.
//!
//! TLS 1.2 and 1.3 only. By default the server's certificate chain and host
//! name are verified against the system roots (rustls-native-certs) or, when
//! configured, a CA file. `trust_server_certificate` accepts any certificate
//! but still checks the handshake signatures, so the session is at least bound
//! to the key in the certificate shown; the caller logs the warning. SNI is
//! the configured host name (no SNI for an IP address). TDS 8.0 strict mode
//! offers ALPN `tds/8.0`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_rustls::TlsConnector;

use super::certs;
use super::detect::ALPN_TDS_80;
use super::error::TlsError;

/// How to authenticate the upstream server.
#[derive(Debug, Clone, Default)]
pub struct ConnectorOptions {
    /// Host name sent as SNI and checked against the certificate.
    pub host_name: String,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (signatures are still checked).
    pub trust_server_certificate: bool,
}

/// Connector configurations for one upstream server.
#[derive(Debug, Clone)]
pub struct TlsConnectors {
    prelogin: Arc<ClientConfig>,
    strict: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    verifies_certificates: bool,
}

impl TlsConnectors {
    pub fn new(options: &ConnectorOptions) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(options.host_name.clone())
            .map_err(|_| TlsError::InvalidServerName(options.host_name.clone()))?;

        let prelogin = client_config(options)?;
        let mut strict = prelogin.clone();
        strict.alpn_protocols = vec![ALPN_TDS_80.to_vec()];

        Ok(TlsConnectors {
            prelogin: Arc::new(prelogin),
            strict: Arc::new(strict),
            server_name,
            verifies_certificates: !options.trust_server_certificate,
        })
    }

    /// False when any server certificate is accepted: the caller warns.
    pub fn verifies_certificates(&self) -> bool {
        self.verifies_certificates
    }

    /// The name the certificate is checked against, also sent as SNI.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Connector for a TLS handshake inside PRELOGIN packets.
    pub fn prelogin_connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.prelogin))
    }

    /// Connector for TDS 8.0 strict mode (TLS first, ALPN `tds/8.0`).
    pub fn strict_connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.strict))
    }
}

fn client_config(options: &ConnectorOptions) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;

    let config = if options.trust_server_certificate {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(root_store(options)?)
            .with_no_client_auth()
    };
    Ok(config)
}

/// The configured CA file, or the system roots.
fn root_store(options: &ConnectorOptions) -> Result<RootCertStore, TlsError> {
    let certs = match &options.ca_file {
        Some(path) => certs::load_certificates(path)?,
        None => rustls_native_certs::load_native_certs().certs,
    };

    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(TlsError::NoRootCertificates);
    }
    Ok(roots)
}

/// Accepts any server certificate, for `trust_server_certificate = true`.
/// The handshake signatures are still verified against the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_offers_tds_alpn_only_in_strict() {
        let tls = TlsConnectors::new(&ConnectorOptions {
            host_name: "db.example.net".into(),
            trust_server_certificate: true,
            ..Default::default()
        })
        .unwrap();

        assert_eq!(tls.strict.alpn_protocols, vec![b"tds/8.0".to_vec()]);
        assert!(tls.prelogin.alpn_protocols.is_empty());
        assert!(!tls.verifies_certificates());
        assert_eq!(
            tls.server_name(),
            &ServerName::try_from("db.example.net").unwrap()
        );
    }

    #[test]
    fn an_unusable_host_name_is_refused() {
        let err = TlsConnectors::new(&ConnectorOptions {
            host_name: "not a host".into(),
            trust_server_certificate: true,
            ..Default::default()
        })
        .unwrap_err();

        assert!(matches!(err, TlsError::InvalidServerName(name) if name == "not a host"));
    }

    #[test]
    fn a_missing_ca_file_is_a_file_error() {
        let err = TlsConnectors::new(&ConnectorOptions {
            host_name: "localhost".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            trust_server_certificate: false,
        })
        .unwrap_err();

        assert!(matches!(err, TlsError::File { .. }));
    }
}
