//! Pass-through overhead: the same tiberius workload directly against a
//! scripted TLS upstream and through the proxy, measured in one run and
//! printed side by side. No assertion on the figures: run it on purpose,
//! in release mode, with
//! `cargo test --release --test relay_overhead -- --ignored --nocapture`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use common::fake_server::{FakeServer, Reply};
use common::proxy::TestProxy;
use common::tiberius_scenario::Tiberius;

const BIG_ROWS: usize = 100_000;
const ROUND_TRIPS: usize = 2_000;

async fn connect(addr: SocketAddr, level: EncryptionLevel) -> Tiberius {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(addr.port());
    config.authentication(AuthMethod::sql_server("sa", "x"));
    config.trust_cert();
    config.encryption(level);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    Client::connect(config, tcp.compat_write())
        .await
        .expect("login")
}

async fn big_select(client: &mut Tiberius) -> Duration {
    let start = Instant::now();
    let rows = client
        .simple_query("SELECT id, name FROM big")
        .await
        .expect("query")
        .into_first_result()
        .await
        .expect("rows");
    assert_eq!(rows.len(), BIG_ROWS);
    start.elapsed()
}

async fn round_trips(client: &mut Tiberius) -> Duration {
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        let rows = client
            .simple_query("SELECT 1")
            .await
            .expect("query")
            .into_first_result()
            .await
            .expect("rows");
        assert_eq!(rows.len(), 1);
    }
    start.elapsed()
}

struct Figures {
    big: Duration,
    small: Duration,
}

/// Best of three of each workload against `addr`.
async fn measure(big: SocketAddr, small: SocketAddr, level: EncryptionLevel) -> Figures {
    let mut figures = Figures {
        big: Duration::MAX,
        small: Duration::MAX,
    };
    let mut big_client = connect(big, level).await;
    let mut small_client = connect(small, level).await;
    for _ in 0..3 {
        figures.big = figures.big.min(big_select(&mut big_client).await);
        figures.small = figures.small.min(round_trips(&mut small_client).await);
    }
    figures
}

async fn proxy(server: &FakeServer) -> TestProxy {
    let ca = Some(server.cert_pem.clone());
    TestProxy::start_with(server.addr, ca, |_| {}).await
}

fn report(name: &str, direct: &Figures, through: &Figures) {
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    println!(
        "{name:<28} {BIG_ROWS} rows: direct {:>8.1} ms, proxy {:>8.1} ms, ratio {:.2} | \
         {ROUND_TRIPS} round trips: direct {:>8.1} ms, proxy {:>8.1} ms, ratio {:.2}",
        direct.big.as_secs_f64() * 1e3,
        through.big.as_secs_f64() * 1e3,
        ratio(direct.big, through.big),
        direct.small.as_secs_f64() * 1e3,
        through.small.as_secs_f64() * 1e3,
        ratio(direct.small, through.small),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on purpose in release mode"]
async fn relay_overhead() {
    let big = FakeServer::start(|_| Reply::Rows(BIG_ROWS)).await;
    let small = FakeServer::start(|_| Reply::Rows(1)).await;
    let big_proxy = proxy(&big).await;
    let small_proxy = proxy(&small).await;

    let direct = measure(big.addr, small.addr, EncryptionLevel::Required).await;
    let plain = measure(
        big_proxy.addr,
        small_proxy.addr,
        EncryptionLevel::NotSupported,
    )
    .await;
    let tls = measure(big_proxy.addr, small_proxy.addr, EncryptionLevel::Required).await;

    let release = !cfg!(debug_assertions);
    println!("build: {}", if release { "release" } else { "debug" });
    println!("upstream: TLS to a scripted server on loopback; direct client uses TLS too");
    report("app leg plaintext", &direct, &plain);
    report("app leg full TLS", &direct, &tls);
}
