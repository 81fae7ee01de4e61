//! Codec benchmarks, no network. Token part: a generated result of 100 000
//! rows (int, nvarchar(50), datetime2(7), decimal(18,2), varbinary(max))
//! arriving in 4 KiB and 32 KiB packets, read with `PacketReader` and the
//! streaming `TokenReader`, on two paths:
//!
//! - `forward`: rows as raw pieces, every item's bytes copied to the output
//!   unchanged (what a relay does with results it does not rewrite);
//! - `full_decode`: rows decoded whole and every token re-encoded (what the
//!   column rewriter pays at least).
//!
//! Throughput is reported in bytes (of token stream) and in rows.

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use tdsguard::tds::login7::Login7;
use tdsguard::tds::packet::{
    encode_message, Assembled, MessageAssembler, PacketReader, PacketType,
};
use tdsguard::tds::prelogin::PreLogin;
use tdsguard::tds::reader::Reader;
use tdsguard::tds::stream::{Item, RowMode, TokenReader};
use tdsguard::tds::token::{
    ColMetadata, ColumnData, Done, DoneKind, DoneStatus, PlpLength, RawValue, Row, RowKind, Token,
    TokenContext, TypeInfoRaw,
};

const ROWS: usize = 100_000;

fn column(name: &str, type_info: &[u8]) -> ColumnData {
    let mut r = Reader::new(type_info, "bench");
    ColumnData {
        user_type: 0,
        flags: 0x0001,
        type_info: TypeInfoRaw::decode(&mut r).expect("type info"),
        table_name: None,
        crypto: None,
        name: name.into(),
    }
}

fn metadata() -> ColMetadata {
    const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];
    let mut nvarchar = vec![0xE7, 100, 0];
    nvarchar.extend_from_slice(&COLLATION);
    ColMetadata {
        no_metadata: false,
        cek_table: None,
        columns: vec![
            column("id", &[0x38]),
            column("name", &nvarchar),
            column("at", &[0x2A, 7]),
            column("amount", &[0x6A, 9, 18, 2]),
            column("blob", &[0xA5, 0xFF, 0xFF]),
        ],
    }
}

