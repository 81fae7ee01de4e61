//! Result rewriting cost, no network: the answer to
//! `SELECT id, c1, c2, c3, c4, qty, price FROM bench_rows_enc`, 100 000 rows
//! whose four `nvarchar(40)` columns are stored as envelopes (varbinary),
//! arriving in 4 KiB packets, on three paths:
//!
//! - `forward`: rows as raw pieces copied unchanged (what the relay does
//!   with a response that needs no rewriting);
//! - `decode_only`: rows decoded whole and their bytes copied, no session
//!   (the parsing share of the cost);
//! - `decrypt_4_cols`: rows decoded whole and passed through
//!   `rewrite::Session::handle_token`, which opens the four envelopes with
//!   the real `crypto::EnvelopeCipher` and re-encodes each row in the
//!   plaintext types (what the relay does for a mapped table).
//!
//! The cipher adapter here mirrors the production one (the crypto layer's
//! `EnvelopeCipher` behind `rewrite::ValueCipher`, one `ValueBinding` per
//! column and type); it is the bench's own so the bench does not depend on
//! how the relay builds it.
//!
//! Run: `cargo bench --bench rewrite` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use tdsguard::config::{ColumnConfig, EncryptionMode, OnDecryptError};
use tdsguard::crypto::{envelope_len, DataKey, DataKeyId, EnvelopeCipher};
use tdsguard::rewrite::{
    ColumnMap, ColumnRef, EnvelopeValueCipher, Outcome, Rewriter, TokenAction, ValueCipher,
};
use tdsguard::tds::packet::{encode_message, PacketReader, PacketType};
use tdsguard::tds::sql_batch::SqlBatch;
use tdsguard::tds::stream::{Item, RowMode, TokenReader};
use tdsguard::tds::token::{
    ColMetadata, ColumnData, Done, DoneKind, DoneStatus, RawValue, Row, RowKind, Token,
    TokenContext, TypeInfoRaw,
};
use tdsguard::tds::types::{NullableType, TypeInfo};

const ROWS: usize = 100_000;
const DATABASE: &str = "bench";
const TABLE: &str = "bench_rows_enc";
const PLAIN_TYPE: &str = "nvarchar(40)";
const MAPPED: [&str; 4] = ["c1", "c2", "c3", "c4"];
const PACKET_SIZE: usize = 4096;

/// The production cipher adapter over a fixed data key.
fn envelopes() -> EnvelopeValueCipher {
    let id = DataKeyId::new(1).expect("key id");
    let key = Arc::new(DataKey::from_bytes(id, [7; 32]));
    EnvelopeValueCipher::new(Arc::new(EnvelopeCipher::new(key).expect("cipher")))
}

fn mapped_columns() -> Vec<ColumnConfig> {
    MAPPED
        .iter()
        .map(|c| ColumnConfig {
            table: TABLE.into(),
            column: (*c).into(),
            sql_type: PLAIN_TYPE.into(),
            mode: EncryptionMode::Randomized,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        })
        .collect()
}

fn column(name: &str, t: TypeInfo) -> ColumnData {
    ColumnData {
        user_type: 0,
        flags: 0x0001,
        type_info: TypeInfoRaw::from_typed(t).expect("type info"),
        table_name: None,
        crypto: None,
        name: name.into(),
    }
}

/// What the server sends: the mapped columns as varbinary envelopes.
fn server_metadata(envelope_max: u16) -> ColMetadata {
    let int = |len| TypeInfo::Nullable {
        ty: NullableType::IntN,
        len,
    };
    let mut columns = vec![column("id", int(4))];
    for name in MAPPED {
        columns.push(column(name, TypeInfo::varbinary(envelope_max)));
    }
    columns.push(column("qty", int(8)));
    columns.push(column(
        "price",
        TypeInfo::Nullable {
            ty: NullableType::FltN,
            len: 8,
        },
    ));
    ColMetadata {
        no_metadata: false,
        cek_table: None,
        columns,
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn row(i: usize, cipher: &EnvelopeValueCipher) -> Row {
    let plain = [
        format!("name-{i}"),
        format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10_000),
        format!("note {i}"),
        format!("city-{}", i % 97),
    ];
    let mut values = vec![RawValue::Bytes((i as i32).to_le_bytes().to_vec())];
    for (name, text) in MAPPED.iter().zip(plain) {
        let column = ColumnRef {
            database: DATABASE.into(),
            schema: "dbo".into(),
            table: TABLE.into(),
            column: (*name).into(),
        };
        let sealed = cipher
            .seal(
                &column,
                PLAIN_TYPE,
                EncryptionMode::Randomized,
                &utf16(&text),
            )
            .expect("seal");
        values.push(RawValue::Bytes(sealed));
    }
    values.push(RawValue::Bytes((i as i64 * 7).to_le_bytes().to_vec()));
    values.push(RawValue::Bytes((i as f64 + 0.25).to_le_bytes().to_vec()));
    Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values,
    }
}

