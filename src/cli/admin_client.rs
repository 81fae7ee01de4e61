//! The administrator's connection used by `init-db`, `rewrap` and `rotate-data-key`: where the
//! credentials come from, a tiberius client with the upstream's TLS settings (or the embedded
//! sandbox, started in process for the duration of the command), and the key table statements
//! of docs/FORMAT.md, "Key table".
//!
//! Credentials come from `TDSGUARD_ADMIN_USER` / `TDSGUARD_ADMIN_PASSWORD`, else from a prompt
//! when standard input is a terminal (the password without echo), never from the command line,
//! where other local users could read it in the process list. With the embedded sandbox and no
//! variables set, the first `[sandbox]` login is used: those logins are in the config already.

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tiberius::{AuthMethod, Client, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use tracing::warn;
use zeroize::Zeroizing;

use crate::config::{
    Config, ConfigError, Overrides, Source, UpstreamConfig, UpstreamEncryption, UpstreamMode,
};
use crate::crypto::key_table::{insert_values, parse_row};
use crate::crypto::{Fingerprint, KeyTable, WrappedDataKey};
use crate::sandbox::{Sandbox, SandboxHandle, SandboxOptions};

/// Environment variable holding the administrator login.
pub const ADMIN_USER_ENV: &str = "TDSGUARD_ADMIN_USER";

/// Environment variable holding the administrator password.
pub const ADMIN_PASSWORD_ENV: &str = "TDSGUARD_ADMIN_PASSWORD";

/// SQL Server's "Invalid object name" (the key table does not exist).
pub const ERROR_INVALID_OBJECT: u32 = 208;

/// Most key table rows read at once. One row per data key id and company key: even yearly
/// rotations under a few company keys stay far below it.
pub const MAX_KEY_ROWS: usize = 4096;

/// A tiberius client over TCP.
pub type AdminClient = Client<Compat<TcpStream>>;

/// An administrator login. `Debug` shows the user only.
pub struct Credentials {
    user: String,
    password: Zeroizing<String>,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's roots.
    SystemRoots,
    /// This PEM bundle, in addition to the system roots (tiberius adds, it does not replace).
    CaFile(PathBuf),
    /// Any certificate (`trust_server_certificate = true`); warned about.
    AnyCertificate,
}

/// Where the administrator connection goes and how it is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TLS name, and the TCP host unless `addr` is set.
    pub host: String,
    pub port: u16,
    /// A fixed socket address (the in-process sandbox).
    pub addr: Option<SocketAddr>,
    pub encryption: UpstreamEncryption,
    pub trust: Trust,
    pub connect_timeout: Duration,
}

/// The upstream of one command: a real server, or a sandbox running until [`Upstream::close`].
pub struct Upstream {
    pub target: Target,
    sandbox: Option<SandboxHandle>,
}

