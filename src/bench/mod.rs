//! `tdsguard bench`: a load generator that measures what tdsguard costs.
//!
//! Each scenario runs the same tiberius requests against three targets in
//! alternation: the upstream directly, a byte-copy relay in front of it
//! (the ceiling of any proxy on this machine) and tdsguard's relay with the
//! production configuration and TLS toward the upstream.
//!
//! - [`scenarios`]: the workloads and the tables they need.
//! - [`encryption`]: keys for the tdsguard target and the check that it
//!   really encrypted a scenario's columns.
//! - [`targets`] and [`byte_copy`]: what the requests go through.
//! - [`measure`]: running one workload against one target.
//! - [`scale`]: many idle logged-in connections and their memory.
//! - [`report`] and [`plot`]: the table, JSON and SVG outputs; [`goals`]
//!   judges the project's performance goals from them.
//! - [`rss`]: memory, CPU and file-descriptor probes.
//!
//! Everything runs in this process on three named runtimes (`tg-load`,
//! `tg-proxy`, `tg-upstream`), so CPU time can be split per thread group.

pub mod byte_copy;
pub mod encryption;
pub mod goals;
pub mod measure;
pub mod plot;
pub mod report;
pub mod rss;
pub mod scale;
pub mod scenarios;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tiberius::EncryptionLevel;
use tokio::runtime::{Handle, Runtime};

use crate::bench::encryption::EncryptionCheck;
use crate::bench::measure::{Budget, Sample};
use crate::bench::report::{Report, ScenarioReport, Settings};
use crate::bench::scenarios::{Connector, Scenario};
use crate::bench::targets::{Proxy, TargetKind};
use crate::config::{ColumnConfig, Config, SandboxUser};

/// Thread-name prefixes of the three runtimes (at most 15 bytes: Linux
/// truncates thread names there).
pub const LOAD_THREADS: &str = "tg-load";
pub const PROXY_THREADS: &str = "tg-proxy";
pub const UPSTREAM_THREADS: &str = "tg-upstream";

/// Errors of `tdsguard bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        source: tiberius::error::Error,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("unexpected result: {0}")]
    WrongResult(&'static str),
    #[error("{0}")]
    Setup(String),
    #[error("writing {path}: {message}")]
    Output { path: PathBuf, message: String },
}

impl BenchError {
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
        move |source| BenchError::Io { what, source }
    }

    pub fn sql(what: &'static str) -> impl FnOnce(tiberius::error::Error) -> BenchError {
        move |source| BenchError::Sql { what, source }
    }
}

/// An upstream given with `--server`.
#[derive(Clone)]
pub struct ServerTarget {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
}

impl std::fmt::Debug for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTarget")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenario names to run; every scenario when empty.
    pub scenarios: Vec<String>,
    /// Concurrent connections (one worker each) per measurement.
    pub concurrency: Vec<usize>,
    /// Time per target per scenario and concurrency, split over the rounds.
    pub duration: Duration,
    /// Requests per target instead of a time, split over the rounds.
    pub requests: Option<u64>,
    /// Times the three targets take turns.
    pub rounds: u32,
    /// `--server`; the embedded sandbox when `None`.
    pub server: Option<ServerTarget>,
    /// TLS the load generator asks for on every target.
    pub encryption: EncryptionLevel,
    /// Worker threads of the proxy runtime (relays and nothing else).
    pub proxy_threads: usize,
    /// Connection-scale mode: this many idle connections instead of the
    /// scenarios.
    pub connections: Option<usize>,
    /// Run the scenarios (off in connection-scale mode, on in smoke runs,
    /// which do both).
    pub run_scenarios: bool,
    /// Rows of the large SELECT (smaller in smoke runs).
    pub select_rows: u32,
    /// The proxy configuration tdsguard runs with.
    pub config: Config,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// The command line, recorded in the report.
    pub command: String,
}

/// The runtimes: load generator, relays and embedded upstream.
struct Runtimes {
    load: Runtime,
    proxy: Runtime,
    upstream: Runtime,
}

impl Runtimes {
    fn build(proxy_threads: usize) -> Result<Runtimes, BenchError> {
        Ok(Runtimes {
            load: runtime(LOAD_THREADS, 1)?,
            proxy: runtime(PROXY_THREADS, proxy_threads.max(1))?,
            upstream: runtime(UPSTREAM_THREADS, 1)?,
        })
    }
}

