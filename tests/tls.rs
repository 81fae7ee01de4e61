//! End-to-end tests of the TLS layer: both roles in process over
//! `tokio::io::duplex` or loopback TCP, and a real driver (tiberius) against
//! the server side.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ProtocolVersion};
use tokio_util::compat::TokioAsyncWriteCompatExt;

use tdsguard::tls::certs::{self, SelfSigned};
use tdsguard::tls::{
    detect, ConnectorOptions, Encryption, Fault, FirstPacket, Peer, PreloginWrapper, TlsAcceptors,
    TlsConnectors, TlsError, Transport, TransportKind,
};

const SMALL_PACKET: usize = 512;

/// A stream that records every byte read from and written to it.
struct Tap<S> {
    inner: S,
    read: Arc<Mutex<Vec<u8>>>,
    written: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone)]
struct TapLog {
    read: Arc<Mutex<Vec<u8>>>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl TapLog {
    fn read(&self) -> Vec<u8> {
        self.read.lock().unwrap().clone()
    }

    fn written(&self) -> Vec<u8> {
        self.written.lock().unwrap().clone()
    }
}

fn tap<S>(inner: S) -> (Tap<S>, TapLog) {
    let log = TapLog {
        read: Arc::default(),
        written: Arc::default(),
    };
    let tap = Tap {
        inner,
        read: Arc::clone(&log.read),
        written: Arc::clone(&log.written),
    };
    (tap, log)
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read
            .lock()
            .unwrap()
            .extend_from_slice(&buf.filled()[before..]);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.written.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A self-signed server certificate for localhost and 127.0.0.1, with its
/// PEM written to a file so clients can trust it as a CA.
struct TestCert {
    _dir: tempfile::TempDir,
    server: TlsAcceptors,
    cert_path: PathBuf,
    generated: SelfSigned,
}

fn test_cert() -> TestCert {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let generated = certs::generate_self_signed(&names).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("ca.pem");
    std::fs::write(&cert_path, &generated.cert_pem).unwrap();

    TestCert {
        server: TlsAcceptors::new(generated.identity.clone()).unwrap(),
        cert_path,
        generated,
        _dir: dir,
    }
}

fn verifying_client(cert: &TestCert, host: &str) -> TlsConnectors {
    TlsConnectors::new(&ConnectorOptions {
        host_name: host.into(),
        ca_file: Some(cert.cert_path.clone()),
        trust_server_certificate: false,
    })
    .unwrap()
}

/// The (status, total length) of the 0x12 packets at the start of `wire`.
fn leading_prelogin_packets(mut wire: &[u8]) -> Vec<(u8, usize)> {
    let mut packets = Vec::new();
    while wire.len() >= 8 && wire[0] == 0x12 {
        let len = usize::from(u16::from_be_bytes([wire[2], wire[3]]));
        packets.push((wire[1], len));
        wire = &wire[len..];
    }
    packets
}

/// A TDS packet of type `kind` with EOM set.
fn tds_packet(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + 8) as u16;
    let mut packet = vec![kind, 0x01];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 1, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// Reads one whole TDS packet.
async fn read_packet<R: AsyncRead + Unpin>(stream: &mut R) -> Vec<u8> {
    let mut packet = vec![0u8; 8];
    stream.read_exact(&mut packet).await.unwrap();
    let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    packet.resize(len, 0);
    stream.read_exact(&mut packet[8..]).await.unwrap();
    packet
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn prelogin_handshake_in_small_packets_then_application_data() {
    let cert = test_cert();
    let client_tls = verifying_client(&cert, "localhost");
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (server_end, wire) = tap(server_end);

    let server_tls = cert.server.clone();
    let server = tokio::spawn(async move {
        let mut t =
            Transport::accept_prelogin(server_end, &server_tls, SMALL_PACKET, Encryption::Full)
                .await
                .unwrap();
        let request = read_packet(&mut t).await;
        t.write_all(&tds_packet(0x04, &pattern(9000)))
            .await
            .unwrap();
        t.flush().await.unwrap();
        (request, t.protocol_version(), t.kind())
    });

    let mut client =
        Transport::connect_prelogin(client_end, &client_tls, SMALL_PACKET, Encryption::Full)
            .await
            .unwrap();
    let request = tds_packet(0x01, b"select 1");
    client.write_all(&request).await.unwrap();
    client.flush().await.unwrap();
    let response = read_packet(&mut client).await;

    let (seen, version, kind) = server.await.unwrap();
    assert_eq!(seen, request);
    assert_eq!(response, tds_packet(0x04, &pattern(9000)));
    assert_eq!(version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(kind, TransportKind::Prelogin);
    assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));

    // The server's first flight (certificate included) spans several full
    // 512-byte packets; EOM marks the last one.
    let server_packets = leading_prelogin_packets(&wire.written());
    assert!(server_packets.len() >= 2, "{server_packets:?}");
    assert_eq!(server_packets[0], (0x00, SMALL_PACKET));
    assert_eq!(server_packets.last().unwrap().0, 0x01);

    // The client's side: wrapped ClientHello, wrapped Finished, then bare
    // TLS application data (0x17).
    let client_packets = leading_prelogin_packets(&wire.read());
    assert!(client_packets.len() >= 2, "{client_packets:?}");
    let wrapped: usize = client_packets.iter().map(|p| p.1).sum();
    assert_eq!(wire.read()[wrapped], 0x17);
}

/// A TLS 1.2-only client over the public wrapper, as SQL Server negotiates.
async fn connect_tls12(
    stream: DuplexStream,
    cert: &TestCert,
    login_only: bool,
) -> Transport<DuplexStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.generated.identity.chain[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let wrapper = PreloginWrapper::new(stream, SMALL_PACKET);
    let mut tls = connector.connect(name, wrapper).await.unwrap();
    tls.get_mut().0.handshake_done(login_only);

    Transport::Prelogin(Box::new(tls.into()))
}

#[tokio::test]
async fn prelogin_handshake_with_tls12() {
    let cert = test_cert();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);

    let server_tls = cert.server.clone();
    let server = tokio::spawn(async move {
        let mut t =
            Transport::accept_prelogin(server_end, &server_tls, SMALL_PACKET, Encryption::Full)
                .await
                .unwrap();
        let request = read_packet(&mut t).await;
        t.write_all(&request).await.unwrap();
        t.flush().await.unwrap();
        t.protocol_version()
    });

    let mut client = connect_tls12(client_end, &cert, false).await;
    let request = tds_packet(0x01, &pattern(3000));
    client.write_all(&request).await.unwrap();
    client.flush().await.unwrap();

    assert_eq!(read_packet(&mut client).await, request);
    assert_eq!(server.await.unwrap(), Some(ProtocolVersion::TLSv1_2));
}

/// Login-only: LOGIN7 over TLS, then plaintext both ways. The client sends
/// its next request right after the login, before the server has read
/// anything, to show that no byte is swallowed by the abandoned session.
async fn login_only_round_trip(
    connect: impl Future<Output = Transport<DuplexStream>>,
    server_end: Tap<DuplexStream>,
    wire: TapLog,
    server_tls: TlsAcceptors,
) {
    let server = tokio::spawn(async move {
        let encryption = Encryption::LoginOnly;
        let accepted =
            Transport::accept_prelogin(server_end, &server_tls, SMALL_PACKET, encryption);
        let mut t = accepted.await.unwrap();
        let login = read_packet(&mut t).await;
        let mut t = t.end_login_encryption().await.unwrap();
        assert_eq!(t.kind(), TransportKind::Plain);

        let batch = read_packet(&mut t).await;
        t.write_all(&tds_packet(0x04, b"LOGINACK-ish"))
            .await
            .unwrap();
        t.flush().await.unwrap();
        (login, batch)
    });

    let mut client = connect.await;
    let login = tds_packet(0x10, &pattern(300));
    client.write_all(&login).await.unwrap();
    let mut client = client.end_login_encryption().await.unwrap();
    let batch = tds_packet(0x01, b"plaintext batch");
    client.write_all(&batch).await.unwrap();
    client.flush().await.unwrap();
    let response = read_packet(&mut client).await;

    assert_eq!(server.await.unwrap(), (login.clone(), batch.clone()));
    assert_eq!(response, tds_packet(0x04, b"LOGINACK-ish"));

    // On the wire: the login is encrypted, what follows is not.
    let from_client = wire.read();
    assert!(!contains(&from_client, &login[8..]));
    assert!(from_client.ends_with(&batch));
    assert!(wire.written().ends_with(&response));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn login_only_downgrade_tls13() {
    let cert = test_cert();
    let client_tls = verifying_client(&cert, "localhost");
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (server_end, wire) = tap(server_end);

    let connect = async {
        let encryption = Encryption::LoginOnly;
        let connected =
            Transport::connect_prelogin(client_end, &client_tls, SMALL_PACKET, encryption);
        connected.await.unwrap()
    };
    login_only_round_trip(connect, server_end, wire, cert.server.clone()).await;
}

#[tokio::test]
async fn login_only_downgrade_tls12() {
    let cert = test_cert();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (server_end, wire) = tap(server_end);

    let connect = connect_tls12(client_end, &cert, true);
    login_only_round_trip(connect, server_end, wire, cert.server.clone()).await;
}

#[tokio::test]
async fn downgrading_a_full_tls_leg_is_refused() {
    let cert = test_cert();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);

    let server_tls = cert.server.clone();
    let server = tokio::spawn(async move {
        let encryption = Encryption::Full;
        Transport::accept_prelogin(server_end, &server_tls, SMALL_PACKET, encryption).await
    });
    let client = connect_tls12(client_end, &cert, false).await;
    let _server = server.await.unwrap().unwrap();

    let err = client.end_login_encryption().await.unwrap_err();
    assert!(matches!(err, TlsError::WrongState(_)));
}

#[tokio::test]
async fn tls_data_after_the_login_fails_the_downgrade() {
    let cert = test_cert();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);