/// Loads the configuration for a key command. The administrator variables share the
/// `TDSGUARD_` prefix of the configuration's environment layer, which would take them for
/// unknown keys, so they are left out of that layer.
pub fn load_config(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut source = Source::from_process(file);
    source
        .env
        .retain(|(name, _)| name != ADMIN_USER_ENV && name != ADMIN_PASSWORD_ENV);
    Config::load(&source, overrides)
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Both variables, when both are set and not empty.
    pub fn from_env() -> Option<Self> {
        let user = std::env::var(ADMIN_USER_ENV)
            .ok()
            .filter(|v| !v.is_empty())?;
        let password = Zeroizing::new(std::env::var(ADMIN_PASSWORD_ENV).ok()?);
        Some(Self { user, password })
    }

    /// The variables, else the first sandbox login (embedded mode), else a terminal prompt.
    pub fn for_config(config: &Config) -> anyhow::Result<Self> {
        if let Some(credentials) = Self::from_env() {
            return Ok(credentials);
        }
        if config.upstream.mode == UpstreamMode::Embedded {
            if let Some(user) = config.sandbox.users.first() {
                return Ok(Self::new(user.name.clone(), user.password.clone()));
            }
        }
        Self::prompt()
    }

    /// Asks on the terminal; refuses when standard input is not one.
    pub fn prompt() -> anyhow::Result<Self> {
        if !io::stdin().is_terminal() {
            bail!(
                "no administrator credentials: set {ADMIN_USER_ENV} and {ADMIN_PASSWORD_ENV} \
                 (standard input is not a terminal, so they cannot be asked for)"
            );
        }
        eprint!("administrator login: ");
        io::stderr().flush()?;
        let mut user = String::new();
        io::stdin().lock().read_line(&mut user)?;

        let password = rpassword::prompt_password("password: ").context("reading the password")?;
        Ok(Self::new(user.trim(), password))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The `[upstream]` server with its TLS settings.
    pub fn from_upstream(upstream: &UpstreamConfig) -> Self {
        let trust = match (&upstream.ca_file, upstream.trust_server_certificate) {
            (_, true) => Trust::AnyCertificate,
            (Some(file), false) => Trust::CaFile(file.clone()),
            (None, false) => Trust::SystemRoots,
        };
        Self {
            host: upstream.host.clone().unwrap_or_default(),
            port: upstream.port,
            addr: None,
            encryption: upstream.encryption,
            trust,
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
        }
    }

    /// An in-process sandbox, verified against its generated certificate when there is one.
    pub fn sandbox(addr: SocketAddr, cert_pem: Option<&Path>) -> Self {
        let trust = cert_pem.map_or(Trust::AnyCertificate, |pem| {
            Trust::CaFile(pem.to_path_buf())
        });
        Self {
            host: "localhost".to_owned(),
            port: addr.port(),
            addr: Some(addr),
            encryption: UpstreamEncryption::Tls,
            trust,
            connect_timeout: Duration::from_secs(15),
        }
    }

    fn tiberius_config(
        &self,
        credentials: &Credentials,
        database: Option<&str>,
    ) -> tiberius::Config {
        let mut config = tiberius::Config::new();
        config.host(&self.host);
        config.port(self.port);
        config.authentication(AuthMethod::sql_server(
            &credentials.user,
            credentials.password.as_str(),
        ));
        if let Some(database) = database {
            config.database(database);
        }
        config.application_name("tdsguard admin");
        config.encryption(match self.encryption {
            UpstreamEncryption::Tls => EncryptionLevel::Required,
            UpstreamEncryption::Strict => EncryptionLevel::Strict,
        });
        match &self.trust {
            Trust::SystemRoots => {}
            Trust::CaFile(file) => config.trust_cert_ca(file.display()),
            Trust::AnyCertificate => config.trust_cert(),
        }
        config
    }
}

impl Upstream {
    /// The configured upstream; for `mode = "embedded"` the sandbox `serve` would start, on a
    /// free loopback port, over the same data file.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        if config.upstream.mode == UpstreamMode::Server {
            return Ok(Self {
                target: Target::from_upstream(&config.upstream),
                sandbox: None,
            });
        }
        let options = SandboxOptions::embedded(config);
        if let Some(dir) = options.data_file.parent() {
            // The sandbox opens its SQLite file but does not create the directory.
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let handle = Sandbox::start(options)
            .await
            .context("starting the embedded sandbox")?;
        let mut target = Target::sandbox(handle.addr(), handle.cert_pem_path());
        target.encryption = config.upstream.encryption;
        Ok(Self {
            target,
            sandbox: Some(handle),
        })
    }

    /// Stops the sandbox, if one was started.
    pub async fn close(self) {
        if let Some(handle) = self.sandbox {
            handle.shutdown().await;
        }
    }
}

/// Runs `work` on an administrator connection to the configured upstream,
/// in `database` when given. The embedded sandbox, when it is the upstream,
/// is started first and stopped afterwards whatever `work` returned.
pub fn run_as_admin<T>(
    config: &Config,
    database: Option<&str>,
    work: impl AsyncFnOnce(&mut AdminClient) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let credentials = Credentials::for_config(config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let upstream = Upstream::start(config).await?;
        let result = async {
            let mut client = connect(&upstream.target, &credentials, database).await?;
            work(&mut client).await
        }
        .await;
        upstream.close().await;
        result
    })
}

/// Logs in to `target` as `credentials`, in `database` when given.
pub async fn connect(
    target: &Target,
    credentials: &Credentials,
    database: Option<&str>,
) -> anyhow::Result<AdminClient> {
    if target.trust == Trust::AnyCertificate && target.addr.is_none() {
        warn!("upstream.trust_server_certificate = true: the server's certificate is not verified");
    }
    let config = target.tiberius_config(credentials, database);
    let connecting = async {
        let tcp = match target.addr {
            Some(addr) => TcpStream::connect(addr).await?,
            None => TcpStream::connect((target.host.as_str(), target.port)).await?,
        };
        tcp.set_nodelay(true)?;
        anyhow::Ok(Client::connect(config, tcp.compat_write()).await?)
    };
    tokio::time::timeout(target.connect_timeout, connecting)
        .await
        .with_context(|| format!("connecting to {}:{} timed out", target.host, target.port))?
        .with_context(|| {
            format!(
                "logging in to {}:{} as {}",
                target.host, target.port, credentials.user
            )
        })
}

