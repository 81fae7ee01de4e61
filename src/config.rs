//! The `proxy.toml` model, its layering and its validation.
//!
//! Layers, lowest first:
//!
//! 1. the defaults written on each field below (named `default_*` functions);
//! 2. the config file (`proxy.toml` unless `--config` names another);
//! 3. environment variables `TDSGUARD_<SECTION>__<KEY>`, e.g. `TDSGUARD_UPSTREAM__HOST`;
//! 4. command-line flags, applied through [`Overrides`].
//!
//! Unknown keys are rejected. The file is first read on its own so that an
//! error can name the line; the `config` crate then merges the layers.
//! Everything is validated here, before any listener starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

mod entries;

pub use entries::EntryProblem;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "TDSGUARD";

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}:{column}: {message}")]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{0}")]
    Layer(#[from] config::ConfigError),

    #[error("invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },

    /// Problems of `[[columns]]` and `[[procedures]]` entries: all of them, in file order.
    #[error("{}", entries_summary(.0))]
    Entries(Vec<EntryProblem>),
}

/// The first problem, and how many more there are (`tdsguard check` lists every one).
fn entries_summary(problems: &[EntryProblem]) -> String {
    match problems {
        [] => "invalid [[columns]] or [[procedures]] entry".to_owned(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!(
            "{first} (and {} more: `tdsguard check` lists them all)",
            rest.len()
        ),
    }
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener the application connects to.
    #[serde(default)]
    pub listen: ListenConfig,

    /// The server tdsguard connects to on the application's behalf.
    #[serde(default)]
    pub upstream: UpstreamConfig,

    /// The embedded stand-in server, used when `upstream.mode = "embedded"`.
    #[serde(default)]
    pub sandbox: SandboxConfig,

    /// The company key and the key table.
    #[serde(default)]
    pub keys: KeysConfig,

    /// Logging.
    #[serde(default)]
    pub log: LogConfig,

    /// The PHI columns whose values are encrypted.
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,

    /// Stored-procedure parameters that carry values of mapped columns.
    #[serde(default)]
    pub procedures: Vec<ProcedureConfig>,
}

/// What the application leg offers in PRELOGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// Plaintext only (ENCRYPT_NOT_SUP); TDS 8.0 strict clients are refused.
    Off,
    /// Whatever the application asks for, plaintext included.
    Optional,
    /// Full TLS or TDS 8.0 strict; plaintext and login-only are refused.
    Required,
}

/// The application-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address and port to accept applications on.
    #[serde(default = "default_listen_address")]
    pub address: SocketAddr,

    /// TLS toward the application: "off", "optional" or "required".
    #[serde(default = "default_client_tls")]
    pub tls: ClientTls,

    /// PEM certificate chain for the application leg; generated when empty.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,

    /// PEM private key matching `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,

    /// Most connections served at once; further ones wait in the backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,

    /// On SIGTERM or Ctrl-C, how long open sessions may finish, in ms.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,

    /// Where generated certificates, the demo key and sandbox data live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

/// How the proxy encrypts its own connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamEncryption {
    /// TLS negotiated in PRELOGIN (TDS 7.4), for every packet after it.
    Tls,
    /// TDS 8.0: TLS before the first TDS byte, ALPN `tds/8.0`.
    Strict,
}

/// Whether the upstream is a real server or the embedded sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamMode {
    /// Start the stand-in server in process and connect to it.
    Embedded,
    /// Connect to `host:port`.
    Server,
}

/// The server leg.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// "embedded" (the stand-in server) or "server" (`host` and `port`).
    #[serde(default = "default_upstream_mode")]
    pub mode: UpstreamMode,

    /// Server host name; also the TLS name checked against its certificate.
    #[serde(default)]
    pub host: Option<String>,

    /// Server TCP port.
    #[serde(default = "default_upstream_port")]
    pub port: u16,

    /// "tls" (TLS inside PRELOGIN) or "strict" (TDS 8.0).
    #[serde(default = "default_upstream_encryption")]
    pub encryption: UpstreamEncryption,

    /// Accept any server certificate. Logged as a warning at every start.
    #[serde(default)]
    pub trust_server_certificate: bool,

    /// PEM bundle of CAs to trust instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,

    /// Time allowed for TCP connect plus TLS handshake, in ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,

    /// Time the server has to acknowledge a cancel, in ms.
    #[serde(default = "default_cancel_timeout_ms")]
    pub cancel_timeout_ms: u64,

    /// Routing redirects followed during one login before giving up.
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u8,
}

