//! The `tdsguard` binary faced with operator mistakes and with what a
//! tester sends on purpose: every mistake ends with a clear message and
//! the documented exit code, and mapped columns never reach the server in
//! plaintext.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::compat::TokioAsyncWriteCompatExt;

const BINARY: &str = env!("CARGO_BIN_EXE_tdsguard");
const PASSWORD: &str = "Robust-Test-Passw0rd";
/// The exit code for configuration errors (sysexits.h EX_CONFIG).
const EXIT_CONFIG: i32 = 78;

/// How long a command that should refuse to start may run before the test
/// calls it a failure (a guard against hanging, not a performance bound).
const REFUSAL_GUARD: Duration = Duration::from_secs(60);

/// Runs `tdsguard` with `args` in `dir`, expecting it to exit on its own;
/// returns its exit code and stderr.
async fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(REFUSAL_GUARD, output)
        .await
        .unwrap_or_else(|_| panic!("tdsguard {args:?} kept running instead of exiting"))
        .expect("tdsguard runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

fn assert_config_error(code: Option<i32>, stderr: &str, key: &str) {
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("configuration error"), "{stderr}");
    assert!(stderr.contains(key), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An unparsable level used to be skipped with a note while the proxy ran
/// on at a level nobody chose.
#[tokio::test]
async fn robustness_bad_log_level_in_the_file_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("proxy.toml"), "[log]\nlevel = \"[[[\"\n").expect("write");
    let (code, stderr) = run(dir.path(), &["--config", "proxy.toml", "check"]).await;
    assert_config_error(code, &stderr, "log.level");
}

#[tokio::test]
async fn robustness_bad_log_level_flag_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("proxy.toml"), "").expect("write");
    let args = [
        "--config",
        "proxy.toml",
        "--log-level",
        "tdsguard=bogus",
        "serve",
        "--listen",
        "127.0.0.1:0",
    ];
    let (code, stderr) = run(dir.path(), &args).await;
    assert_config_error(code, &stderr, "log.level");
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("address").port()
}

/// The demo shape of `proxy.toml`: embedded sandbox, `dbo.Patients.ssn`
/// mapped.
fn mapped_config(dir: &Path) -> String {
    let data = dir.join("data");
    format!(
        "[listen]\ndata_dir = \"{data}\"\n\
         [upstream]\nmode = \"embedded\"\n\
         [sandbox]\ndata_file = \"{data}/sandbox.sqlite\"\n\
         users = [{{ name = \"sa\", password = \"{PASSWORD}\" }}]\n\
         [[columns]]\ntable = \"dbo.Patients\"\ncolumn = \"ssn\"\ntype = \"char(11)\"\n\
         mode = \"deterministic\"\n",
        data = data.display()
    )
}

/// Waits until `tdsguard serve` logs that it listens.
async fn wait_listening(child: &mut tokio::process::Child) {
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let listening = async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("tdsguard listening") {
                return;
            }
        }
        panic!("tdsguard exited before listening");
    };
    tokio::time::timeout(Duration::from_secs(120), listening)
        .await
        .expect("tdsguard listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

async fn client(port: u16) -> Client<tokio_util::compat::Compat<TcpStream>> {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(port);
    config.authentication(AuthMethod::sql_server("sa", PASSWORD));
    config.encryption(EncryptionLevel::NotSupported);
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    Client::connect(config, tcp.compat_write())
        .await
        .expect("login")
}

/// Whether any of the sandbox's SQLite files holds `needle`.
fn sandbox_files_contain(data: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(data)
        .expect("data directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains("sqlite"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

/// `tdsguard serve`, run as a process with a `[[columns]]` map, seals the
/// mapped column before it reaches the server: the sandbox's files never
/// hold the plaintext.
#[tokio::test(flavor = "multi_thread")]
async fn robustness_serve_never_stores_a_mapped_column_in_plaintext() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("proxy.toml"), mapped_config(dir.path())).expect("write");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BINARY)
        .args(["--config", "proxy.toml", "serve", "--listen", &listen])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tdsguard starts");
    wait_listening(&mut child).await;

    let mut client = client(port).await;
    client
        .execute("CREATE TABLE dbo.Patients (id int, ssn char(11))", &[])
        .await
        .expect("create");
    client
        .execute(
            "INSERT INTO dbo.Patients (id, ssn) VALUES (1, @P1)",
            &[&"123-45-6789"],
        )
        .await
        .expect("insert");
    drop(client);
    child.kill().await.expect("stop tdsguard");

    assert!(
        !sandbox_files_contain(&dir.path().join("data"), b"123-45-6789"),
        "the mapped column was stored in plaintext"
    );
}