/// Every row of the key table, all company keys, by key id; `None` when the table is missing.
pub async fn read_rows(
    client: &mut AdminClient,
    table: &KeyTable,
) -> anyhow::Result<Option<Vec<WrappedDataKey>>> {
    let sql = format!(
        "SELECT key_id, company_key_fingerprint, wrapped_key, tag FROM {} ORDER BY key_id",
        table.name()
    );
    let rows = match client.simple_query(sql).await {
        Ok(stream) => stream.into_first_result().await,
        Err(e) => Err(e),
    };
    let rows = match rows {
        Err(tiberius::error::Error::Server(e)) if e.code() == ERROR_INVALID_OBJECT => {
            return Ok(None)
        }
        other => other.with_context(|| format!("reading {}", table.name()))?,
    };
    // TODO(tdsguard): tiberius collects the whole result before the cap is checked; the
    // server is the configured upstream, and a row is at most about 600 bytes.
    if rows.len() > MAX_KEY_ROWS {
        bail!("{} holds more than {MAX_KEY_ROWS} rows", table.name());
    }
    rows.iter()
        .map(row_from_tiberius)
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

fn row_from_tiberius(row: &tiberius::Row) -> anyhow::Result<WrappedDataKey> {
    let missing = || anyhow::anyhow!("key table row has a NULL or mistyped column");
    let key_id: i32 = row.try_get(0)?.ok_or_else(missing)?;
    let fingerprint: &[u8] = row.try_get(1)?.ok_or_else(missing)?;
    let wrapped: &[u8] = row.try_get(2)?.ok_or_else(missing)?;
    let tag: &[u8] = row.try_get(3)?.ok_or_else(missing)?;
    Ok(parse_row(key_id, fingerprint, wrapped, tag)?)
}

/// Creates the key table (docs/FORMAT.md).
pub async fn create_table(client: &mut AdminClient, table: &KeyTable) -> anyhow::Result<()> {
    run_batch(client, table.create_table_sql())
        .await
        .with_context(|| format!("creating {}", table.name()))
}

async fn run_batch(client: &mut AdminClient, sql: String) -> tiberius::Result<()> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

/// Inserts one wrapped data key.
pub async fn insert_row(
    client: &mut AdminClient,
    table: &KeyTable,
    row: &WrappedDataKey,
) -> anyhow::Result<()> {
    let (key_id, fingerprint, wrapped, tag) = insert_values(row);
    let (fingerprint, tag) = (&fingerprint[..], &tag[..]);
    client
        .execute(table.insert_sql(), &[&key_id, &fingerprint, &wrapped, &tag])
        .await
        .with_context(|| format!("storing data key {} in {}", row.key_id, table.name()))?;
    Ok(())
}

/// Deletes the rows of one company key, or every row.
pub async fn delete_rows(
    client: &mut AdminClient,
    table: &KeyTable,
    company_key: Option<Fingerprint>,
) -> anyhow::Result<u64> {
    let result = match company_key {
        Some(fingerprint) => {
            let sql = format!(
                "DELETE FROM {} WHERE company_key_fingerprint = @P1",
                table.name()
            );
            let fingerprint = &fingerprint.as_bytes()[..];
            client.execute(sql, &[&fingerprint]).await
        }
        None => {
            let sql = format!("DELETE FROM {}", table.name());
            client.execute(sql, &[]).await
        }
    };
    let done = result.with_context(|| format!("deleting rows of {}", table.name()))?;
    Ok(done.total())
}

/// Runs `BEGIN TRANSACTION`, `COMMIT` or `ROLLBACK`.
pub async fn transaction(client: &mut AdminClient, statement: &str) -> anyhow::Result<()> {
    client
        .simple_query(statement)
        .await?
        .into_results()
        .await
        .with_context(|| format!("running {statement}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_password() {
        let credentials = Credentials::new("admin", "s3cret-Passw0rd");
        let text = format!("{credentials:?}");
        assert!(text.contains("admin"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn target_follows_the_upstream_tls_settings() {
        let mut upstream = UpstreamConfig {
            host: Some("db.example.net".to_owned()),
            port: 1444,
            ..UpstreamConfig::default()
        };
        assert_eq!(Target::from_upstream(&upstream).trust, Trust::SystemRoots);

        upstream.ca_file = Some(PathBuf::from("/etc/ca.pem"));
        upstream.encryption = UpstreamEncryption::Strict;
        let target = Target::from_upstream(&upstream);
        assert_eq!(target.trust, Trust::CaFile(PathBuf::from("/etc/ca.pem")));
        assert_eq!(target.encryption, UpstreamEncryption::Strict);
        assert_eq!(
            (target.host.as_str(), target.port),
            ("db.example.net", 1444)
        );

        upstream.trust_server_certificate = true;
        assert_eq!(
            Target::from_upstream(&upstream).trust,
            Trust::AnyCertificate
        );
    }

    #[test]
    fn embedded_credentials_fall_back_to_the_first_sandbox_login() {
        if Credentials::from_env().is_some() {
            return;
        }
        let config = Config::load(
            &crate::config::Source {
                file: None,
                env: vec![],
            },
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let credentials = Credentials::for_config(&config).unwrap();
        assert_eq!(credentials.user(), "sa");
    }

    #[test]
    fn sandbox_file_is_the_one_serve_opens() {
        let mut config = Config::load(
            &crate::config::Source {
                file: None,
                env: vec![],
            },
            &crate::config::Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            SandboxOptions::embedded(&config).data_file,
            PathBuf::from("data/sandbox.sqlite")
        );
        config.sandbox.data_file = PathBuf::from("x.sqlite");
        assert_eq!(
            SandboxOptions::embedded(&config).data_file,
            PathBuf::from("data/x.sqlite")
        );
    }
}