/// A login the stand-in server accepts.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxUser {
    /// Login name.
    pub name: String,
    /// Password. The sandbox is a test stand-in: keep real secrets out of it.
    pub password: String,
}

impl std::fmt::Debug for SandboxUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The embedded stand-in server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The SQLite file of the default database; others sit beside it.
    #[serde(default = "default_sandbox_data")]
    pub data_file: PathBuf,

    /// Name of the default database.
    #[serde(default = "default_sandbox_database")]
    pub database: String,

    /// Accept clients that refuse encryption (Azure SQL does not).
    #[serde(default = "default_true")]
    pub allow_plaintext: bool,

    /// Logins it accepts.
    #[serde(default = "default_sandbox_users")]
    pub users: Vec<SandboxUser>,
}

/// Where keys come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The company key (PKCS#8 PEM, readable by its owner only).
    #[serde(default)]
    pub company_key_file: Option<PathBuf>,

    /// Table holding each database's wrapped data keys.
    #[serde(default = "default_key_table")]
    pub key_table: String,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level filter, as `RUST_LOG` takes it ("info", "tdsguard=debug").
    #[serde(default = "default_log_level")]
    pub level: String,

    /// Log every connection's open and close at info instead of debug.
    #[serde(default)]
    pub connections: bool,

    /// "text" or "json".
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How equal plaintexts are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    /// A fresh random nonce per value; no equality lookups.
    Randomized,
    /// Equal plaintexts give equal ciphertexts; reveals equality.
    Deterministic,
}

/// What a result value that fails to decrypt becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDecryptError {
    /// The statement fails with an error the application can show.
    Error,
    /// The value is returned as NULL and a warning is logged.
    Null,
}

/// One PHI column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Table, `schema.table` or `table` (schema `dbo`).
    pub table: String,
    /// Column name.
    pub column: String,
    /// The plaintext SQL type the application sees, e.g. `nvarchar(50)`.
    #[serde(rename = "type")]
    pub sql_type: String,
    /// "randomized" (default) or "deterministic".
    #[serde(default = "default_mode")]
    pub mode: EncryptionMode,
    /// "error" (default) or "null".
    #[serde(default = "default_on_decrypt_error")]
    pub on_decrypt_error: OnDecryptError,
    /// Database the table lives in; every database when absent.
    #[serde(default)]
    pub database: Option<String>,
}

/// One stored procedure whose parameters carry mapped values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureConfig {
    /// Procedure, `schema.name` or `name` (schema `dbo`).
    pub procedure: String,
    /// Parameter name → `table.column` it is stored in.
    pub parameters: std::collections::BTreeMap<String, String>,
}