fn row(i: usize) -> Row {
    let name: Vec<u8> = format!("patient-{i:08}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let blob = vec![(i % 251) as u8; 16 + i % 48];
    Row {
        kind: RowKind::Row,
        null_bitmap: Vec::new(),
        values: vec![
            RawValue::Bytes((i as u32).to_le_bytes().to_vec()),
            RawValue::Bytes(name),
            RawValue::Bytes(vec![0x40, 0x1F, 0x93, 0x6D, 0x05, 0x0B, 0x42, 0x0B]),
            RawValue::Bytes(vec![1, 0x39, 0x30, 0, 0, 0, 0, 0, 0]),
            RawValue::Plp {
                length: PlpLength::Known(blob.len() as u64),
                chunks: vec![blob.len() as u32],
                data: blob,
            },
        ],
    }
}

/// The token stream of one generated result.
fn token_stream() -> Vec<u8> {
    let meta = Arc::new(metadata());
    let mut ctx = TokenContext::default();
    let mut out = Vec::new();
    let head = Token::ColMetadata(Arc::clone(&meta));
    head.encode(&ctx, &mut out).expect("encode");
    ctx.observe(&head);
    for i in 0..ROWS {
        Token::Row(row(i)).encode(&ctx, &mut out).expect("encode");
    }
    let done = Done {
        kind: DoneKind::Done,
        status: DoneStatus(DoneStatus::COUNT),
        cur_cmd: 0xC1,
        row_count: ROWS as u64,
    };
    Token::Done(done).encode(&ctx, &mut out).expect("encode");
    out
}

fn packets(stream: &[u8], packet_size: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_message(PacketType::TabularResult, 0, stream, packet_size, &mut out).expect("packets");
    out.to_vec()
}

/// Reads packets, feeds their payloads to the token reader and writes every
/// item to `out`: raw on the forward path, re-encoded on the decode path.
fn relay(input: &[u8], mode: RowMode, out: &mut Vec<u8>) -> usize {
    let mut packets = PacketReader::new();
    let mut tokens = TokenReader::new(TokenContext::default());
    tokens.set_row_mode(mode);
    let mut ctx = TokenContext::default();
    let mut rows = 0;
    packets.feed(input);
    while let Some(packet) = packets.next_packet().expect("packet") {
        tokens.handle_bytes(&packet.payload());
        while let Some(item) = tokens.poll_item().expect("tokens") {
            rows += emit(item, mode, &mut ctx, out);
        }
    }
    rows
}

fn emit(item: Item, mode: RowMode, ctx: &mut TokenContext, out: &mut Vec<u8>) -> usize {
    match (item, mode) {
        (Item::RowEnd, _) => 1,
        (Item::RowPiece(piece), _) => {
            out.extend_from_slice(&piece);
            0
        }
        (Item::Token { raw, .. }, RowMode::Pieces) => {
            out.extend_from_slice(&raw);
            0
        }
        (Item::Token { token, .. }, RowMode::Whole { .. }) => {
            token.encode(ctx, out).expect("re-encode");
            ctx.observe(&token);
            usize::from(matches!(token, Token::Row(_)))
        }
    }
}

fn token_benches(c: &mut Criterion) {
    let stream = token_stream();
    let paths = [
        ("forward", RowMode::Pieces),
        ("full_decode", RowMode::default()),
    ];
    for (unit, throughput) in [
        ("bytes", Throughput::Bytes(stream.len() as u64)),
        ("rows", Throughput::Elements(ROWS as u64)),
    ] {
        let mut group = c.benchmark_group(format!("tokens_100k_rows_{unit}"));
        group.throughput(throughput);
        group.sample_size(10);
        for packet_size in [4096, 32767] {
            let input = packets(&stream, packet_size);
            for (name, mode) in paths {
                let id = BenchmarkId::new(name, packet_size);
                let mut out = Vec::with_capacity(stream.len());
                group.bench_with_input(id, &input, |b, input| {
                    b.iter(|| {
                        out.clear();
                        let rows = relay(black_box(input), mode, &mut out);
                        assert_eq!(rows, ROWS);
                        assert_eq!(out.len(), stream.len());
                    })
                });
            }
        }
        group.finish();
    }
}

/// Client side: PRELOGIN and LOGIN7 decode + byte-exact encode of the
/// MS-TDS examples, and packet framing plus message assembly of a real
/// multi-packet RPC capture fed in 1 KiB pieces.
fn client_benches(c: &mut Criterion) {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/");
    let read = |name: &str| std::fs::read(format!("{fixtures}{name}")).unwrap();
    let prelogin = read("ms-tds-examples/ms-tds-4.1_prelogin_request.bin");
    let login = read("ms-tds-examples/ms-tds-4.2_login7_request.bin");
    let rpc_stream = read("wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream5.node0.bin");

    let mut group = c.benchmark_group("client_messages");
    group.bench_function("prelogin_decode_encode", |b| {
        b.iter(|| {
            let p = PreLogin::decode(black_box(&prelogin[8..])).unwrap();
            let mut out = BytesMut::new();
            p.encode(&mut out).unwrap();
            out
        })
    });
    group.bench_function("login7_decode_encode", |b| {
        b.iter(|| {
            let l = Login7::decode(black_box(&login[8..])).unwrap();
            let mut out = BytesMut::new();
            l.encode(&mut out).unwrap();
            out
        })
    });
    group.throughput(Throughput::Bytes(rpc_stream.len() as u64));
    group.bench_function("packets_and_messages", |b| {
        b.iter(|| assemble(black_box(&rpc_stream)))
    });
    group.finish();
}

/// Splits `stream` into packets and messages; returns the payload bytes.
fn assemble(stream: &[u8]) -> usize {
    let mut reader = PacketReader::new();
    let mut assembler = MessageAssembler::default();
    let mut payload = 0;
    for piece in stream.chunks(1024) {
        reader.feed(piece);
        while let Some(packet) = reader.next_packet().unwrap() {
            if let Some(Assembled::Message(m)) = assembler.push(&packet).unwrap() {
                payload += m.payload.len();
            }
        }
    }
    payload
}

criterion_group!(benches, token_benches, client_benches);
criterion_main!(benches);