    let server_tls = cert.server.clone();
    let server = tokio::spawn(async move {
        let encryption = Encryption::LoginOnly;
        let accepted =
            Transport::accept_prelogin(server_end, &server_tls, SMALL_PACKET, encryption);
        let mut t = accepted.await.unwrap();
        let mut first = [0u8; 4];
        t.read_exact(&mut first).await.unwrap();
        t.end_login_encryption().await
    });

    // Both packets travel in one TLS record; the server reads only part.
    let mut client = connect_tls12(client_end, &cert, true).await;
    let mut two = tds_packet(0x10, b"login");
    two.extend_from_slice(&tds_packet(0x01, b"batch"));
    client.write_all(&two).await.unwrap();
    client.flush().await.unwrap();

    let err = server.await.unwrap().unwrap_err();
    assert!(matches!(
        err,
        TlsError::DataAfterLogin { peer: Peer::Client }
    ));
    assert_eq!(err.fault(), Fault::Client);
}

#[tokio::test]
async fn strict_mode_over_tcp_with_detection_and_alpn() {
    let cert = test_cert();
    let client_tls = verifying_client(&cert, "127.0.0.1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let server_tls = cert.server.clone();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (first, replay) = detect(socket).await.unwrap();
        let mut t = Transport::accept_strict(replay, &server_tls).await.unwrap();
        let prelogin = read_packet(&mut t).await;
        t.write_all(&tds_packet(0x04, b"prelogin response"))
            .await
            .unwrap();
        t.flush().await.unwrap();
        (first, prelogin, t.alpn_protocol().map(<[u8]>::to_vec))
    });

    let socket = TcpStream::connect(addr).await.unwrap();
    let mut client = Transport::connect_strict(socket, &client_tls)
        .await
        .unwrap();
    let prelogin = tds_packet(0x12, b"prelogin inside tls");
    client.write_all(&prelogin).await.unwrap();
    client.flush().await.unwrap();
    let response = read_packet(&mut client).await;

    let (first, seen, server_alpn) = server.await.unwrap();
    assert_eq!(
        first,
        FirstPacket::TlsClientHello {
            offers_tds_80: true
        }
    );
    assert_eq!(seen, prelogin);
    assert_eq!(response, tds_packet(0x04, b"prelogin response"));
    assert_eq!(server_alpn.as_deref(), Some(&b"tds/8.0"[..]));
    assert_eq!(client.alpn_protocol(), Some(&b"tds/8.0"[..]));
    assert_eq!(client.kind(), TransportKind::Strict);
}