fn default_listen_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1433))
}
fn default_client_tls() -> ClientTls {
    ClientTls::Optional
}
fn default_max_connections() -> usize {
    10_000
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_upstream_mode() -> UpstreamMode {
    UpstreamMode::Embedded
}
fn default_upstream_port() -> u16 {
    1433
}
fn default_upstream_encryption() -> UpstreamEncryption {
    UpstreamEncryption::Tls
}
fn default_connect_timeout_ms() -> u64 {
    15_000
}
fn default_cancel_timeout_ms() -> u64 {
    30_000
}
fn default_max_redirects() -> u8 {
    3
}
fn default_sandbox_data() -> PathBuf {
    PathBuf::from("data/sandbox.sqlite")
}
fn default_sandbox_database() -> String {
    "tdsguard".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_sandbox_users() -> Vec<SandboxUser> {
    vec![SandboxUser {
        name: "sa".to_owned(),
        password: "Sandbox-Passw0rd".to_owned(),
    }]
}
fn default_key_table() -> String {
    crate::crypto::key_table::DEFAULT_TABLE_NAME.to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_mode() -> EncryptionMode {
    EncryptionMode::Randomized
}
fn default_on_decrypt_error() -> OnDecryptError {
    OnDecryptError::Error
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: default_listen_address(),
            tls: default_client_tls(),
            cert_file: None,
            key_file: None,
            max_connections: default_max_connections(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            data_dir: default_data_dir(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            mode: default_upstream_mode(),
            host: None,
            port: default_upstream_port(),
            encryption: default_upstream_encryption(),
            trust_server_certificate: false,
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            cancel_timeout_ms: default_cancel_timeout_ms(),
            max_redirects: default_max_redirects(),
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            data_file: default_sandbox_data(),
            database: default_sandbox_database(),
            allow_plaintext: true,
            users: default_sandbox_users(),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            company_key_file: None,
            key_table: default_key_table(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            connections: false,
            format: default_log_format(),
        }
    }
}

/// Values given on the command line, the highest layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen_address: Option<SocketAddr>,
    pub log_level: Option<String>,
}

/// Where the file and environment layers come from; tests inject both.
#[derive(Debug, Clone)]
pub struct Source {
    /// Config file path, or `None` for defaults only.
    pub file: Option<PathBuf>,
    /// Environment as (name, value) pairs; only `TDSGUARD_*` ones are read.
    pub env: Vec<(String, String)>,
}

impl Source {
    /// The given file (when it exists, or when it was named explicitly) and
    /// the process environment.
    pub fn from_process(file: Option<&Path>) -> Self {
        let file = match file {
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from("proxy.toml")).filter(|p| p.exists()),
        };
        Source {
            file,
            env: std::env::vars().collect(),
        }
    }
}

impl Config {
    /// Loads and validates the configuration from all layers.
    pub fn load(source: &Source, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        let mut file_text = None;
        if let Some(path) = &source.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            check_file(path, &text)?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
            file_text = Some((path, text));
        }

        // Only `TDSGUARD_<SECTION>__<KEY>` names are configuration; other
        // `TDSGUARD_*` variables (administrator credentials, test settings)
        // belong to the commands that read them.
        let env: config::Map<String, String> = source
            .env
            .iter()
            .filter(|(k, _)| is_config_variable(k))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );

        if let Some(addr) = overrides.listen_address {
            builder = builder.set_override("listen.address", addr.to_string())?;
        }
        if let Some(level) = &overrides.log_level {
            builder = builder.set_override("log.level", level.as_str())?;
        }

        let config: Config = builder.build()?.try_deserialize()?;
        match (config.validate(), file_text) {
            (Err(ConfigError::Entries(mut problems)), Some((path, text))) => {
                entries::locate(&mut problems, path, &text);
                Err(ConfigError::Entries(problems))
            }
            (result, _) => result.map(|()| config),
        }
    }

    /// Checks what serde cannot: combinations and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listen()?;
        self.validate_upstream()?;
        self.validate_columns()
    }

    fn validate_listen(&self) -> Result<(), ConfigError> {
        let listen = &self.listen;
        if listen.cert_file.is_some() != listen.key_file.is_some() {
            return Err(ConfigError::invalid(
                "listen.cert_file",
                "cert_file and key_file must be given together",
            ));
        }
        if listen.max_connections == 0 {
            return Err(ConfigError::invalid(
                "listen.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_upstream(&self) -> Result<(), ConfigError> {
        let up = &self.upstream;
        if up.mode == UpstreamMode::Server && up.host.as_deref().unwrap_or("").is_empty() {
            return Err(ConfigError::invalid(
                "upstream.host",
                "required when upstream.mode = \"server\"",
            ));
        }
        if up.connect_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "upstream.connect_timeout_ms",
                "must be above 0",
            ));
        }
        if up.max_redirects > 10 {
            return Err(ConfigError::invalid("upstream.max_redirects", "at most 10"));
        }
        Ok(())
    }

    /// Every `[[columns]]` and `[[procedures]]` problem, not only the first.
    fn validate_columns(&self) -> Result<(), ConfigError> {
        // Keys for real data are never generated implicitly: only the
        // embedded sandbox gets a demo key.
        let real = self.upstream.mode == UpstreamMode::Server;
        if real && !self.columns.is_empty() && self.keys.company_key_file.is_none() {
            return Err(ConfigError::invalid(
                "keys.company_key_file",
                "required when [[columns]] are mapped and upstream.mode = \"server\"; make \
                 one with `tdsguard keygen` and the database's data key with `tdsguard init-db`",
            ));
        }
        let problems = entries::problems(&self.columns, &self.procedures);
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Entries(problems)),
        }
    }
}

/// Whether an environment variable names a configuration key.
fn is_config_variable(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| rest.contains("__"))
}

