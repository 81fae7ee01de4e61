//! `tdsguard bench --smoke` in process against the embedded sandbox: it
//! runs every scenario once, says for each mapped one whether tdsguard
//! encrypted it, and writes a JSON report and an SVG plot that parse. It
//! checks that the bench works, never how fast anything is.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

use tdsguard::cli::{self, Cli};

fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .expect("scenarios array")
        .iter()
        .find(|s| s["scenario"] == name)
        .unwrap_or_else(|| panic!("scenario {name} missing"))
}

#[test]
fn smoke_run_writes_json_and_svg() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("bench.svg");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let args = [
        "tdsguard".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "bench".as_ref(),
        "--smoke".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
        "--plot".as_ref(),
        svg.as_os_str(),
    ];
    let cli = Cli::try_parse_from(args).expect("arguments parse");
    let code = cli::run(cli).expect("bench runs");
    assert_eq!(code, ExitCode::SUCCESS);

    let text = std::fs::read_to_string(&json).expect("JSON written");
    let report: Value = serde_json::from_str(&text).expect("JSON parses");
    let all = [
        "small",
        "select_100k",
        "select_100k_enc4",
        "insert_enc4",
        "insert_enc16",
        "value_1mib",
        "login",
    ];
    for name in all {
        let s = scenario(&report, name);
        assert_eq!(s["status"], "ok", "{name}: {}", s["status"]);
        let targets = s["targets"].as_array().expect("targets");
        let names: Vec<&str> = targets
            .iter()
            .filter_map(|t| t["target"].as_str())
            .collect();
        assert_eq!(names, ["direct", "byte_copy", "tdsguard"], "{name}");
        assert!(
            targets.iter().all(|t| t["requests"] == 1),
            "{name}: one request each"
        );
        assert_eq!(s["comparisons"].as_array().map(Vec::len), Some(3), "{name}");
    }
    assert_eq!(scenario(&report, "select_100k")["targets"][2]["rows"], 200);
    assert_eq!(
        scenario(&report, "select_100k_enc4")["targets"][2]["rows"],
        200
    );
    for name in ["select_100k_enc4", "insert_enc4", "insert_enc16"] {
        let check = &scenario(&report, name)["encryption"];
        assert!(check["active"].is_boolean(), "{name}: {check}");
        let stored = check["stored_types"].as_array().expect("stored types");
        assert_eq!(stored.len(), if name == "insert_enc16" { 16 } else { 4 });
    }
    assert!(scenario(&report, "small")["encryption"].is_null());
    assert_eq!(scenario(&report, "insert_enc16")["mapped_columns"], 16);
    assert_eq!(
        scenario(&report, "insert_enc16")["baseline_table"],
        "bench_ins16_plain"
    );
    let scale = &report["connection_scale"];
    assert_eq!(scale["attempted"], 4);
    assert_eq!(scale["through_tdsguard"]["served"], 4);
    assert_eq!(scale["all_served"], true);
    assert!(report["machine"]["nproc"].as_u64().is_some_and(|n| n >= 1));
    let goals = report["goals"].as_array().expect("goals");
    assert!(!goals.is_empty());
    assert!(
        goals.iter().all(|g| g["met"].is_null()),
        "one request per target judges no goal: {goals:?}"
    );

    let plot = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(80)]);
    assert!(plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains("Throughput") && plot.contains("Latency p50"));
    assert!(plot.contains("login c=1"));
    assert!(plot.matches("<rect").count() > 12, "bars drawn");
}
