//! The results of a run: figures per target, ratios to the two baselines,
//! the machine and how each figure is measured; printed as a table or
//! written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::bench::encryption::EncryptionCheck;
use crate::bench::goals::{self, Goal};
use crate::bench::measure::{quantile, Sample};
use crate::bench::rss::{self, Machine};
use crate::bench::scale::ScaleReport;
use crate::bench::scenarios::Scenario;
use crate::bench::targets::TargetKind;
use crate::bench::{BenchError, BenchOptions};

/// How the CPU figures are taken.
pub const CPU_METHOD: &str =
    "cpu_us_per_request: getrusage(RUSAGE_SELF) user+system time of the whole \
process (load generator, relay and embedded upstream) over the timed part, divided by requests. \
cpu_by_group splits it by thread name from /proc/self/task/*/stat (10 ms ticks): 'proxy' is the \
runtime that runs only the byte-copy relay or tdsguard, 'load' the tiberius clients, 'upstream' \
the embedded sandbox.";

/// How the memory figures are taken.
pub const RSS_METHOD: &str = "rss_per_connection: growth of VmRSS (/proc/self/status) from before \
the connections are opened until they are open and have served one request, divided by the \
connections, after glibc malloc_trim. VmRSS covers the whole process: the clients, the relay \
and the embedded upstream's session, not kernel socket buffers.";

/// The settings a run used.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub upstream: String,
    pub client_encryption: String,
    pub concurrency: Vec<usize>,
    pub seconds_per_target: Option<f64>,
    pub requests_per_target: Option<u64>,
    pub rounds: u32,
    pub proxy_threads: usize,
}

/// One target's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub target: TargetKind,
    pub requests: u64,
    pub rows: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub rows_per_s: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
    pub cpu_us_per_request_by_group: BTreeMap<&'static str, f64>,
    pub rss_per_connection_bytes: Option<f64>,
    pub load_average: Option<f64>,
}

/// One target against a baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub target: TargetKind,
    pub baseline: TargetKind,
    /// requests/s of the target over the baseline's.
    pub throughput_ratio: Option<f64>,
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub added_p999_us: Option<f64>,
    /// Process CPU per request of the target over the baseline's.
    pub cpu_ratio: Option<f64>,
    /// RSS per connection of the target over the baseline's.
    pub rss_ratio: Option<f64>,
}

/// One scenario at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub summary: &'static str,
    pub concurrency: usize,
    /// "ok" or "failed: …".
    pub status: String,
    pub mapped_columns: usize,
    /// The unmapped twin table the direct and byte-copy targets use.
    pub baseline_table: Option<&'static str>,
    /// For a scenario with mapped columns: whether tdsguard encrypted them.
    pub encryption: Option<EncryptionCheck>,
    pub targets: Vec<Measurement>,
    pub comparisons: Vec<Comparison>,
}

impl ScenarioReport {
    /// A scenario that has no figures, with the reason.
    pub fn status(scenario: &Scenario, concurrency: usize, status: String) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.name,
            summary: scenario.summary,
            concurrency,
            status,
            mapped_columns: scenario.columns.len(),
            baseline_table: scenario.plain_table,
            encryption: None,
            targets: Vec::new(),
            comparisons: Vec::new(),
        }
    }

    /// A scenario that ran; the first target error makes it "failed".
    pub fn measured(
        scenario: &Scenario,
        concurrency: usize,
        samples: Vec<(TargetKind, Result<Sample, BenchError>)>,
    ) -> ScenarioReport {
        let mut report = Self::status(scenario, concurrency, "ok".to_owned());
        for (kind, sample) in samples {
            match sample {
                Ok(sample) => report.targets.push(measurement(kind, sample)),
                Err(err) if report.status == "ok" => {
                    report.status = format!("failed: {}: {err}", kind.label());
                }
                Err(_) => {}
            }
        }
        if let Some(error) = report.targets.iter().find_map(|m| m.first_error.clone()) {
            report.status = format!("failed: {error}");
        }
        report.comparisons = comparisons(&report.targets);
        report
    }

    pub fn target(&self, kind: TargetKind) -> Option<&Measurement> {
        self.targets.iter().find(|m| m.target == kind)
    }
}