/// Parses the file alone, so that a mistake is reported with its line.
fn check_file(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(err) = toml::from_str::<Config>(text) else {
        return Ok(());
    };
    let (line, column) = err
        .span()
        .map(|span| line_and_column(text, span.start))
        .unwrap_or((0, 0));
    Err(ConfigError::File {
        path: path.to_path_buf(),
        line,
        column,
        message: err.message().to_owned(),
    })
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let source = Source {
            file: Some(file.path().to_path_buf()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Config::load(&source, &Overrides::default())
    }

    #[test]
    fn shipped_proxy_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
        let source = Source {
            file: Some(path),
            env: vec![],
        };
        let config = Config::load(&source, &Overrides::default()).unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Embedded);
        assert!(!config.columns.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = load_text("[listen]\naddress = \"127.0.0.1:1\"\nbogus = 1\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(":3:"), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn layers_apply_in_order() {
        let text = "[upstream]\nport = 1500\n[listen]\naddress = \"127.0.0.1:2000\"\n";
        let env = [
            ("TDSGUARD_UPSTREAM__PORT", "1600"),
            ("TDSGUARD_ADMIN_PASSWORD", "not-config"),
            ("OTHER_X", "1"),
        ];
        let config = load_text(text, &env).unwrap();
        assert_eq!(config.upstream.port, 1600);
        assert_eq!(config.listen.address.port(), 2000);

        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let source = Source {
            file: Some(file.path().to_path_buf()),
            env: vec![],
        };
        let overrides = Overrides {
            listen_address: Some("127.0.0.1:3000".parse().unwrap()),
            log_level: Some("debug".into()),
        };
        let config = Config::load(&source, &overrides).unwrap();
        assert_eq!(config.listen.address.port(), 3000);
        assert_eq!(config.log.level, "debug");
    }

    #[test]
    fn server_mode_needs_a_host() {
        let err = load_text("[upstream]\nmode = \"server\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("upstream.host"), "{err}");
    }

    #[test]
    fn mapped_columns_on_a_real_server_need_a_company_key() {
        let text = "[upstream]\nmode = \"server\"\nhost = \"db.example.net\"\n\
                    [[columns]]\ntable = \"dbo.Patients\"\ncolumn = \"ssn\"\ntype = \"char(11)\"\n";
        let err = load_text(text, &[]).unwrap_err().to_string();
        assert!(err.contains("keys.company_key_file"), "{err}");
        assert!(err.contains("tdsguard keygen"), "{err}");

        let ok = text.replace(
            "[[columns]]",
            "[keys]\ncompany_key_file = \"/etc/tdsguard/k.pem\"\n[[columns]]",
        );
        load_text(&ok, &[]).unwrap();
    }

    #[test]
    fn duplicate_column_is_rejected_with_its_entry() {
        let text = "[[columns]]\ntable = \"Patients\"\ncolumn = \"ssn\"\ntype = \"char(11)\"\n\
                    [[columns]]\ntable = \"patients\"\ncolumn = \"SSN\"\ntype = \"char(11)\"\n";
        let err = load_text(text, &[]).unwrap_err();
        assert!(err.to_string().contains("columns[1]"), "{err}");
    }

    #[test]
    fn entry_problems_name_file_line_and_count() {
        let text = "[[columns]]\ntable = \"Patients\"\ncolumn = \"ssn\"\ntype = \"char(9000)\"\n\
                    [[columns]]\ntable = \"Patients\"\ncolumn = \"flag\"\ntype = \"bit\"\n\
                    mode = \"deterministic\"\n";
        let err = load_text(text, &[]).unwrap_err();
        let ConfigError::Entries(problems) = &err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 2);
        assert_eq!(
            problems[0].location.as_ref().map(|(_, line)| *line),
            Some(4)
        );
        assert_eq!(
            problems[1].location.as_ref().map(|(_, line)| *line),
            Some(9)
        );
        let text = err.to_string();
        assert!(
            text.contains(":4: columns[0].type (Patients.ssn)"),
            "{text}"
        );
        assert!(
            text.ends_with("(and 1 more: `tdsguard check` lists them all)"),
            "{text}"
        );
    }

    #[test]
    fn sandbox_password_is_not_in_debug() {
        let config = load_text("", &[]).unwrap();
        let shown = format!("{:?}", config.sandbox);
        assert!(!shown.contains("Sandbox-Passw0rd"));
    }
}