/// Runs a prelogin handshake and returns both sides' results.
async fn handshake_with(
    server_tls: TlsAcceptors,
    client_tls: TlsConnectors,
) -> (
    Result<Transport<DuplexStream>, TlsError>,
    Result<Transport<DuplexStream>, TlsError>,
) {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let encryption = Encryption::Full;
        Transport::accept_prelogin(server_end, &server_tls, SMALL_PACKET, encryption).await
    });

    let encryption = Encryption::Full;
    let client =
        Transport::connect_prelogin(client_end, &client_tls, SMALL_PACKET, encryption).await;
    (client, server.await.unwrap())
}

/// A CA certificate unrelated to the server's certificate.
fn other_ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Unrelated Test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected() {
    let cert = test_cert();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other_ca_pem()).unwrap();
    let client_tls = TlsConnectors::new(&ConnectorOptions {
        host_name: "localhost".into(),
        ca_file: Some(other_ca),
        trust_server_certificate: false,
    })
    .unwrap();

    let (client, server) = handshake_with(cert.server.clone(), client_tls).await;

    let err = client.unwrap_err();
    let TlsError::CertificateRejected { peer, source } = &err else {
        panic!("expected a certificate error, got {err:?}");
    };
    assert_eq!(*peer, Peer::Server);
    assert_eq!(
        *source,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
    assert_eq!(err.fault(), Fault::Server);
    assert!(std::error::Error::source(&err).is_some());

    // The server learns through the client's alert that its certificate is
    // not trusted there.
    let server_err = server.unwrap_err();
    assert!(
        matches!(
            server_err,
            TlsError::OurCertificateRefused {
                peer: Peer::Client,
                ..
            }
        ),
        "{server_err:?}"
    );
    assert_eq!(server_err.fault(), Fault::Proxy);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_rejected() {
    let cert = test_cert();
    let client_tls = verifying_client(&cert, "db.example.net");

    let (client, _server) = handshake_with(cert.server.clone(), client_tls).await;

    let err = client.unwrap_err();
    assert!(
        matches!(
            &err,
            TlsError::CertificateRejected {
                source: rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                ),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn trust_server_certificate_accepts_a_self_signed_certificate() {
    let cert = test_cert();
    let client_tls = TlsConnectors::new(&ConnectorOptions {
        host_name: "db.example.net".into(),
        ca_file: None,
        trust_server_certificate: true,
    })
    .unwrap();

    let (client, server) = handshake_with(cert.server.clone(), client_tls).await;

    let mut client = client.unwrap();
    let mut server = server.unwrap();
    client.write_all(&tds_packet(0x01, b"ping")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(read_packet(&mut server).await, tds_packet(0x01, b"ping"));
}

/// Reads a whole TDS message (packets up to EOM) and returns its packets.
async fn read_message<R: AsyncRead + Unpin>(stream: &mut R) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    loop {
        let packet = read_packet(stream).await;
        let eom = packet[1] & 0x01 != 0;
        packets.push(packet);
        if eom {
            return packets;
        }
    }
}

/// A PRELOGIN response ([MS-TDS] 2.2.6.5): VERSION, ENCRYPTION, MARS.
fn prelogin_response(encryption: u8) -> Vec<u8> {
    let payload = [
        0x00, 0x00, 0x10, 0x00, 0x06, // VERSION at 16, 6 bytes
        0x01, 0x00, 0x16, 0x00, 0x01, // ENCRYPTION at 22, 1 byte
        0x04, 0x00, 0x17, 0x00, 0x01, // MARS at 23, 1 byte
        0xFF, // terminator
        0x10, 0x00, 0x07, 0xD0, 0x00, 0x00, // version 16.0.2000.0
        encryption, 0x00, // encryption, MARS off
    ];
    let mut packet = tds_packet(0x04, &payload);
    packet[6] = 1;
    packet
}

/// Starts tiberius against a listener and returns the accepted socket; the
/// driver task is returned so the test can stop it.
async fn tiberius_against_listener(
    encryption: tiberius::EncryptionLevel,
) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let driver = tokio::spawn(async move {
        let mut config = tiberius::Config::new();
        config.host("127.0.0.1");
        config.port(port);
        config.authentication(tiberius::AuthMethod::sql_server("app", "not-a-secret"));
        config.encryption(encryption);
        config.trust_cert();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = tiberius::Client::connect(config, tcp.compat_write()).await;
    });

    let (socket, _) = listener.accept().await.unwrap();
    (socket, driver)
}

#[tokio::test]
async fn tiberius_completes_the_prelogin_handshake() {
    let cert = test_cert();
    let (mut socket, driver) = tiberius_against_listener(tiberius::EncryptionLevel::Required).await;

    let prelogin = read_message(&mut socket).await;
    assert_eq!(prelogin[0][0], 0x12);
    socket.write_all(&prelogin_response(0x01)).await.unwrap();

    // 512-byte packets: the driver must reassemble our multi-packet flight.
    let (socket, wire) = tap(socket);

    let encryption = Encryption::Full;
    let mut t = Transport::accept_prelogin(socket, &cert.server, SMALL_PACKET, encryption)
        .await
        .unwrap();
    let login = read_message(&mut t).await;
    driver.abort();

    assert_eq!(login[0][0], 0x10, "LOGIN7 packet type");
    assert_eq!(t.kind(), TransportKind::Prelogin);
    assert!(leading_prelogin_packets(&wire.written()).len() >= 2);
}

#[tokio::test]
async fn tiberius_login_only_encryption_downgrades_cleanly() {
    let cert = test_cert();
    let (mut socket, driver) = tiberius_against_listener(tiberius::EncryptionLevel::Off).await;

    read_message(&mut socket).await;
    socket.write_all(&prelogin_response(0x00)).await.unwrap();

    let encryption = Encryption::LoginOnly;
    let mut t = Transport::accept_prelogin(socket, &cert.server, 4096, encryption)
        .await
        .unwrap();
    let login = read_message(&mut t).await;
    let t = t.end_login_encryption().await.unwrap();
    driver.abort();

    assert_eq!(login[0][0], 0x10, "LOGIN7 packet type");
    assert_eq!(t.kind(), TransportKind::Plain);
}

#[tokio::test]
async fn tiberius_strict_mode_is_detected_and_accepted() {
    let cert = test_cert();
    let (socket, driver) = tiberius_against_listener(tiberius::EncryptionLevel::Strict).await;

    let (first, replay) = detect(socket).await.unwrap();
    assert_eq!(
        first,
        FirstPacket::TlsClientHello {
            offers_tds_80: true
        }
    );
    let mut t = Transport::accept_strict(replay, &cert.server)
        .await
        .unwrap();

    let prelogin = read_message(&mut t).await;
    t.write_all(&prelogin_response(0x01)).await.unwrap();
    t.flush().await.unwrap();
    let login = read_message(&mut t).await;
    driver.abort();

    assert_eq!(prelogin[0][0], 0x12);
    assert_eq!(login[0][0], 0x10, "LOGIN7 packet type");
    assert_eq!(t.alpn_protocol(), Some(&b"tds/8.0"[..]));
}

/// The TLS records at the start of `wire`: (content type, length).
fn tls_records(mut wire: &[u8]) -> Vec<(u8, usize)> {
    let mut records = Vec::new();
    while wire.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        records.push((wire[0], len));
        wire = &wire[5 + len..];
    }
    records
}

#[tokio::test]
async fn each_packet_travels_in_one_tls_record_even_under_backpressure() {
    let cert = test_cert();
    let client_tls = verifying_client(&cert, "localhost");
    // A small pipe, so the writer runs ahead of the reader and rustls holds
    // unsent records when the next packet is written.
    let (client_end, server_end) = tokio::io::duplex(1024);
    let (server_end, wire) = tap(server_end);
    let sizes = [4096usize, 16383, 100, 16383, 16383, 8000, 16383, 16383, 512];
    let packets: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&size| tds_packet(0x01, &pattern(size - 8)))
        .collect();

    let server_tls = cert.server.clone();
    let expected = packets.clone();
    let server = tokio::spawn(async move {
        let encryption = Encryption::Full;
        let accepted = Transport::accept_prelogin(server_end, &server_tls, 4096, encryption);
        let mut t = accepted.await.unwrap();
        for packet in &expected {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(&read_packet(&mut t).await, packet);
        }
    });

    let encryption = Encryption::Full;
    let connecting = Transport::connect_prelogin(client_end, &client_tls, 4096, encryption);
    let mut client = connecting.await.unwrap();
    for packet in &packets {
        client.write_all(packet).await.unwrap();
    }
    client.flush().await.unwrap();
    server.await.unwrap();

    // TLS 1.3 adds 17 bytes per record: 16 of AEAD tag, 1 of content type.
    let from_client = wire.read();
    let wrapped: usize = leading_prelogin_packets(&from_client)
        .iter()
        .map(|p| p.1)
        .sum();
    let records = tls_records(&from_client[wrapped..]);
    let expected: Vec<(u8, usize)> = sizes.iter().map(|&size| (0x17, size + 17)).collect();
    assert_eq!(records, expected);
}
