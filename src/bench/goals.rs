//! The project's performance goals, judged from a report's figures.
//!
//! A goal is judged only from what was measured in this run: a scenario or
//! mode that did not run leaves the goal unjudged, and an encryption goal
//! whose scenario ran unencrypted is reported as not measured, with the
//! pass-through ratio for information only.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::report::ScenarioReport;
use crate::bench::scale::ScaleReport;
use crate::bench::targets::TargetKind;

/// Most RSS tdsguard may add per idle connection, bytes.
pub const IDLE_RSS_LIMIT: f64 = 16.0 * 1024.0;
/// Idle connections tdsguard must serve at once.
pub const CONNECTIONS_GOAL: usize = 9_000;
/// Fewest requests per target a throughput or latency goal is judged
/// from (smoke runs send one).
const MIN_REQUESTS: u64 = 10;
/// Fewest connections an RSS-per-connection figure is judged from: below
/// it allocator noise of a few hundred KiB swamps the per-connection share.
const MIN_RSS_CONNECTIONS: usize = 1_000;

/// One goal at one concurrency (or for the run).
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: &'static str,
    pub concurrency: Option<usize>,
    /// The measured figure, in the goal's unit.
    pub measured: Option<f64>,
    /// `None` when the run could not judge it.
    pub met: Option<bool>,
    pub note: String,
}

/// Throughput of tdsguard over byte-copy must be at least `min`.
struct RatioGoal {
    goal: &'static str,
    scenario: &'static str,
    min: f64,
    needs_encryption: bool,
}

const RATIO_GOALS: [RatioGoal; 3] = [
    RatioGoal {
        goal: "pass-through >= 0.90x byte-copy (small, requests/s)",
        scenario: "small",
        min: 0.90,
        needs_encryption: false,
    },
    RatioGoal {
        goal: "SELECT 100k, 4 encrypted cols >= 0.80x byte-copy on plaintext (rows/s)",
        scenario: "select_100k_enc4",
        min: 0.80,
        needs_encryption: true,
    },
    RatioGoal {
        goal: "INSERT 4 encrypted params >= 0.85x byte-copy on plaintext (requests/s)",
        scenario: "insert_enc4",
        min: 0.85,
        needs_encryption: true,
    },
];

/// Most p50 latency tdsguard may add over byte-copy on small round trips.
const ADDED_P50_LIMIT_US: f64 = 15.0;

/// Judges every goal the run has figures for.
pub fn judge(scenarios: &[ScenarioReport], scale: Option<&ScaleReport>) -> Vec<Goal> {
    let mut goals = Vec::new();
    for rule in &RATIO_GOALS {
        for s in scenarios.iter().filter(|s| s.scenario == rule.scenario) {
            goals.push(ratio_goal(rule, s));
        }
    }
    for s in scenarios.iter().filter(|s| s.scenario == "small") {
        goals.push(added_latency_goal(s));
    }
    if let Some(scale) = scale {
        goals.push(idle_rss_goal(scale));
        goals.push(connections_goal(scale));
    }
    goals
}

fn versus_byte_copy(s: &ScenarioReport) -> Option<&crate::bench::report::Comparison> {
    s.comparisons
        .iter()
        .find(|c| c.target == TargetKind::Tdsguard && c.baseline == TargetKind::ByteCopy)
}

/// Why the figures of `s` are too few to judge, if they are.
fn too_few(s: &ScenarioReport) -> Option<String> {
    let fewest = s.targets.iter().map(|m| m.requests).min()?;
    (fewest < MIN_REQUESTS).then(|| format!("not judged: only {fewest} requests per target"))
}

fn ratio_goal(rule: &RatioGoal, s: &ScenarioReport) -> Goal {
    let measured = versus_byte_copy(s).and_then(|c| c.throughput_ratio);
    let encrypted = s.encryption.as_ref().is_some_and(|e| e.active);
    let (met, note) = match (measured, rule.needs_encryption && !encrypted, too_few(s)) {
        (None, _, _) => (None, format!("no figure: {}", s.status)),
        (Some(r), true, _) => (
            None,
            format!("not measured: encryption was not active (pass-through ratio {r:.3})"),
        ),
        (Some(r), false, Some(few)) => (None, format!("{few} ({r:.3}x)")),
        (Some(r), false, None) => (Some(r >= rule.min), format!("{r:.3}x")),
    };
    Goal {
        goal: rule.goal,
        concurrency: Some(s.concurrency),
        measured,
        met,
        note,
    }
}

