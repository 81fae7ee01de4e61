//! `tdsguard serve` as a process: configuration errors exit with 78 before
//! anything listens; a good configuration with the embedded sandbox serves
//! a driver, warns about an unverified upstream, and stops on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::compat::TokioAsyncWriteCompatExt;

const BINARY: &str = env!("CARGO_BIN_EXE_tdsguard");
const PASSWORD: &str = "Cli-Test-Passw0rd";

#[tokio::test]
async fn relay_cli_config_error_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, "[listen]\nbogus = 1\n").expect("write config");
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .current_dir(dir.path())
        .output()
        .await
        .expect("tdsguard runs");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("configuration error"), "{stderr}");
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("address").port()
}

fn config_text(dir: &std::path::Path) -> String {
    let data = dir.join("data");
    format!(
        "[listen]\ndata_dir = \"{data}\"\n\
         [upstream]\nmode = \"embedded\"\ntrust_server_certificate = true\n\
         [sandbox]\ndata_file = \"{data}/sandbox.sqlite\"\n\
         users = [{{ name = \"sa\", password = \"{PASSWORD}\" }}]\n\
         [log]\nlevel = \"info\"\n",
        data = data.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_cli_serve_embedded_then_sigterm() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, config_text(dir.path())).expect("write config");
    let port = free_port();
    let mut child = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tdsguard starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.contains("tdsguard listening");
            seen.push(line);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(
        listening.is_ok(),
        "no listening line in:\n{}",
        seen.join("\n")
    );
    let log = seen.join("\n");
    assert!(log.contains("trust_server_certificate"), "{log}");
    assert!(log.contains("embedded sandbox listening"), "{log}");

    let mut tiberius = Config::new();
    tiberius.host("127.0.0.1");
    tiberius.port(port);
    tiberius.authentication(AuthMethod::sql_server("sa", PASSWORD));
    tiberius.trust_cert();
    tiberius.encryption(EncryptionLevel::Required);
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut client = Client::connect(tiberius, tcp.compat_write())
        .await
        .expect("login through tdsguard serve");
    let row = client
        .query("SELECT 40 + 2", &[])
        .await
        .expect("query")
        .into_row()
        .await
        .expect("row")
        .expect("a row");
    assert_eq!(row.get::<i32, _>(0), Some(42));
    drop(client);

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.expect("kill runs").success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert!(status.success(), "{status:?}");
}
