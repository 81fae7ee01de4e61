//! One measurement: `concurrency` workers, each with its own connection,
//! send a scenario's requests to one target for a time or a count, and
//! every request's latency is kept.
//!
//! Latencies are kept as a plain vector of nanoseconds and sorted for the
//! percentiles: at the rates reachable here (well under a million requests
//! per measurement) that is a few megabytes and exact, so no histogram
//! crate is needed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::bench::rss;
use crate::bench::scenarios::{self, Connector, Scenario, Session};
use crate::bench::{BenchError, LOAD_THREADS, PROXY_THREADS, UPSTREAM_THREADS};

/// How long or how much one round of one target runs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub time: Duration,
    pub requests: Option<u64>,
}

impl Budget {
    /// The whole budget of a target divided over `rounds`.
    pub fn per_round(time: Duration, requests: Option<u64>, rounds: u32) -> Budget {
        let rounds = rounds.max(1);
        Budget {
            time: time / rounds,
            requests: requests.map(|n| n.div_ceil(u64::from(rounds)).max(1)),
        }
    }
}

/// What a target did over one or more rounds.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Latency of every request, nanoseconds.
    pub latencies: Vec<u64>,
    pub rows: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall time of the timed part.
    pub elapsed: Duration,
    /// CPU time of the whole process during the timed part.
    pub cpu: Duration,
    /// CPU time per thread group during the timed part.
    pub cpu_by_group: BTreeMap<&'static str, Duration>,
    /// RSS growth from opening the connections, summed over rounds.
    pub rss_growth: i64,
    /// Connections opened, summed over rounds.
    pub connections: u64,
    /// 1-minute load average at the end of the last round.
    pub load_average: Option<f64>,
}

impl Sample {
    /// Adds another round.
    pub fn absorb(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.rows += other.rows;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
        for (group, cpu) in other.cpu_by_group {
            *self.cpu_by_group.entry(group).or_insert(Duration::ZERO) += cpu;
        }
        self.rss_growth += other.rss_growth;
        self.connections += other.connections;
        self.load_average = other.load_average.or(self.load_average);
    }

    pub fn requests(&self) -> u64 {
        self.latencies.len() as u64
    }
}

/// The thread group of a thread name.
fn group(name: &str) -> &'static str {
    match name {
        n if n.starts_with(LOAD_THREADS) => "load",
        n if n.starts_with(PROXY_THREADS) => "proxy",
        n if n.starts_with(UPSTREAM_THREADS) => "upstream",
        _ => "other",
    }
}

fn cpu_groups() -> BTreeMap<&'static str, Duration> {
    let mut groups = BTreeMap::new();
    for (name, cpu) in rss::cpu_by_thread_name() {
        *groups.entry(group(&name)).or_insert(Duration::ZERO) += cpu;
    }
    groups
}

fn difference(
    after: BTreeMap<&'static str, Duration>,
    before: &BTreeMap<&'static str, Duration>,
) -> BTreeMap<&'static str, Duration> {
    after
        .into_iter()
        .map(|(g, cpu)| {
            (
                g,
                cpu.saturating_sub(before.get(g).copied().unwrap_or_default()),
            )
        })
        .collect()
}

/// What one worker brings back.
#[derive(Default)]
struct WorkerResult {
    latencies: Vec<u64>,
    rows: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Shared between the workers of one measurement.
struct Shared {
    scenario: Arc<Scenario>,
    connector: Connector,
    opened: Barrier,
    go: Barrier,
    deadline: std::sync::OnceLock<Instant>,
    issued: AtomicU64,
    limit: Option<u64>,
}

/// Runs one round against one target. Connections are opened and warmed
/// up with one request each before the clock starts.
pub async fn run(
    scenario: &Arc<Scenario>,
    connector: &Connector,
    concurrency: usize,
    budget: Budget,
) -> Result<Sample, BenchError> {
    let concurrency = concurrency.max(1);
    rss::trim_heap();
    let rss_before = rss::rss_bytes();
    let shared = Arc::new(Shared {
        scenario: Arc::clone(scenario),
        connector: connector.clone(),
        opened: Barrier::new(concurrency + 1),
        go: Barrier::new(concurrency + 1),
        deadline: std::sync::OnceLock::new(),
        issued: AtomicU64::new(0),
        limit: budget.requests,
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();

    shared.opened.wait().await;
    let rss_after = rss::rss_bytes();
    let cpu_before = rss::process_cpu();
    let groups_before = cpu_groups();
    let start = Instant::now();
    let _ = shared.deadline.set(start + budget.time);
    shared.go.wait().await;

    let mut sample = Sample::default();
    for worker in workers {
        let result = worker
            .await
            .map_err(|e| BenchError::Setup(format!("worker task: {e}")))??;
        sample.latencies.extend(result.latencies);
        sample.rows += result.rows;
        sample.errors += result.errors;
        sample.first_error = sample.first_error.take().or(result.first_error);
    }
    sample.elapsed = start.elapsed();
    sample.cpu = rss::process_cpu().saturating_sub(cpu_before);
    sample.cpu_by_group = difference(cpu_groups(), &groups_before);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        sample.rss_growth = after as i64 - before as i64;
    }
    sample.connections = concurrency as u64;
    sample.load_average = rss::load_average();
    Ok(sample)
}

/// One worker: open and warm up, wait for the start, then send requests
/// until the deadline or the shared count is reached. A worker that cannot
/// open its connection still passes both barriers, then reports the error.
async fn worker(shared: Arc<Shared>) -> Result<WorkerResult, BenchError> {
    let opened = open(&shared).await;
    shared.opened.wait().await;
    shared.go.wait().await;
    let mut session = opened?;

    let deadline = shared.deadline.get().copied().unwrap_or_else(Instant::now);
    let mut result = WorkerResult::default();
    loop {
        if Instant::now() >= deadline || !take_ticket(&shared) {
            break;
        }
        let started = Instant::now();
        let outcome = scenarios::request(&shared.scenario, &mut session, &shared.connector).await;
        let took = started.elapsed();
        match outcome {
            Ok(rows) => {
                result
                    .latencies
                    .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                result.rows += rows;
            }
            Err(err) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| err.to_string());
                break;
            }
        }
    }
    if let Some(client) = session.client.take() {
        let _ = client.close().await;
    }
    Ok(result)
}

async fn open(shared: &Shared) -> Result<Session, BenchError> {
    let mut session = Session::open(&shared.scenario, &shared.connector).await?;
    if !shared.scenario.connects_per_request() {
        scenarios::request(&shared.scenario, &mut session, &shared.connector).await?;
    }
    Ok(session)
}

/// Whether the count allows one more request.
fn take_ticket(shared: &Shared) -> bool {
    match shared.limit {
        None => true,
        Some(limit) => shared.issued.fetch_add(1, Ordering::Relaxed) < limit,
    }
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(500));
        assert_eq!(quantile(&sorted, 0.99), Some(990));
        assert_eq!(quantile(&sorted, 0.999), Some(999));
        assert_eq!(quantile(&sorted, 1.0), Some(1000));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.999), Some(7));
    }

    #[test]
    fn budget_splits_over_rounds() {
        let b = Budget::per_round(Duration::from_secs(9), Some(10), 3);
        assert_eq!(b.time, Duration::from_secs(3));
        assert_eq!(b.requests, Some(4));
    }

    #[test]
    fn thread_names_map_to_groups() {
        assert_eq!(group("tg-proxy"), "proxy");
        assert_eq!(group("tg-upstream"), "upstream");
        assert_eq!(group("tg-load"), "load");
        assert_eq!(group("main"), "other");
    }
}
