//! Every capture in fixtures/ decodes completely and re-encodes byte for
//! byte, whole, fed one byte at a time and split at (every or a sample of)
//! offsets; property tests for the client message codecs; arbitrary bytes
//! never panic a decoder.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use tdsguard::cli::dump::{dump_bytes, guess_direction, DumpSummary, Dumper};
use tdsguard::tds::all_headers::{AllHeaders, Header};
use tdsguard::tds::login7::{Feature, Login7};
use tdsguard::tds::packet::{
    encode_message, Assembled, MessageAssembler, PacketHeader, PacketReader, PacketType,
};
use tdsguard::tds::prelogin::PreLogin;
use tdsguard::tds::sql_batch::SqlBatch;
use tdsguard::tds::{tls_record, Reader};

/// Files up to this size get the every-offset split test; larger ones a
/// sample of split points, to keep the test fast in debug builds.
const EVERY_OFFSET_LIMIT: usize = 1200;

/// Split points tried in a larger file.
const SAMPLED_SPLITS: usize = 97;

/// Stream and message captures (not the always-encrypted prior art, the
/// NTLM blob, which is an SSPI payload, or the JSON vectors).
fn capture_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() || dir.ends_with("always-encrypted") {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".bin") && !name.contains("ntlm") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

fn dump_whole(bytes: &[u8]) -> (DumpSummary, String) {
    let mut text = Vec::new();
    let summary = dump_bytes(bytes, None, true, &mut text).unwrap();
    (summary, String::from_utf8(text).unwrap())
}

/// Dumps `bytes` fed in the pieces `cuts` marks, under the assumptions the
/// whole-file dump settled on.
fn dump_pieces(bytes: &[u8], whole: &DumpSummary, cuts: &[usize]) -> (DumpSummary, String) {
    let mut out = Vec::new();
    let mut dumper = Dumper::new(guess_direction(bytes), true, &mut out);
    if let Some(assumptions) = whole.assumptions {
        dumper.assume(assumptions);
    }
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        dumper.feed(&bytes[start..cut]).unwrap();
        start = cut;
    }
    let mut summary = dumper.finish().unwrap();
    summary.assumptions = whole.assumptions;
    (summary, String::from_utf8(out).unwrap())
}

