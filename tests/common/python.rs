//! Running tests/drivers/scenario.py with the repository's .venv (made by
//! scripts/install-test-deps.sh) against a test sandbox.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::sandbox::{TestSandbox, PASSWORD};

/// How long one driver scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter; a missing venv fails the test with the fix.
pub fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh once to install the test drivers",
        python.display()
    );
    python
}

/// Runs the scenario for `driver` in `encrypt` mode; returns its output on
/// failure.
pub async fn run_scenario(sandbox: &TestSandbox, driver: &str, encrypt: &str) -> Result<String, String> {
    let script = repo_root().join("tests/drivers/scenario.py");
    let mut command = Command::new(python());
    command
        .arg(&script)
        .args(["--driver", driver, "--encrypt", encrypt])
        .args(["--port", &sandbox.addr().port().to_string()])
        .arg("--cafile")
        .arg(sandbox.cert_pem())
        .env("TDSGUARD_TEST_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    output_of(command, SCENARIO_TIMEOUT).await
}

/// Runs a command to completion; `Err` carries its output when it failed.
pub async fn output_of(mut command: Command, limit: Duration) -> Result<String, String> {
    let child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("timed out after {limit:?}"))?
        .map_err(|e| format!("cannot wait: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.success() {
        true => Ok(text),
        false => Err(text),
    }
}

/// Whether `path` exists, for optional tools.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