fn measurement(target: TargetKind, mut sample: Sample) -> Measurement {
    sample.latencies.sort_unstable();
    let requests = sample.requests();
    let seconds = sample.elapsed.as_secs_f64();
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let micros = |q| quantile(&sample.latencies, q).map(|ns| ns as f64 / 1000.0);
    let per_request =
        |d: std::time::Duration| (requests > 0).then(|| d.as_secs_f64() * 1e6 / requests as f64);
    Measurement {
        target,
        requests,
        rows: sample.rows,
        errors: sample.errors,
        first_error: sample.first_error.clone(),
        seconds,
        requests_per_s: per_second(requests),
        rows_per_s: per_second(sample.rows),
        p50_us: micros(0.5),
        p99_us: micros(0.99),
        p999_us: micros(0.999),
        cpu_us_per_request: per_request(sample.cpu),
        cpu_us_per_request_by_group: sample
            .cpu_by_group
            .iter()
            .filter_map(|(g, d)| Some((*g, per_request(*d)?)))
            .collect(),
        rss_per_connection_bytes: (sample.connections > 0)
            .then(|| sample.rss_growth as f64 / sample.connections as f64),
        load_average: sample.load_average,
    }
}

/// byte-copy and tdsguard against direct, and tdsguard against byte-copy.
fn comparisons(targets: &[Measurement]) -> Vec<Comparison> {
    let pairs = [
        (TargetKind::ByteCopy, TargetKind::Direct),
        (TargetKind::Tdsguard, TargetKind::Direct),
        (TargetKind::Tdsguard, TargetKind::ByteCopy),
    ];
    let find = |k| targets.iter().find(|m| m.target == k);
    pairs
        .iter()
        .filter_map(|&(t, b)| Some(compare(find(t)?, find(b)?)))
        .collect()
}

