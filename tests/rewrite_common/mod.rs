//! Shared helpers of the rewrite integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use tdsguard::config::{ColumnConfig, EncryptionMode, OnDecryptError, ProcedureConfig};
use tdsguard::rewrite::sealer::InsecureTestCipher;
use tdsguard::rewrite::{ColumnMap, ColumnRef, Rewriter, ValueCipher};

pub const DB: &str = "clinic";

pub fn column(table: &str, column: &str, ty: &str, mode: EncryptionMode) -> ColumnConfig {
    ColumnConfig {
        table: table.into(),
        column: column.into(),
        sql_type: ty.into(),
        mode,
        on_decrypt_error: OnDecryptError::Error,
        database: None,
    }
}

pub fn procedure(name: &str, params: &[(&str, &str)]) -> ProcedureConfig {
    let parameters: BTreeMap<String, String> = params
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    ProcedureConfig {
        procedure: name.into(),
        parameters,
    }
}

pub fn cipher() -> Arc<InsecureTestCipher> {
    Arc::new(InsecureTestCipher::new(42))
}

pub fn rewriter(columns: &[ColumnConfig], procedures: &[ProcedureConfig]) -> Arc<Rewriter> {
    let map = ColumnMap::new(columns, procedures).unwrap();
    Arc::new(Rewriter::new(map, cipher(), 128))
}

/// The demo map: dbo.Patients with a deterministic SSN, a randomized name
/// and a deterministic date of birth.
pub fn patients() -> Vec<ColumnConfig> {
    vec![
        column(
            "dbo.Patients",
            "Ssn",
            "char(11)",
            EncryptionMode::Deterministic,
        ),
        column(
            "dbo.Patients",
            "Name",
            "nvarchar(50)",
            EncryptionMode::Randomized,
        ),
        column("dbo.Patients", "Dob", "date", EncryptionMode::Deterministic),
    ]
}

pub fn col_ref(table: &str, column: &str) -> ColumnRef {
    ColumnRef {
        database: DB.into(),
        schema: "dbo".into(),
        table: table.into(),
        column: column.into(),
    }
}

/// Opens an envelope with the test cipher.
pub fn open(table: &str, col: &str, ty: &str, envelope: &[u8]) -> Vec<u8> {
    cipher().open(&col_ref(table, col), ty, envelope).unwrap()
}

/// Seals as the proxy would have stored it.
pub fn seal(table: &str, col: &str, ty: &str, plain: &[u8]) -> Vec<u8> {
    cipher()
        .seal(&col_ref(table, col), ty, EncryptionMode::Randomized, plain)
        .unwrap()
}

pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Whether `haystack` contains `needle` as UTF-8 or as UTF-16LE.
pub fn contains_text(haystack: &[u8], needle: &str) -> bool {
    let find = |n: &[u8]| !n.is_empty() && haystack.windows(n.len()).any(|w| w == n);
    find(needle.as_bytes()) || find(&utf16(needle))
}

/// The RPC messages (type 0x03) of a captured client stream.
pub fn rpc_messages(name: &str) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/fixtures/wireshark-rpc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let stream = std::fs::read(path).unwrap();
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut rest = &stream[..];
    while rest.len() >= 8 {
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        current.extend_from_slice(&rest[8..len]);
        if rest[1] & 0x01 != 0 {
            let message = std::mem::take(&mut current);
            if rest[0] == 0x03 {
                messages.push(message);
            }
        }
        rest = &rest[len..];
    }
    messages
}

pub fn capture(stream: usize) -> Vec<Vec<u8>> {
    rpc_messages(&format!(
        "wireshark-wiki_ms-sql-tds-rpc-requests.stream{stream}.node0.bin"
    ))
}