fn added_latency_goal(s: &ScenarioReport) -> Goal {
    let measured = versus_byte_copy(s).and_then(|c| c.added_p50_us);
    let few = too_few(s);
    let note = match (measured, &few) {
        (None, _) => format!("no figure: {}", s.status),
        (Some(us), Some(few)) => format!("{few} ({us:.1} us)"),
        (Some(us), None) => format!("{us:.1} us"),
    };
    Goal {
        goal: "pass-through adds <= 15 us p50 over byte-copy (small)",
        concurrency: Some(s.concurrency),
        measured,
        met: measured
            .filter(|_| few.is_none())
            .map(|us| us <= ADDED_P50_LIMIT_US),
        note,
    }
}

fn idle_rss_goal(scale: &ScaleReport) -> Goal {
    let measured = scale.tdsguard_rss_per_connection_bytes;
    let enough = scale.through_tdsguard.opened >= MIN_RSS_CONNECTIONS;
    let note = match (measured, enough) {
        (None, _) => "no figure".to_owned(),
        (Some(b), true) => format!("{:.1} KiB", b / 1024.0),
        (Some(b), false) => format!(
            "not judged: {:.1} KiB over only {} connections",
            b / 1024.0,
            scale.through_tdsguard.opened
        ),
    };
    Goal {
        goal: "<= 16 KiB RSS added per idle connection",
        concurrency: Some(scale.attempted),
        measured,
        met: measured.filter(|_| enough).map(|b| b <= IDLE_RSS_LIMIT),
        note,
    }
}

fn connections_goal(scale: &ScaleReport) -> Goal {
    let served = scale.through_tdsguard.served;
    let met = match scale.requested >= CONNECTIONS_GOAL {
        true => Some(scale.all_served),
        false => None,
    };
    let note = match met {
        None => format!("not judged: only {} connections requested", scale.requested),
        Some(_) => format!("{served} of {} served", scale.requested),
    };
    Goal {
        goal: "9,000 concurrent connections served",
        concurrency: Some(scale.requested),
        measured: Some(served as f64),
        met,
        note,
    }
}

/// The goals as lines of the table.
pub fn write_table(goals: &[Goal], out: &mut String) {
    if goals.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ngoals:");
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        };
        let at = g
            .concurrency
            .map(|c| format!(" (c={c})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {:<8} {}{at}: {}", verdict, g.goal, g.note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::encryption::EncryptionCheck;
    use crate::bench::report::Comparison;

    fn scenario(name: &'static str, ratio: f64, added: f64) -> ScenarioReport {
        ScenarioReport {
            scenario: name,
            summary: "",
            concurrency: 1,
            status: "ok".to_owned(),
            mapped_columns: 0,
            baseline_table: None,
            encryption: None,
            targets: Vec::new(),
            comparisons: vec![Comparison {
                target: TargetKind::Tdsguard,
                baseline: TargetKind::ByteCopy,
                throughput_ratio: Some(ratio),
                added_p50_us: Some(added),
                added_p99_us: None,
                added_p999_us: None,
                cpu_ratio: None,
                rss_ratio: None,
            }],
        }
    }

    #[test]
    fn pass_through_goals_are_judged_from_small() {
        let goals = judge(&[scenario("small", 0.95, 20.0)], None);
        assert_eq!(goals.len(), 2);
        assert_eq!(goals[0].met, Some(true));
        assert_eq!(goals[1].met, Some(false));
    }

    #[test]
    fn encryption_goals_need_active_encryption() {
        let mut s = scenario("insert_enc4", 0.99, 0.0);
        s.encryption = Some(EncryptionCheck::unknown("plaintext".to_owned()));
        let goals = judge(std::slice::from_ref(&s), None);
        assert_eq!(goals[0].met, None);
        assert!(goals[0].note.starts_with("not measured"));

        s.encryption = Some(EncryptionCheck {
            active: true,
            ..EncryptionCheck::unknown(String::new())
        });
        let goals = judge(&[s], None);
        assert_eq!(goals[0].met, Some(true));
    }
}