#[test]
fn every_capture_decodes_and_reencodes() {
    let files = capture_files();
    assert!(files.len() >= 40, "fixtures missing: {}", files.len());
    let mut failed = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let (summary, text) = dump_whole(&bytes);
        // TLS records are recognised, not re-encoded; everything else is.
        let reproduced = summary.roundtrip_checked > 0 || summary.tls_records > 0;
        if !summary.success() || !reproduced || summary.understood_bytes == 0 {
            failed.push(format!("{}:\n{text}", file.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn captures_fed_one_byte_at_a_time() {
    for file in capture_files() {
        let bytes = std::fs::read(&file).unwrap();
        let whole = dump_whole(&bytes);
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(
            dump_pieces(&bytes, &whole.0, &cuts),
            whole,
            "{}",
            file.display()
        );
    }
}

#[test]
fn captures_split_at_every_offset_or_a_sample() {
    for file in capture_files() {
        let bytes = std::fs::read(&file).unwrap();
        let whole = dump_whole(&bytes);
        let step = match bytes.len() <= EVERY_OFFSET_LIMIT {
            true => 1,
            false => bytes.len() / SAMPLED_SPLITS,
        };
        for cut in (1..bytes.len()).step_by(step.max(1)) {
            let split = dump_pieces(&bytes, &whole.0, &[cut]);
            assert_eq!(split, whole, "{} split at {cut}", file.display());
        }
    }
}

#[test]
fn login7_password_never_appears_in_a_dump() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let bytes = std::fs::read(root.join("client-first-packets/jtds-prelogin.bin")).unwrap();
    let login = Login7::decode(&bytes[8..]).unwrap();
    assert!(!login.password.is_empty());
    let (_, text) = dump_whole(&bytes);
    assert!(!text.contains(login.password.as_str()), "{text}");
}

#[test]
fn every_prefix_of_small_client_messages_needs_more_or_is_whole() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for name in [
        "ms-tds-4.1_prelogin_request.bin",
        "ms-tds-4.2_login7_request.bin",
    ] {
        let bytes = std::fs::read(root.join("ms-tds-examples").join(name)).unwrap();
        for cut in 0..bytes.len() {
            let mut reader = PacketReader::new();
            reader.feed(&bytes[..cut]);
            assert_eq!(reader.next_packet().unwrap(), None, "{name} at {cut}");
        }
    }
}

// ---- property tests ----

fn arb_packet_type() -> impl Strategy<Value = PacketType> {
    prop::sample::select(vec![
        PacketType::SqlBatch,
        PacketType::Rpc,
        PacketType::TabularResult,
        PacketType::BulkLoad,
        PacketType::Login7,
        PacketType::PreLogin,
        PacketType::TransactionManager,
    ])
}

/// Splits an encoded message back into its payload, checking each packet.
fn reassemble(encoded: &[u8]) -> (Bytes, u8, usize) {
    let mut reader = PacketReader::new();
    reader.feed(encoded);
    let mut assembler = MessageAssembler::default();
    let mut packets = 0;
    while let Some(packet) = reader.next_packet().unwrap() {
        packets += 1;
        let mut header = BytesMut::new();
        packet.header.encode(&mut header);
        assert_eq!(&header[..], &packet.raw[..8]);
        if let Some(Assembled::Message(m)) = assembler.push(&packet).unwrap() {
            assert_eq!(reader.buffered(), 0);
            return (m.payload, m.reset_flags, packets);
        }
    }
    panic!("no message");
}

fn arb_prelogin() -> impl Strategy<Value = PreLogin> {
    let option = (0u8..0x20, prop::collection::vec(any::<u8>(), 0..40));
    prop::collection::vec(option, 0..10).prop_map(|options| {
        let mut p = PreLogin::new();
        for (token, data) in options {
            // Known options have fixed lengths; give those valid data.
            match token {
                0x00 => p.set_option(token, &[1, 2, 3, 4, 5, 6]),
                0x01 => p.set_option(token, &[data.first().copied().unwrap_or(0) & 0x83]),
                0x03 => p.set_option(token, &[9; 4]),
                0x04 | 0x06 => p.set_option(token, &[1]),
                0x05 => p.set_option(token, &[7; 36]),
                0x07 => p.set_option(token, &[8; 32]),
                _ => p.set_option(token, &data),
            }
        }
        p
    })
}

fn arb_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

fn arb_login7() -> impl Strategy<Value = Login7> {
    let versions = prop::sample::select(vec![
        0x7000_0000u32,
        0x7100_0001,
        0x7209_0002,
        0x730B_0003,
        0x7400_0004,
        0x0800_0000,
    ]);
    let features = prop::option::of(prop::collection::vec(
        (0u8..0xFF, prop::collection::vec(any::<u8>(), 0..16)),
        0..5,
    ));
    (
        versions,
        any::<[u32; 4]>(),
        prop::collection::vec(arb_text(), 10),
        prop::collection::vec(any::<u8>(), 0..50),
        features,
        any::<[u8; 6]>(),
    )
        .prop_map(|(tds_version, nums, texts, sspi, features, client_id)| {
            let modern = tds_version >= 0x7200_0000 || tds_version == 0x0800_0000;
            let mut login = Login7::default();
            login.tds_version = tds_version;
            login.packet_size = nums[0];
            login.client_pid = nums[1];
            login.client_lcid = nums[2];
            login.client_time_zone = nums[3] as i32;
            login.hostname = texts[0].clone();
            login.username = texts[1].clone();
            login.app_name = texts[3].clone();
            login.server_name = texts[4].clone();
            login.library_name = texts[5].clone();
            login.language = texts[6].clone();
            login.database = texts[7].clone();
            login.attach_db_file = texts[8].clone();
            login.client_id = client_id;
            *login.password = texts[2].clone();
            *login.sspi = sspi;
            if modern {
                *login.change_password = texts[9].clone();
            }
            if let Some(list) = features.filter(|_| modern) {
                login.option_flags3 |= 0x10;
                login.features = Some(
                    list.into_iter()
                        .map(|(id, data)| Feature {
                            id,
                            data: Bytes::from(data),
                        })
                        .collect(),
                );
            }
            login
        })
}

fn arb_batch() -> impl Strategy<Value = SqlBatch> {
    let header = prop_oneof![
        (any::<u64>(), any::<u32>()).prop_map(|(descriptor, outstanding_requests)| {
            Header::TransactionDescriptor {
                descriptor,
                outstanding_requests,
            }
        }),
        (any::<[u8; 16]>(), any::<u32>()).prop_map(|(activity_id, sequence)| {
            Header::TraceActivity {
                activity_id,
                sequence,
            }
        }),
        (arb_text(), arb_text(), prop::option::of(any::<u32>())).prop_map(|(n, s, timeout)| {
            Header::QueryNotifications {
                notify_id: n,
                ssb_deployment: s,
                timeout,
            }
        }),
    ];
    let headers = prop::option::of(prop::collection::vec(header, 1..4));
    (headers, arb_text()).prop_map(|(headers, text)| SqlBatch {
        all_headers: headers.map(|headers| AllHeaders { headers }),
        text,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn packets_encode_decode_encode(
        packet_type in arb_packet_type(),
        reset in prop::sample::select(vec![0u8, 0x08, 0x10]),
        payload in prop::collection::vec(any::<u8>(), 0..3000),
        packet_size in 9usize..1200,
    ) {
        let mut encoded = BytesMut::new();
        encode_message(packet_type, reset, &payload, packet_size, &mut encoded).unwrap();
        let (decoded, reset_flags, packets) = reassemble(&encoded);
        prop_assert_eq!(&decoded[..], &payload[..]);
        prop_assert_eq!(reset_flags, reset);
        prop_assert_eq!(packets, payload.len().div_ceil(packet_size - 8).max(1));

        let mut again = BytesMut::new();
        encode_message(packet_type, reset_flags, &decoded, packet_size, &mut again).unwrap();
        prop_assert_eq!(&again[..], &encoded[..]);
    }

    #[test]
    fn prelogin_encode_decode_encode(prelogin in arb_prelogin()) {
        let mut first = BytesMut::new();
        prelogin.encode(&mut first).unwrap();
        let decoded = PreLogin::decode(&first).unwrap();
        prop_assert_eq!(decoded.options(), prelogin.options());
        let mut second = BytesMut::new();
        decoded.encode(&mut second).unwrap();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn login7_encode_decode_encode(login in arb_login7()) {
        let mut first = BytesMut::new();
        login.encode(&mut first).unwrap();
        let decoded = Login7::decode(&first).unwrap();
        prop_assert_eq!(&decoded.username, &login.username);
        prop_assert_eq!(decoded.password.as_str(), login.password.as_str());
        prop_assert_eq!(&decoded.features, &login.features);
        let mut second = BytesMut::new();
        decoded.encode(&mut second).unwrap();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn sql_batch_encode_decode_encode(batch in arb_batch()) {
        let mut first = BytesMut::new();
        batch.encode(&mut first).unwrap();
        let decoded = SqlBatch::decode_with(&first, batch.all_headers.is_some()).unwrap();
        prop_assert_eq!(&decoded, &batch);
        let mut second = BytesMut::new();
        decoded.encode(&mut second).unwrap();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = PacketHeader::decode(&bytes);
        let mut reader = PacketReader::new();
        reader.feed(&bytes);
        while let Ok(Some(_)) = reader.next_packet() {}

        if let Ok(p) = PreLogin::decode(&bytes) {
            let mut out = BytesMut::new();
            p.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..], &bytes[..]);
        }
        if let Ok(login) = Login7::decode(&bytes) {
            let mut out = BytesMut::new();
            login.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..], &bytes[..]);
        }
        if let Ok(batch) = SqlBatch::decode(&bytes) {
            let mut out = BytesMut::new();
            batch.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..], &bytes[..]);
        }
        let _ = AllHeaders::decode(&mut Reader::new(&bytes, "test"));
        let _ = tls_record::client_hello(&bytes);
        let _ = tls_record::decode_client_hello(&bytes);

        let mut out = Vec::new();
        let mut dumper = Dumper::new(None, true, &mut out);
        dumper.feed(&bytes).unwrap();
        let summary = dumper.finish().unwrap();
        prop_assert!(summary.understood_bytes <= bytes.len() as u64);
    }

    #[test]
    fn login7_shaped_bytes_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 94..400),
        version in prop::sample::select(vec![0x7100_0001u32, 0x7400_0004, 0x0800_0000]),
    ) {
        // A valid Length and TDSVersion reach the offset checks.
        let len = bytes.len() as u32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        if let Ok(login) = Login7::decode(&bytes) {
            let mut out = BytesMut::new();
            login.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..], &bytes[..]);
        }
    }
}

/// The command line over every `.bin` under fixtures/, the NTLM blob
/// included: `tdsguard dump --roundtrip` exits 0 on each.
#[test]
fn dump_command_exits_zero_on_every_capture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_none_or(|ext| ext != "bin") {
                continue;
            }
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_tdsguard"))
                .arg("dump")
                .arg("--roundtrip")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 41, "fixtures missing: {checked}");
}
