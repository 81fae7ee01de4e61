//! Key management against the in-process sandbox: keygen, init-db, reading the key back as the
//! proxy does, rewrap to a new company key, data key rotation, and refusals of tampered rows and
//! rows wrapped for another company key.

mod common;

use std::path::Path;
use std::sync::Arc;

use tdsguard::cli::admin_client::{self, AdminClient, Credentials, Target};
use tdsguard::cli::{init_db, keygen, rewrap, rotate};
use tdsguard::crypto::{
    ColumnId, CompanyKey, DataKeyCache, DataKeyId, EnvelopeCipher, KeyTable, Mode, SqlType,
    ValueBinding,
};

use common::sandbox::{TestSandbox, PASSWORD};

const TABLE: &str = "dbo.tdsguard_keys";

async fn admin(sandbox: &TestSandbox) -> AdminClient {
    let target = Target::sandbox(sandbox.addr(), Some(&sandbox.cert_pem()));
    let credentials = Credentials::new("sa", PASSWORD);
    admin_client::connect(&target, &credentials, Some("tdsguard"))
        .await
        .expect("administrator login")
}

fn new_key(dir: &Path, name: &str) -> CompanyKey {
    let path = dir.join(name);
    keygen::keygen_to(&path, &mut Vec::new()).expect("keygen");
    CompanyKey::load(&path).expect("key loads")
}

fn binding() -> ValueBinding {
    let column = ColumnId::new("tdsguard", "dbo", "Patients", "ssn").unwrap();
    ValueBinding::new(column, SqlType::parse("char(11)").unwrap())
}

/// The proxy's view: every row of this company key unwrapped through `cache`.
async fn cipher(
    client: &mut AdminClient,
    table: &KeyTable,
    company: &CompanyKey,
    cache: &DataKeyCache,
) -> Result<EnvelopeCipher, tdsguard::crypto::CryptoError> {
    let rows = admin_client::read_rows(client, table)
        .await
        .unwrap()
        .unwrap();
    let mut ours = rows
        .iter()
        .filter(|r| r.company_key == company.fingerprint());
    let first = ours.next().expect("a row for this company key");
    let mut cipher = EnvelopeCipher::new(cache.unwrap(first, company)?)?;
    for row in ours {
        cipher.rotate_to(cache.unwrap(row, company)?)?;
    }
    Ok(cipher)
}

