//! Connection-scale mode: many idle, logged-in connections through
//! tdsguard, then the same number straight to the upstream, and the
//! resident memory each costs.
//!
//! Everything runs in this process, so VmRSS holds the clients, the relay
//! and (with the embedded upstream) the sandbox's sessions. The direct
//! phase measures clients plus upstream alone; the difference per
//! connection is what the relay adds. Each phase starts after the previous
//! one's connections are closed and the heap trimmed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::bench::rss::{self, FdLimit};
use crate::bench::scenarios::{Connector, Tiberius};
use crate::bench::targets::Proxy;
use crate::bench::BenchError;
use crate::config::Config;

/// Logins in flight at once while opening; more only queue in the accept
/// backlogs and make logins time out.
const OPENING_PARALLELISM: usize = 32;
/// Descriptors kept free for the runtime, files and the probes.
const FD_MARGIN: u64 = 256;
/// Connections used to count descriptors per connection.
const FD_PROBE_CONNECTIONS: usize = 8;
/// Time for closed connections to be torn down on every leg.
const SETTLE: Duration = Duration::from_millis(500);

/// One phase: N connections to one target.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePhase {
    /// Logins that succeeded.
    pub opened: usize,
    /// Connections that answered `SELECT 1` once all were open.
    pub served: usize,
    pub first_error: Option<String>,
    pub open_seconds: f64,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
    /// RSS growth divided by the connections opened.
    pub rss_per_connection_bytes: Option<f64>,
}

/// The result of `--connections N`.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub requested: usize,
    /// Connections tried: `requested`, unless file descriptors did not
    /// allow it.
    pub attempted: usize,
    pub fd_limit: Option<FdLimit>,
    /// Descriptors this process holds per connection through the relay.
    pub fds_per_connection: u64,
    /// Why fewer than requested were tried.
    pub limited: Option<String>,
    pub through_tdsguard: ScalePhase,
    pub direct: ScalePhase,
    /// (through_tdsguard - direct) RSS per connection: the relay's share.
    pub tdsguard_rss_per_connection_bytes: Option<f64>,
    /// Whether every requested connection logged in and was served.
    pub all_served: bool,
    pub method: &'static str,
}

const METHOD: &str =
    "VmRSS from /proc/self/status before and after opening the connections (after \
glibc malloc_trim). The process holds the tiberius clients, tdsguard and, by default, the embedded \
sandbox, so the through-tdsguard figure covers all three; the direct phase covers clients and \
upstream only, and the difference is the relay's share. Kernel socket buffers are not in VmRSS.";