/// A runtime whose threads, blocking ones included, carry `name` and live
/// for the whole run (an exited thread's CPU time is no longer visible).
fn runtime(name: &'static str, workers: usize) -> Result<Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
        .map_err(BenchError::io("starting a runtime"))
}

/// The upstream and how to reach it.
struct Stack {
    upstream: SocketAddr,
    ca_file: Option<PathBuf>,
    direct: Connector,
    sandbox: Option<crate::sandbox::SandboxHandle>,
    /// The company key the tdsguard target loads, or why there is none
    /// (then a mapped scenario cannot be encrypted).
    keys: Result<Option<PathBuf>, String>,
    dir: WorkDir,
}

impl Stack {
    /// The tdsguard target's configuration with `columns` mapped and the
    /// bench's company key, if it made one.
    fn proxy_config(&self, options: &BenchOptions, columns: &[ColumnConfig]) -> Config {
        let key_file = self.keys.as_ref().ok().and_then(Option::as_deref);
        targets::proxy_config(&options.config, self.dir.path(), columns, key_file)
    }
}

/// A private directory for the sandbox's data and the generated
/// certificates and keys, removed when the run ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir, BenchError> {
        use rand::Rng;

        let name = format!(
            "tdsguard-bench-{}-{:016x}",
            std::process::id(),
            rand::thread_rng().gen::<u64>()
        );
        let path = std::env::temp_dir().join(name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&path)
            .map_err(BenchError::io("creating a temporary directory"))?;
        Ok(WorkDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark and returns its report.
pub fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    let runtimes = Runtimes::build(options.proxy_threads)?;
    let handles = (
        runtimes.proxy.handle().clone(),
        runtimes.upstream.handle().clone(),
    );
    let report = runtimes
        .load
        .block_on(run_async(options, &handles.0, &handles.1));
    drop(runtimes);
    report
}

async fn run_async(
    options: &BenchOptions,
    proxy_rt: &Handle,
    upstream_rt: &Handle,
) -> Result<Report, BenchError> {
    let stack = stack(options, upstream_rt).await?;
    let mut report = Report::new(options, settings(options));
    let result = run_modes(options, &stack, proxy_rt, &mut report).await;
    if let Some(sandbox) = stack.sandbox {
        targets::stop_sandbox(upstream_rt, sandbox).await;
    }
    result?;
    report.finish();
    Ok(report)
}

async fn run_modes(
    options: &BenchOptions,
    stack: &Stack,
    proxy_rt: &Handle,
    report: &mut Report,
) -> Result<(), BenchError> {
    if options.run_scenarios {
        run_scenarios(options, stack, proxy_rt, report).await?;
    }
    if let Some(n) = options.connections {
        let scale = scale::run(
            stack.proxy_config(options, &[]),
            &stack.direct,
            proxy_rt,
            stack.upstream,
            stack.ca_file.clone(),
            n,
        );
        report.connection_scale = Some(scale.await?);
    }
    Ok(())
}

async fn stack(options: &BenchOptions, upstream_rt: &Handle) -> Result<Stack, BenchError> {
    let dir = WorkDir::create()?;
    if let Some(server) = &options.server {
        let direct = Connector {
            addr: server.addr,
            user: server.user.clone(),
            password: server.password.clone(),
            database: server.database.clone(),
            encryption: options.encryption,
        };
        // A real server's keys are the user's: `keys.company_key_file` and
        // a key table made by `tdsguard init-db`, nothing generated here.
        return Ok(Stack {
            upstream: server.addr,
            ca_file: None,
            direct,
            sandbox: None,
            keys: Ok(options.config.keys.company_key_file.clone()),
            dir,
        });
    }

    let password = generated_password();
    let sandbox = targets::start_sandbox(upstream_rt, dir.path(), &password).await?;
    let direct = Connector {
        addr: sandbox.addr(),
        user: "sa".to_owned(),
        password,
        database: Some(SANDBOX_DATABASE.to_owned()),
        encryption: options.encryption,
    };
    let ca_file = sandbox.cert_pem_path().map(PathBuf::from);
    let keys = match needs_keys(options) {
        true => sandbox_keys(options, &dir, &direct, ca_file.as_deref()).await,
        false => Ok(None),
    };
    Ok(Stack {
        upstream: sandbox.addr(),
        ca_file,
        direct,
        sandbox: Some(sandbox),
        keys,
        dir,
    })
}