#[tokio::test]
async fn init_db_stores_a_key_that_survives_a_restart_and_refuses_a_second_run() {
    let sandbox = TestSandbox::start().await;
    let company = new_key(sandbox.dir.path(), "company.pem");
    let table = KeyTable::new(TABLE).unwrap();

    let mut client = admin(&sandbox).await;
    let report = init_db::init_db(&mut client, &table, &company, false)
        .await
        .expect("init-db");
    assert!(report.table_created);
    assert_eq!(report.key_id, DataKeyId::new(1).unwrap());
    assert_eq!(report.fingerprint, company.fingerprint());

    let error = init_db::init_db(&mut client, &table, &company, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already holds data keys"), "{error}");
    assert!(error.contains("--replace"), "{error}");

    let first = cipher(&mut client, &table, &company, &DataKeyCache::new())
        .await
        .unwrap();
    let envelope = first
        .seal(Mode::Randomized, &binding(), b"123-45-6789")
        .unwrap();
    drop(client);

    let mut fresh = admin(&sandbox).await;
    let reloaded = CompanyKey::load(&sandbox.dir.path().join("company.pem")).unwrap();
    let again = cipher(&mut fresh, &table, &reloaded, &DataKeyCache::new())
        .await
        .unwrap();
    assert_eq!(again.current_key_id(), DataKeyId::new(1).unwrap());
    let opened = again.open(&binding(), &envelope).unwrap();
    assert_eq!(&opened[..], b"123-45-6789");
    drop(fresh);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn init_db_replace_discards_old_keys_under_a_fresh_id() {
    let sandbox = TestSandbox::start().await;
    let company = new_key(sandbox.dir.path(), "company.pem");
    let table = KeyTable::new(TABLE).unwrap();
    let mut client = admin(&sandbox).await;
    init_db::init_db(&mut client, &table, &company, false)
        .await
        .unwrap();

    let report = init_db::init_db(&mut client, &table, &company, true)
        .await
        .unwrap();
    assert!(!report.table_created);
    assert_eq!(report.replaced_rows, 1);
    assert_eq!(report.key_id, DataKeyId::new(2).unwrap());
    let rows = admin_client::read_rows(&mut client, &table)
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u32> = rows.iter().map(|r| r.key_id.get()).collect();
    assert_eq!(ids, [2]);
    drop(client);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn rewrap_moves_every_key_and_the_old_company_key_fails_cleanly() {
    let sandbox = TestSandbox::start().await;
    let old = new_key(sandbox.dir.path(), "old.pem");
    let new = new_key(sandbox.dir.path(), "new.pem");
    let table = KeyTable::new(TABLE).unwrap();
    let mut client = admin(&sandbox).await;
    init_db::init_db(&mut client, &table, &old, false)
        .await
        .unwrap();
    rotate::rotate_data_key(&mut client, &table, &old)
        .await
        .unwrap();

    let before = cipher(&mut client, &table, &old, &DataKeyCache::new())
        .await
        .unwrap();
    let envelope = before
        .seal(Mode::Deterministic, &binding(), b"987-65-4321")
        .unwrap();
    client
        .simple_query("CREATE TABLE dbo.Patients (id int, ssn varbinary(49))")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO dbo.Patients (id, ssn) VALUES (@P1, @P2)",
            &[&1i32, &envelope.as_slice()],
        )
        .await
        .unwrap();

    let report = rewrap::rewrap(&mut client, &table, &old, &new, false)
        .await
        .expect("rewrap");
    let ids: Vec<u32> = report.rewrapped.iter().map(|id| id.get()).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(report.deleted_old, 2);

    let rows = admin_client::read_rows(&mut client, &table)
        .await
        .unwrap()
        .unwrap();
    assert!(rows.iter().all(|r| r.company_key == new.fingerprint()));
    let error = DataKeyCache::new().unwrap(&rows[0], &old).err().unwrap();
    assert!(
        matches!(error, tdsguard::crypto::CryptoError::WrongCompanyKey { .. }),
        "{error}"
    );

    let after = cipher(&mut client, &table, &new, &DataKeyCache::new())
        .await
        .unwrap();
    let stored = client
        .query("SELECT ssn FROM dbo.Patients WHERE id = 1", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    let stored: &[u8] = stored.get(0).unwrap();
    assert_eq!(stored, envelope.as_slice(), "data untouched");
    assert_eq!(&after.open(&binding(), stored).unwrap()[..], b"987-65-4321");
    drop(client);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn rotate_adds_the_next_id_and_values_under_the_old_id_still_open() {
    let sandbox = TestSandbox::start().await;
    let company = new_key(sandbox.dir.path(), "company.pem");
    let table = KeyTable::new(TABLE).unwrap();
    let mut client = admin(&sandbox).await;
    init_db::init_db(&mut client, &table, &company, false)
        .await
        .unwrap();
    let cache = DataKeyCache::new();
    let under_one = cipher(&mut client, &table, &company, &cache)
        .await
        .unwrap()
        .seal(Mode::Randomized, &binding(), b"old value")
        .unwrap();

    let report = rotate::rotate_data_key(&mut client, &table, &company)
        .await
        .unwrap();
    assert_eq!(report.new_key_id, DataKeyId::new(2).unwrap());
    assert_eq!(report.previous, [DataKeyId::new(1).unwrap()]);

    let rotated = cipher(&mut client, &table, &company, &cache).await.unwrap();
    assert_eq!(rotated.current_key_id(), DataKeyId::new(2).unwrap());
    assert_eq!(
        &rotated.open(&binding(), &under_one).unwrap()[..],
        b"old value"
    );
    let under_two = rotated
        .seal(Mode::Randomized, &binding(), b"new value")
        .unwrap();
    assert_eq!(
        &under_two[2..6],
        &2u32.to_be_bytes(),
        "key id in the header"
    );
    drop(client);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn tampered_rows_are_refused_without_rsa_and_foreign_rows_name_the_key() {
    let sandbox = TestSandbox::start().await;
    let dir = sandbox.dir.path();
    let company = new_key(dir, "company.pem");
    let other = new_key(dir, "other.pem");
    let table = KeyTable::new(TABLE).unwrap();
    let mut client = admin(&sandbox).await;
    init_db::init_db(&mut client, &table, &company, false)
        .await
        .unwrap();

    client
        .simple_query(format!(
            "UPDATE {} SET tag = 0x{} WHERE key_id = 1",
            table.name(),
            "00".repeat(32)
        ))
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let fresh = CompanyKey::load(&dir.join("company.pem")).unwrap();
    let error = cipher(&mut client, &table, &fresh, &DataKeyCache::new())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            tdsguard::crypto::CryptoError::WrappedKeyTagMismatch { key_id: 1 }
        ),
        "{error}"
    );
    assert_eq!(fresh.rsa_decryptions(), 0);

    let rows = admin_client::read_rows(&mut client, &table)
        .await
        .unwrap()
        .unwrap();
    let error = DataKeyCache::new().unwrap(&rows[0], &other).err().unwrap();
    let text = error.to_string();
    assert!(text.contains(&company.fingerprint().to_string()), "{text}");
    assert!(text.contains(&other.fingerprint().to_string()), "{text}");
    assert_eq!(other.rsa_decryptions(), 0);
    drop(client);
    sandbox.handle.shutdown().await;
}

fn demo_config(sandbox: &TestSandbox) -> tdsguard::config::Config {
    let source = tdsguard::config::Source {
        file: None,
        env: vec![],
    };
    let mut config =
        tdsguard::config::Config::load(&source, &tdsguard::config::Overrides::default()).unwrap();
    config.listen.data_dir = sandbox.dir.path().join("data");
    config.sandbox.users[0].password = PASSWORD.to_owned();
    config
}

#[tokio::test]
async fn demo_provisioning_makes_its_keys_once() {
    use std::os::unix::fs::PermissionsExt;
    use tdsguard::crypto::demo::{provision_demo, DEMO_KEY_FILE};

    let sandbox = TestSandbox::start().await;
    let config = demo_config(&sandbox);
    let cert = sandbox.cert_pem();

    let first = provision_demo(&config, sandbox.addr(), Some(&cert))
        .await
        .expect("first start");
    assert!(first.key_created && first.data_key_created);
    assert_eq!(first.key_file, config.listen.data_dir.join(DEMO_KEY_FILE));
    let mode = std::fs::metadata(&first.key_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let second = provision_demo(&config, sandbox.addr(), Some(&cert))
        .await
        .expect("second start");
    assert!(!second.key_created && !second.data_key_created);
    assert_eq!(second.fingerprint, first.fingerprint);

    let mut client = admin(&sandbox).await;
    let table = KeyTable::new(&config.keys.key_table).unwrap();
    let company = CompanyKey::load(&first.key_file).unwrap();
    let rows = admin_client::read_rows(&mut client, &table)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 1);
    cipher(&mut client, &table, &company, &DataKeyCache::new())
        .await
        .expect("the demo data key unwraps");
    drop(client);
    sandbox.handle.shutdown().await;
}

#[tokio::test]
async fn demo_provisioning_never_generates_for_a_real_upstream() {
    use tdsguard::crypto::demo::provision_demo;

    let sandbox = TestSandbox::start().await;
    let mut config = demo_config(&sandbox);
    config.upstream.mode = tdsguard::config::UpstreamMode::Server;
    config.upstream.host = Some("db.example.net".to_owned());

    let error = provision_demo(&config, sandbox.addr(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("tdsguard init-db"), "{error}");
    assert!(!config.listen.data_dir.exists(), "nothing was written");
    sandbox.handle.shutdown().await;
}

/// A plaintext TDS 7.4 session spoken with the codec, as the relay speaks upstream: the key
/// query's request bytes go out and the reply's bytes are fed to the parser as they come.
mod raw {
    use bytes::BytesMut;
    use tdsguard::tds::all_headers::{AllHeaders, Header};
    use tdsguard::tds::login7::{version, Login7};
    use tdsguard::tds::packet::{encode_message, PacketType, DEFAULT_PACKET_SIZE};
    use tdsguard::tds::prelogin::{token, PreLogin};
    use tdsguard::tds::sql_batch::SqlBatch;
    use tdsguard::tds::token::{decode_all, Token, TokenContext};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct Session {
        pub tcp: TcpStream,
        pub transaction: u64,
    }

    impl Session {
        pub async fn login(addr: std::net::SocketAddr, password: &str) -> Session {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let mut prelogin = PreLogin::new();
            prelogin.set_option(token::VERSION, &[0; 6]);
            prelogin.set_option(token::ENCRYPTION, &[0x02]);
            let mut payload = BytesMut::new();
            prelogin.encode(&mut payload).unwrap();
            send(&mut tcp, PacketType::PreLogin, &payload).await;
            read_message(&mut tcp).await;

            let mut login = Login7::default();
            login.tds_version = version::TDS74;
            login.packet_size = DEFAULT_PACKET_SIZE as u32;
            login.username = "sa".into();
            login.password = password.to_owned().into();
            login.database = "tdsguard".into();
            login.app_name = "keys_e2e".into();
            let mut payload = BytesMut::new();
            login.encode(&mut payload).unwrap();
            send(&mut tcp, PacketType::Login7, &payload).await;
            let reply = read_message(&mut tcp).await;
            let tokens = decode_all(&reply, &mut TokenContext::default()).unwrap();
            assert!(
                tokens.iter().any(|t| matches!(t, Token::LoginAck(_))),
                "login"
            );
            Session {
                tcp,
                transaction: 0,
            }
        }

        /// Runs a batch and remembers a BEGIN TRANSACTION descriptor.
        pub async fn batch(&mut self, text: &str) {
            let batch = SqlBatch {
                all_headers: Some(AllHeaders {
                    headers: vec![Header::TransactionDescriptor {
                        descriptor: self.transaction,
                        outstanding_requests: 1,
                    }],
                }),
                text: text.to_owned(),
            };
            let mut payload = BytesMut::new();
            batch.encode(&mut payload).unwrap();
            send(&mut self.tcp, PacketType::SqlBatch, &payload).await;
            let reply = read_message(&mut self.tcp).await;
            for token in decode_all(&reply, &mut TokenContext::default()).unwrap() {
                if let Token::EnvChange(change) = &token {
                    if let Some(bytes) = change.begin_transaction() {
                        self.transaction = u64::from_le_bytes(bytes.try_into().unwrap());
                    }
                }
            }
        }

        pub async fn send_payload(&mut self, payload: &[u8]) {
            send(&mut self.tcp, PacketType::SqlBatch, payload).await;
        }

        /// The payload of the next packet and whether it ended the message.
        pub async fn read_packet(&mut self) -> (Vec<u8>, bool) {
            let mut header = [0u8; 8];
            self.tcp.read_exact(&mut header).await.unwrap();
            let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let mut payload = vec![0u8; length - 8];
            self.tcp.read_exact(&mut payload).await.unwrap();
            (payload, header[1] & 0x01 != 0)
        }
    }

    async fn send(tcp: &mut TcpStream, ty: PacketType, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_message(ty, 0, payload, DEFAULT_PACKET_SIZE, &mut out).unwrap();
        tcp.write_all(&out).await.unwrap();
    }

    async fn read_message(tcp: &mut TcpStream) -> Vec<u8> {
        let mut message = Vec::new();
        loop {
            let mut header = [0u8; 8];
            tcp.read_exact(&mut header).await.unwrap();
            let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let mut payload = vec![0u8; length - 8];
            tcp.read_exact(&mut payload).await.unwrap();
            message.extend_from_slice(&payload);
            if header[1] & 0x01 != 0 {
                return message;
            }
        }
    }
}

/// Sends the key query through `session` and feeds the reply, packet by packet, to the parser.
async fn load_through_session(
    session: &mut raw::Session,
    source: &tdsguard::crypto::session_keys::KeySource,
) -> tdsguard::crypto::session_keys::KeyOutcome {
    let mut request = bytes::BytesMut::new();
    source
        .encode_request(session.transaction, &mut request)
        .unwrap();
    session.send_payload(&request).await;

    let mut reply = source.reply("tdsguard", tdsguard::tds::token::TokenContext::default());
    loop {
        let (payload, last) = session.read_packet().await;
        reply.handle_bytes(&payload);
        if let Some(outcome) = reply.poll_outcome().unwrap() {
            assert!(last, "the outcome comes with the final packet");
            return outcome;
        }
        assert!(!last, "the reply ended without an outcome");
    }
}

#[tokio::test]
async fn session_key_query_runs_in_the_application_session() {
    use tdsguard::crypto::session_keys::{KeyRefusal, KeySource};

    let sandbox = TestSandbox::start().await;
    let company = Arc::new(new_key(sandbox.dir.path(), "company.pem"));
    let table = KeyTable::new(TABLE).unwrap();
    let source = KeySource::new(table.clone(), Arc::clone(&company))
        .with_cache(Arc::new(DataKeyCache::new()));
    let mut session = raw::Session::login(sandbox.addr(), PASSWORD).await;

    let refusal = load_through_session(&mut session, &source)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(refusal, KeyRefusal::NoKeyTable { .. }),
        "{refusal}"
    );

    let mut client = admin(&sandbox).await;
    init_db::init_db(&mut client, &table, &company, false)
        .await
        .unwrap();
    let admin_side = cipher(&mut client, &table, &company, &DataKeyCache::new())
        .await
        .unwrap();
    let envelope = admin_side
        .seal(Mode::Randomized, &binding(), b"555-12-3456")
        .unwrap();

    session.batch("BEGIN TRANSACTION").await;
    assert_ne!(session.transaction, 0, "the sandbox announced a descriptor");
    let loaded = load_through_session(&mut session, &source)
        .await
        .expect("keys load inside the application's transaction");
    assert_eq!(loaded.current_key_id(), DataKeyId::new(1).unwrap());
    assert_eq!(
        &loaded.open(&binding(), &envelope).unwrap()[..],
        b"555-12-3456"
    );
    session.batch("COMMIT TRANSACTION").await;
    drop(client);
    sandbox.handle.shutdown().await;
}

/// A configuration for the command entry points: embedded sandbox under `dir`.
fn command_config(dir: &Path) -> tdsguard::config::Config {
    let source = tdsguard::config::Source {
        file: None,
        env: vec![],
    };
    let mut config =
        tdsguard::config::Config::load(&source, &tdsguard::config::Overrides::default()).unwrap();
    config.listen.data_dir = dir.join("data");
    config.sandbox.data_file = "sandbox.sqlite".into();
    config.keys.company_key_file = Some(dir.join("company.pem"));
    config
}

#[test]
fn commands_run_against_the_embedded_sandbox_they_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = command_config(dir.path());
    keygen::keygen_to(&dir.path().join("company.pem"), &mut Vec::new()).unwrap();
    keygen::keygen_to(&dir.path().join("next.pem"), &mut Vec::new()).unwrap();

    init_db::run(&config, None, false).expect("init-db");
    let again = init_db::run(&config, None, false).unwrap_err();
    assert!(
        format!("{again:#}").contains("already holds data keys"),
        "{again:#}"
    );
    rotate::run(&config, None).expect("rotate-data-key");
    rewrap::run(&config, None, &dir.path().join("next.pem"), false).expect("rewrap");

    let mut moved = command_config(dir.path());
    moved.keys.company_key_file = Some(dir.path().join("next.pem"));
    let error = rotate::run(&config, None).unwrap_err();
    assert!(
        format!("{error:#}").contains("no data key for company key"),
        "{error:#}"
    );
    rotate::run(&moved, None).expect("the new company key holds the keys");
    assert!(dir.path().join("data/sandbox.sqlite").exists());
}

#[test]
fn init_db_refuses_a_key_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let config = command_config(dir.path());
    let path = dir.path().join("company.pem");
    keygen::keygen_to(&path, &mut Vec::new()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let error = format!("{:#}", init_db::run(&config, None, false).unwrap_err());
    assert!(
        error.contains(&format!("chmod 600 {}", path.display())),
        "{error}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "no connection was attempted"
    );
}

/// `[upstream]` pointing at the test sandbox as if it were a real server.
fn server_config(
    sandbox: &TestSandbox,
    encryption: tdsguard::config::UpstreamEncryption,
) -> tdsguard::config::Config {
    let mut config = command_config(sandbox.dir.path());
    config.upstream.mode = tdsguard::config::UpstreamMode::Server;
    config.upstream.host = Some("localhost".to_owned());
    config.upstream.port = sandbox.addr().port();
    config.upstream.encryption = encryption;
    config
}

async fn init_through(config: &tdsguard::config::Config) -> anyhow::Result<()> {
    let upstream = admin_client::Upstream::start(config).await?;
    let credentials = Credentials::new("sa", PASSWORD);
    let mut client = admin_client::connect(&upstream.target, &credentials, None).await?;
    let company = new_key(config.listen.data_dir.parent().unwrap(), "server-mode.pem");
    let table = KeyTable::new(TABLE).unwrap();
    init_db::init_db(&mut client, &table, &company, true).await?;
    upstream.close().await;
    Ok(())
}

#[tokio::test]
async fn server_mode_uses_the_upstream_tls_settings() {
    use tdsguard::config::UpstreamEncryption;

    let sandbox = TestSandbox::start().await;
    for encryption in [UpstreamEncryption::Tls, UpstreamEncryption::Strict] {
        let mut config = server_config(&sandbox, encryption);
        config.upstream.ca_file = Some(sandbox.cert_pem());
        init_through(&config)
            .await
            .unwrap_or_else(|e| panic!("{encryption:?} with ca_file: {e:#}"));
        let _ = std::fs::remove_file(sandbox.dir.path().join("server-mode.pem"));
    }

    let unverified = server_config(&sandbox, UpstreamEncryption::Tls);
    let error = format!("{:#}", init_through(&unverified).await.unwrap_err());
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    let _ = std::fs::remove_file(sandbox.dir.path().join("server-mode.pem"));

    let mut trusting = server_config(&sandbox, UpstreamEncryption::Tls);
    trusting.upstream.trust_server_certificate = true;
    init_through(&trusting)
        .await
        .expect("trust_server_certificate");
    sandbox.handle.shutdown().await;
}