impl ScaleReport {
    pub fn write_table(&self, out: &mut String) {
        let kib =
            |b: Option<f64>| b.map_or_else(|| "-".to_owned(), |b| format!("{:.1} KiB", b / 1024.0));
        let _ = writeln!(
            out,
            "connection scale: {} requested, {} attempted ({} fds per connection in this \
             process; RLIMIT_NOFILE {})",
            self.requested,
            self.attempted,
            self.fds_per_connection,
            self.fd_limit.map_or_else(
                || "?".to_owned(),
                |l| format!("{} (was {}/{})", l.soft, l.soft_before, l.hard_before)
            )
        );
        if let Some(limited) = &self.limited {
            let _ = writeln!(out, "  not reached: {limited}");
        }
        for (name, p) in [
            ("through tdsguard", &self.through_tdsguard),
            ("direct", &self.direct),
        ] {
            let _ = writeln!(
                out,
                "  {name:<17} opened {:>6}  served {:>6}  in {:>6.1} s  RSS/conn {}{}",
                p.opened,
                p.served,
                p.open_seconds,
                kib(p.rss_per_connection_bytes),
                p.first_error
                    .as_deref()
                    .map(|e| format!("  first error: {e}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "  tdsguard's share: {} per idle connection; all served: {}",
            kib(self.tdsguard_rss_per_connection_bytes),
            self.all_served
        );
    }
}

/// Runs connection-scale mode with `requested` connections through a
/// tdsguard target configured with `config`.
pub async fn run(
    mut config: Config,
    direct: &Connector,
    proxy_rt: &Handle,
    upstream: SocketAddr,
    ca_file: Option<PathBuf>,
    requested: usize,
) -> Result<ScaleReport, BenchError> {
    config.listen.max_connections = config
        .listen
        .max_connections
        .max(requested + FD_PROBE_CONNECTIONS);
    let proxy = Proxy::start(proxy_rt, config, upstream, ca_file).await?;
    let through = Connector {
        addr: proxy.addr(),
        ..direct.clone()
    };

    let fds_per_connection = probe_fds(&through).await?;
    let wanted =
        rss::open_fds().unwrap_or(0) as u64 + FD_MARGIN + fds_per_connection * requested as u64;
    let fd_limit = rss::raise_fd_limit(wanted);
    let (attempted, limited) = budget(requested, fd_limit, fds_per_connection);
    let through_tdsguard = phase(&through, attempted).await;
    let direct = phase(direct, attempted).await;
    proxy.shutdown().await;

    let share = match (
        through_tdsguard.rss_per_connection_bytes,
        direct.rss_per_connection_bytes,
    ) {
        (Some(t), Some(d)) => Some(t - d),
        _ => None,
    };
    Ok(ScaleReport {
        requested,
        attempted,
        fd_limit,
        fds_per_connection,
        all_served: limited.is_none() && through_tdsguard.served == requested,
        limited,
        through_tdsguard,
        direct,
        tdsguard_rss_per_connection_bytes: share,
        method: METHOD,
    })
}

/// Descriptors per relayed connection, counted over a few connections:
/// the client's socket, the relay's two and, in process, the upstream's.
async fn probe_fds(through: &Connector) -> Result<u64, BenchError> {
    let before = rss::open_fds().unwrap_or(0);
    let mut clients = Vec::new();
    for _ in 0..FD_PROBE_CONNECTIONS {
        clients.push(through.connect().await?);
    }
    let after = rss::open_fds().unwrap_or(0);
    close_all(clients).await;
    let per = after.saturating_sub(before).div_ceil(FD_PROBE_CONNECTIONS);
    Ok((per as u64).max(1))
}

/// How many connections the descriptor limit allows, and why fewer than
/// requested when it does not.
fn budget(requested: usize, limit: Option<FdLimit>, per: u64) -> (usize, Option<String>) {
    let Some(limit) = limit else {
        return (requested, None);
    };
    let in_use = rss::open_fds().unwrap_or(0) as u64;
    let free = limit.soft.saturating_sub(in_use + FD_MARGIN);
    let allowed = usize::try_from(free / per).unwrap_or(usize::MAX);
    if allowed >= requested {
        return (requested, None);
    }
    let reason = format!(
        "RLIMIT_NOFILE {} (was soft {}, hard {}; fs.nr_open {}) allows about {allowed} \
         connections at {per} descriptors each in this process",
        limit.soft,
        limit.soft_before,
        limit.hard_before,
        limit
            .nr_open
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    );
    (allowed, Some(reason))
}

/// Opens `count` connections, measures RSS, checks each one answers, closes.
async fn phase(connector: &Connector, count: usize) -> ScalePhase {
    rss::trim_heap();
    let rss_before = rss::rss_bytes();
    let started = Instant::now();
    let (clients, first_error) = open_many(connector, count).await;
    let open_seconds = started.elapsed().as_secs_f64();
    let rss_after = rss::rss_bytes();
    let opened = clients.len();
    let (clients, served) = serve_all(clients).await;
    close_all(clients).await;
    tokio::time::sleep(SETTLE).await;

    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    ScalePhase {
        opened,
        served,
        first_error,
        open_seconds,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_connection_bytes: per,
    }
}

async fn open_many(connector: &Connector, count: usize) -> (Vec<Tiberius>, Option<String>) {
    let gate = Arc::new(Semaphore::new(OPENING_PARALLELISM));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let gate = Arc::clone(&gate);
        let connector = connector.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            connector.connect().await
        });
    }
    let mut clients = Vec::with_capacity(count);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(err)) => {
                first_error.get_or_insert_with(|| err.to_string());
            }
            Err(err) => {
                first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    (clients, first_error)
}

/// Sends `SELECT 1` on every connection once all are open.
async fn serve_all(clients: Vec<Tiberius>) -> (Vec<Tiberius>, usize) {
    let mut kept = Vec::with_capacity(clients.len());
    let mut served = 0;
    for mut client in clients {
        let answered = match client.simple_query("SELECT 1").await {
            Ok(stream) => stream.into_row().await.ok().flatten().is_some(),
            Err(_) => false,
        };
        served += usize::from(answered);
        kept.push(client);
    }
    (kept, served)
}

async fn close_all(clients: Vec<Tiberius>) {
    for client in clients {
        let _ = client.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_cut_by_the_descriptor_limit() {
        let limit = FdLimit {
            soft_before: 1024,
            hard_before: 20_000,
            soft: 20_000,
            hard: 20_000,
            nr_open: None,
        };
        let (n, why) = budget(100, Some(limit), 4);
        assert_eq!((n, why), (100, None));
        let (n, why) = budget(9_000, Some(limit), 4);
        assert!(n < 5_000 && n > 4_000, "{n}");
        assert!(why.expect("reason").contains("RLIMIT_NOFILE 20000"));
    }
}