/// The response's packets and the length of its token stream.
fn response(cipher: &EnvelopeValueCipher) -> (Vec<u8>, usize) {
    let envelope_max = u16::try_from(envelope_len(80)).expect("fits");
    let meta = Arc::new(server_metadata(envelope_max));
    let mut ctx = TokenContext::default();
    let mut stream = Vec::new();
    let head = Token::ColMetadata(meta);
    head.encode(&ctx, &mut stream).expect("encode");
    ctx.observe(&head);
    for i in 0..ROWS {
        Token::Row(row(i, cipher))
            .encode(&ctx, &mut stream)
            .expect("encode");
    }
    let done = Token::Done(Done {
        kind: DoneKind::Done,
        status: DoneStatus(DoneStatus::COUNT),
        cur_cmd: 0xC1,
        row_count: ROWS as u64,
    });
    done.encode(&ctx, &mut stream).expect("encode");
    let mut packets = BytesMut::new();
    encode_message(
        PacketType::TabularResult,
        0,
        &stream,
        PACKET_SIZE,
        &mut packets,
    )
    .expect("packets");
    (packets.to_vec(), stream.len())
}

/// Reads the packets and writes what the client would get; returns rows.
fn relay(
    input: &[u8],
    mode: RowMode,
    mut session: Option<&mut tdsguard::rewrite::Session>,
    out: &mut Vec<u8>,
) -> usize {
    let mut packets = PacketReader::new();
    let mut tokens = TokenReader::new(TokenContext::default());
    tokens.set_row_mode(mode);
    let mut server_ctx = TokenContext::default();
    let mut rows = 0;
    packets.feed(input);
    while let Some(packet) = packets.next_packet().expect("packet") {
        tokens.handle_bytes(&packet.payload());
        while let Some(item) = tokens.poll_item().expect("tokens") {
            match item {
                Item::RowPiece(piece) => out.extend_from_slice(&piece),
                Item::RowEnd => rows += 1,
                Item::Token { token, raw } => {
                    server_ctx.observe(&token);
                    rows += usize::from(matches!(token, Token::Row(_)));
                    let action = match session.as_deref_mut() {
                        Some(s) => s.handle_token(&token, &server_ctx).expect("rewrite"),
                        None => TokenAction::Forward,
                    };
                    match action {
                        TokenAction::Forward => out.extend_from_slice(&raw),
                        TokenAction::Replace(bytes) => out.extend_from_slice(&bytes),
                    }
                }
            }
        }
    }
    rows
}

fn rewriter(cipher: Arc<EnvelopeValueCipher>) -> Arc<Rewriter> {
    let map = ColumnMap::new(&mapped_columns(), &[]).expect("column map");
    Arc::new(Rewriter::new(map, cipher, 64))
}

/// A session that has just sent the SELECT and expects its result.
fn session(rewriter: &Arc<Rewriter>) -> tdsguard::rewrite::Session {
    let mut session = rewriter.session(DATABASE);
    let batch = SqlBatch {
        all_headers: None,
        text: format!("SELECT id, c1, c2, c3, c4, qty, price FROM {TABLE}"),
    };
    let outcome = session.handle_sql_batch(&batch).expect("analysis");
    assert_eq!(outcome, Outcome::Unchanged);
    assert!(session.response_needs_rewrite());
    session
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn rewrite_benches(c: &mut Criterion) {
    let cipher = Arc::new(envelopes());
    let (input, stream_len) = response(&cipher);
    let rewriter = rewriter(Arc::clone(&cipher));

    // The decrypting path must really open the values.
    let mut out = Vec::with_capacity(stream_len);
    let mut s = session(&rewriter);
    assert_eq!(
        relay(&input, RowMode::default(), Some(&mut s), &mut out),
        ROWS
    );
    assert!(contains(&out, &utf16("name-99999")), "values opened");

    let mut group = c.benchmark_group("rewrite_100k_rows_4_encrypted");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    let paths: [(&str, RowMode, bool); 3] = [
        ("forward", RowMode::Pieces, false),
        ("decode_only", RowMode::default(), false),
        ("decrypt_4_cols", RowMode::default(), true),
    ];
    for (name, mode, decrypt) in paths {
        let id = BenchmarkId::new(name, PACKET_SIZE);
        group.bench_with_input(id, &input, |b, input| {
            b.iter(|| {
                out.clear();
                let mut s = decrypt.then(|| session(&rewriter));
                let rows = relay(black_box(input), mode, s.as_mut(), &mut out);
                assert_eq!(rows, ROWS);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rewrite_benches);
criterion_main!(benches);
