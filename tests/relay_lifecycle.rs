//! Redirects, the connection limit and shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use common::fake_server::{FakeServer, Reply};
use common::proxy::TestProxy;
use common::raw_client::{error_messages, RawClient};
use common::sandbox::{TestSandbox, PASSWORD};
use common::tiberius_scenario::Tiberius;
use tdsguard::sandbox::{RoutingTarget, TlsSource};
use tdsguard::tds::token::{EnvChange, Token};

async fn tiberius(addr: SocketAddr) -> Tiberius {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(addr.port());
    config.authentication(AuthMethod::sql_server("sa", PASSWORD));
    config.database("tdsguard");
    config.trust_cert();
    config.encryption(EncryptionLevel::Required);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    Client::connect(config, tcp.compat_write())
        .await
        .expect("login")
}

async fn count_rows(client: &mut Tiberius, table: &str) -> Option<i32> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let row = client.query(sql, &[]).await.ok()?.into_row().await.ok()??;
    row.get::<i32, _>(0)
}

/// A sandbox using `other`'s certificate, so one CA file trusts both.
fn same_certificate(other: &TestSandbox) -> TlsSource {
    let dir = other
        .cert_pem()
        .parent()
        .expect("certificate directory")
        .to_path_buf();
    TlsSource::PemFiles {
        cert: dir.join("tls-cert.pem"),
        key: dir.join("tls-key.pem"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_redirect_is_followed_and_hidden_from_the_app() {
    let target = TestSandbox::start().await;
    let front = TestSandbox::start_with(|options| {
        options.tls = same_certificate(&target);
        options.routing = Some(RoutingTarget {
            host: "127.0.0.1".into(),
            port: target.addr().port(),
        });
    })
    .await;
    let proxy = TestProxy::start_with(front.addr(), Some(target.cert_pem()), |_| {}).await;

    let mut raw = RawClient::connect(proxy.addr).await;
    raw.prelogin(false).await;
    let tokens = raw.login(PASSWORD).await;
    assert!(
        tokens.iter().any(|t| matches!(t, Token::LoginAck(_))),
        "{:?}",
        error_messages(&tokens)
    );
    let routing = tokens
        .iter()
        .any(|t| matches!(t, Token::EnvChange(EnvChange::Routing { .. })));
    assert!(!routing, "the routing token reached the application");
    drop(raw);

    let mut app = tiberius(proxy.addr).await;
    app.simple_query("CREATE TABLE dbo.redirected (id int)")
        .await
        .expect("create")
        .into_results()
        .await
        .expect("create done");
    app.execute("INSERT INTO dbo.redirected (id) VALUES (@P1)", &[&7i32])
        .await
        .expect("insert");
    drop(app);

    let mut direct = tiberius(target.addr()).await;
    assert_eq!(count_rows(&mut direct, "dbo.redirected").await, Some(1));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_redirect_loop_is_an_error_the_app_can_show() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("address").port()
    };
    let looping = TestSandbox::start_with(|options| {
        options.listen = SocketAddr::from(([127, 0, 0, 1], port));
        options.routing = Some(RoutingTarget {
            host: "127.0.0.1".into(),
            port,
        });
    })
    .await;
    let proxy = TestProxy::start_with(looping.addr(), Some(looping.cert_pem()), |config| {
        config.upstream.max_redirects = 2;
    })
    .await;
    let mut raw = RawClient::connect(proxy.addr).await;
    raw.prelogin(false).await;
    let tokens = raw.login(PASSWORD).await;
    let errors = error_messages(&tokens);
    assert!(errors.iter().any(|e| e.contains("redirect")), "{errors:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn relay_max_connections_holds_further_clients_back() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = TestProxy::start_with(server.addr, Some(server.cert_pem.clone()), |config| {
        config.listen.max_connections = 1;
    })
    .await;
    let mut first = RawClient::connect(proxy.addr).await;
    first.prelogin(false).await;

    let mut second = RawClient::connect(proxy.addr).await;
    second
        .send_message(
            tdsguard::tds::packet::PacketType::PreLogin,
            &prelogin_payload(),
        )
        .await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), second.tcp.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the second client was served while the first held the only slot"
    );

    drop(first);
    let answer = second
        .read_message()
        .await
        .expect("served once the slot is free");
    assert!(!answer.is_empty());
    drop(second);
    proxy.shutdown().await;
}

fn prelogin_payload() -> Vec<u8> {
    let mut request = tdsguard::tds::prelogin::PreLogin::new();
    request.set_encryption(tdsguard::tds::prelogin::Encryption::NotSupported, false);
    let mut out = bytes::BytesMut::new();
    request.encode(&mut out).expect("encode");
    out.to_vec()
}

#[tokio::test]
async fn relay_shutdown_stops_accepting_and_drains() {
    let server = FakeServer::start(|_| Reply::Rows(1)).await;
    let proxy = TestProxy::start_with(server.addr, Some(server.cert_pem.clone()), |config| {
        config.listen.shutdown_grace_ms = 60_000;
    })
    .await;
    let addr = proxy.addr;
    let mut client = RawClient::connect(addr).await;
    client.prelogin(false).await;
    client.login("x").await;

    let stopping = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );

    client.send_batch("SELECT 1").await;
    let message = client
        .read_message()
        .await
        .expect("the open session still works");
    assert!(message.ends_with(&common::fake_server::done(0x10, 1)));
    assert!(!stopping.is_finished());
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("drained once the last session closed")
        .expect("join");
}