/// The embedded sandbox's default database.
const SANDBOX_DATABASE: &str = "tdsguard";

/// Whether the tdsguard target will map columns: the configuration's own
/// `[[columns]]` (tdsguard runs as configured, so those are mapped in
/// every scenario) or a chosen scenario's.
fn needs_keys(options: &BenchOptions) -> bool {
    let mapped_scenario =
        options.run_scenarios && chosen(options).is_ok_and(|all| all.iter().any(|s| s.is_mapped()));
    mapped_scenario || !options.config.columns.is_empty()
}

/// A company key and a data key in the sandbox for the tdsguard target.
/// A failure is kept as the reason the mapped scenarios run unencrypted.
async fn sandbox_keys(
    options: &BenchOptions,
    dir: &WorkDir,
    direct: &Connector,
    ca_file: Option<&std::path::Path>,
) -> Result<Option<PathBuf>, String> {
    let login = SandboxUser {
        name: direct.user.clone(),
        password: direct.password.clone(),
    };
    encryption::provision_sandbox(
        &options.config,
        dir.path(),
        (direct.addr, ca_file),
        login,
        SANDBOX_DATABASE,
    )
    .await
    .map(Some)
    .map_err(|e| e.to_string())
}

/// A throwaway password for the embedded sandbox's `sa` login.
fn generated_password() -> String {
    use rand::Rng;

    let suffix: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("Bench-{suffix}-1a")
}

fn settings(options: &BenchOptions) -> Settings {
    Settings {
        upstream: match &options.server {
            Some(server) => format!("server {}", server.addr),
            None => "embedded sandbox (in process, loopback)".to_owned(),
        },
        client_encryption: format!("{:?}", options.encryption),
        concurrency: options.concurrency.clone(),
        seconds_per_target: options
            .requests
            .is_none()
            .then_some(options.duration.as_secs_f64()),
        requests_per_target: options.requests,
        rounds: options.rounds,
        proxy_threads: options.proxy_threads,
    }
}

/// The scenarios chosen by `--scenario`, in their fixed order.
fn chosen(options: &BenchOptions) -> Result<Vec<Scenario>, BenchError> {
    let all = scenarios::all(options.select_rows)?;
    for name in &options.scenarios {
        if !all.iter().any(|s| s.name == name) {
            return Err(BenchError::Setup(format!("unknown scenario {name:?}")));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| options.scenarios.is_empty() || options.scenarios.iter().any(|n| n == s.name))
        .collect())
}

async fn run_scenarios(
    options: &BenchOptions,
    stack: &Stack,
    proxy_rt: &Handle,
    report: &mut Report,
) -> Result<(), BenchError> {
    let scenarios = chosen(options)?;
    let steps = scenarios.len()
        * options.concurrency.len()
        * options.rounds as usize
        * TargetKind::ALL.len();
    let bar = progress_bar(options.progress, steps as u64);
    let byte_copy = targets::start_byte_copy(proxy_rt, stack.upstream).await?;
    for scenario in scenarios {
        let scenario = Arc::new(scenario);
        let reports =
            run_scenario(options, stack, proxy_rt, byte_copy.addr(), &scenario, &bar).await;
        report.scenarios.extend(reports);
    }
    bar.finish_and_clear();
    byte_copy.shutdown().await;
    Ok(())
}