fn compare(target: &Measurement, baseline: &Measurement) -> Comparison {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let added = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    Comparison {
        target: target.target,
        baseline: baseline.target,
        throughput_ratio: ratio(Some(target.requests_per_s), Some(baseline.requests_per_s)),
        added_p50_us: added(target.p50_us, baseline.p50_us),
        added_p99_us: added(target.p99_us, baseline.p99_us),
        added_p999_us: added(target.p999_us, baseline.p999_us),
        cpu_ratio: ratio(target.cpu_us_per_request, baseline.cpu_us_per_request),
        rss_ratio: ratio(
            target.rss_per_connection_bytes,
            baseline.rss_per_connection_bytes,
        ),
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tdsguard_version: &'static str,
    pub command: String,
    pub machine: Machine,
    pub load_average_start: Option<f64>,
    pub load_average_end: Option<f64>,
    pub settings: Settings,
    pub cpu_method: &'static str,
    pub rss_method: &'static str,
    pub scenarios: Vec<ScenarioReport>,
    pub connection_scale: Option<ScaleReport>,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn new(options: &BenchOptions, settings: Settings) -> Report {
        Report {
            tdsguard_version: env!("CARGO_PKG_VERSION"),
            command: options.command.clone(),
            machine: Machine::probe(),
            load_average_start: rss::load_average(),
            load_average_end: None,
            settings,
            cpu_method: CPU_METHOD,
            rss_method: RSS_METHOD,
            scenarios: Vec::new(),
            connection_scale: None,
            goals: Vec::new(),
        }
    }

    /// Records the end of the run.
    pub fn finish(&mut self) {
        self.load_average_end = rss::load_average();
        self.goals = goals::judge(&self.scenarios, self.connection_scale.as_ref());
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Output {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| BenchError::Output {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        if !self.scenarios.is_empty() {
            write_scenarios(&mut out, &self.scenarios);
        }
        if let Some(scale) = &self.connection_scale {
            scale.write_table(&mut out);
        }
        goals::write_table(&self.goals, &mut out);
        out
    }

    fn write_header(&self, out: &mut String) {
        let m = &self.machine;
        let load = |l: Option<f64>| l.map_or_else(|| "?".to_owned(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "tdsguard bench {}  ({})",
            self.tdsguard_version, self.command
        );
        let _ = writeln!(
            out,
            "machine: {} CPUs, {}, kernel {}; load average {} -> {}",
            m.nproc,
            m.cpu_model,
            m.kernel,
            load(self.load_average_start),
            load(self.load_average_end)
        );
        let s = &self.settings;
        let _ = writeln!(
            out,
            "upstream: {}; client encryption {}; proxy threads {}; rounds {}\n",
            s.upstream, s.client_encryption, s.proxy_threads, s.rounds
        );
    }
}

fn write_scenarios(out: &mut String, scenarios: &[ScenarioReport]) {
    let _ = writeln!(
        out,
        "{:<17} {:>3} {:<9} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8}",
        "scenario",
        "c",
        "target",
        "req/s",
        "rows/s",
        "p50 us",
        "p99 us",
        "p999 us",
        "+p50 dir",
        "+p50 cpy",
        "x cpy",
        "cpu us/r",
        "prx us/r"
    );
    for s in scenarios {
        if s.status != "ok" && s.targets.is_empty() {
            let _ = writeln!(out, "{:<17} {:>3} {}", s.scenario, s.concurrency, s.status);
            continue;
        }
        for m in &s.targets {
            write_row(out, s, m);
        }
        if let Some(check) = &s.encryption {
            let baseline = s.baseline_table.unwrap_or("the same table");
            let _ = writeln!(
                out,
                "{:<17} {:>3} {}; baselines read/write {baseline} (plaintext)",
                "", "", check.note
            );
        }
        if s.status != "ok" {
            let _ = writeln!(out, "{:<17} {:>3} {}", s.scenario, s.concurrency, s.status);
        }
    }
}

fn write_row(out: &mut String, s: &ScenarioReport, m: &Measurement) {
    let f = |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.p$}"));
    let versus = |b: TargetKind| {
        s.comparisons
            .iter()
            .find(|c| c.target == m.target && c.baseline == b)
    };
    let added = |b| f(versus(b).and_then(|c| c.added_p50_us), 1);
    let ratio = f(
        versus(TargetKind::ByteCopy).and_then(|c| c.throughput_ratio),
        3,
    );
    let proxy_cpu = m.cpu_us_per_request_by_group.get("proxy").copied();
    let _ = writeln!(
        out,
        "{:<17} {:>3} {:<9} {:>10.1} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8}",
        s.scenario,
        s.concurrency,
        m.target.label(),
        m.requests_per_s,
        m.rows_per_s,
        f(m.p50_us, 1),
        f(m.p99_us, 1),
        f(m.p999_us, 1),
        added(TargetKind::Direct),
        added(TargetKind::ByteCopy),
        ratio,
        f(m.cpu_us_per_request, 1),
        f(proxy_cpu, 1)
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(latency_us: u64, n: u64) -> Sample {
        Sample {
            latencies: vec![latency_us * 1000; n as usize],
            rows: n,
            elapsed: Duration::from_secs(1),
            cpu: Duration::from_micros(n * 10),
            connections: 2,
            rss_growth: 2048,
            ..Sample::default()
        }
    }

    #[test]
    fn comparisons_give_ratios_and_added_latency() {
        let scenarios = crate::bench::scenarios::all(10).expect("scenarios");
        let small = &scenarios[0];
        let samples = vec![
            (TargetKind::Direct, Ok(sample(100, 1000))),
            (TargetKind::ByteCopy, Ok(sample(110, 900))),
            (TargetKind::Tdsguard, Ok(sample(130, 720))),
        ];
        let report = ScenarioReport::measured(small, 1, samples);
        assert_eq!(report.status, "ok");
        let c = report
            .comparisons
            .iter()
            .find(|c| c.target == TargetKind::Tdsguard && c.baseline == TargetKind::ByteCopy)
            .expect("comparison");
        assert!((c.throughput_ratio.expect("ratio") - 0.8).abs() < 1e-9);
        assert!((c.added_p50_us.expect("added") - 20.0).abs() < 1e-9);
        assert_eq!(report.comparisons.len(), 3);
        let m = report.target(TargetKind::Direct).expect("direct");
        assert_eq!(m.rss_per_connection_bytes, Some(1024.0));
        assert!((m.cpu_us_per_request.expect("cpu") - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_target_error_fails_the_scenario() {
        let scenarios = crate::bench::scenarios::all(10).expect("scenarios");
        let samples = vec![
            (TargetKind::Direct, Ok(sample(100, 10))),
            (TargetKind::Tdsguard, Err(BenchError::Timeout("login"))),
        ];
        let report = ScenarioReport::measured(&scenarios[0], 1, samples);
        assert_eq!(report.status, "failed: tdsguard: login timed out");
        assert!(report.comparisons.is_empty());
    }
}