fn progress_bar(wanted: bool, steps: u64) -> ProgressBar {
    use std::io::IsTerminal;

    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

/// One scenario at every concurrency; a scenario that cannot be set up
/// yields reports that say why instead of figures.
async fn run_scenario(
    options: &BenchOptions,
    stack: &Stack,
    proxy_rt: &Handle,
    byte_copy: SocketAddr,
    scenario: &Arc<Scenario>,
    bar: &ProgressBar,
) -> Vec<ScenarioReport> {
    let failed = |reason: String| {
        options
            .concurrency
            .iter()
            .map(|&c| ScenarioReport::status(scenario, c, format!("failed: {reason}")))
            .collect()
    };
    let config = stack.proxy_config(options, &scenario.columns);
    let proxy = match Proxy::start(proxy_rt, config, stack.upstream, stack.ca_file.clone()).await {
        Ok(proxy) => proxy,
        Err(err) => return failed(err.to_string()),
    };
    let through = Connector {
        addr: proxy.addr(),
        ..stack.direct.clone()
    };
    let encryption = match prepare(stack, &through, scenario).await {
        Ok(encryption) => encryption,
        Err(err) => {
            proxy.shutdown().await;
            return failed(format!("preparing: {err}"));
        }
    };

    let mut reports = Vec::new();
    for &concurrency in &options.concurrency {
        let connectors = connectors(&stack.direct, byte_copy, proxy.addr());
        let samples = alternate(options, scenario, &connectors, concurrency, bar).await;
        let mut report = ScenarioReport::measured(scenario, concurrency, samples);
        report.encryption = encryption.clone();
        reports.push(report);
    }
    proxy.shutdown().await;
    reports
}

/// Makes the scenario's tables: the plaintext one (or twin) directly, a
/// mapped one through tdsguard so that it can be stored encrypted; then
/// checks whether it was.
async fn prepare(
    stack: &Stack,
    through: &Connector,
    scenario: &Scenario,
) -> Result<Option<EncryptionCheck>, BenchError> {
    let mut direct = stack.direct.connect().await?;
    scenarios::prepare(&mut direct, &scenario.for_target(TargetKind::Direct)).await?;
    if !scenario.is_mapped() {
        direct.close().await.map_err(BenchError::sql("closing"))?;
        return Ok(None);
    }

    let mut proxied = through.connect().await?;
    scenarios::prepare(&mut proxied, scenario).await?;
    let mut check = encryption::check(scenario, &mut direct, &mut proxied).await;
    if let Err(reason) = &stack.keys {
        check.note = format!("{}; no keys for tdsguard: {reason}", check.note);
    }
    proxied.close().await.map_err(BenchError::sql("closing"))?;
    direct.close().await.map_err(BenchError::sql("closing"))?;
    Ok(Some(check))
}

/// The same login for the three targets, at their addresses.
fn connectors(
    direct: &Connector,
    byte_copy: SocketAddr,
    proxy: SocketAddr,
) -> [(TargetKind, Connector); 3] {
    let at = |addr| Connector {
        addr,
        ..direct.clone()
    };
    [
        (TargetKind::Direct, direct.clone()),
        (TargetKind::ByteCopy, at(byte_copy)),
        (TargetKind::Tdsguard, at(proxy)),
    ]
}

/// Runs the targets in turns, rotating who goes first each round, and
/// merges each target's rounds.
async fn alternate(
    options: &BenchOptions,
    scenario: &Arc<Scenario>,
    connectors: &[(TargetKind, Connector); 3],
    concurrency: usize,
    bar: &ProgressBar,
) -> Vec<(TargetKind, Result<Sample, BenchError>)> {
    let rounds = options.rounds.max(1);
    let budget = Budget::per_round(options.duration, options.requests, rounds);
    let mut merged: Vec<(TargetKind, Result<Sample, BenchError>)> = TargetKind::ALL
        .iter()
        .map(|&k| (k, Ok(Sample::default())))
        .collect();
    for round in 0..rounds as usize {
        for turn in 0..connectors.len() {
            let index = (round + turn) % connectors.len();
            let (kind, connector) = &connectors[index];
            bar.set_message(format!(
                "{} c={concurrency} {}",
                scenario.name,
                kind.label()
            ));
            let workload = Arc::new(scenario.for_target(*kind));
            let sample = measure::run(&workload, connector, concurrency, budget).await;
            merge(&mut merged[index].1, sample);
            bar.inc(1);
        }
    }
    merged
}

/// Adds a round to a target's total; the first error sticks.
fn merge(total: &mut Result<Sample, BenchError>, round: Result<Sample, BenchError>) {
    let Ok(sum) = total else { return };
    match round {
        Ok(sample) => sum.absorb(sample),
        Err(err) => *total = Err(err),
    }
}
