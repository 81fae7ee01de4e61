//! Envelope cost next to the bare AEAD: seal and open at 16 B, 256 B and 4 KiB, in both modes,
//! against AES-256-GCM (and AES-256-GCM-SIV for deterministic mode) on the same sizes with the
//! same 54-byte associated data, in the same run. Plus one RSA-OAEP unwrap of a data key.
//!
//! What the envelope adds: a mutex and a ChaCha20 nonce (randomized), the synthetic-nonce HMAC
//! (deterministic), a cached per-key lookup, header encoding and one allocation per call.
//!
//! Run: `cargo bench --bench envelope` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use aes_gcm_siv::Aes256GcmSiv;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use tdsguard::crypto::{
    unwrap, ColumnId, CompanyKey, DataKey, DataKeyId, EnvelopeCipher, Mode, SqlType, ValueBinding,
};

const SIZES: [usize; 3] = [16, 256, 4096];

/// Test-only key from the fixtures; never used for data.
const TEST_KEY_PEM: &str = include_str!("../fixtures/envelope/test-company-key-a.pem");

fn setup() -> (EnvelopeCipher, ValueBinding) {
    let id = DataKeyId::new(1).expect("id");
    let cipher = EnvelopeCipher::new(Arc::new(DataKey::from_bytes(id, [7; 32]))).expect("cipher");
    let column = ColumnId::parse("Clinic.dbo.Patients.Notes").expect("column");
    let binding = ValueBinding::new(column, SqlType::parse("varbinary(max)").expect("type"));
    (cipher, binding)
}

fn seal(c: &mut Criterion) {
    let (cipher, binding) = setup();
    let gcm = Aes256Gcm::new(&[7u8; 32].into());
    let siv = Aes256GcmSiv::new(&[7u8; 32].into());
    let aad = [0x5au8; 54];
    let nonce = [1u8; 12];

    let mut group = c.benchmark_group("seal");
    for size in SIZES {
        let plain = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("raw_aes256gcm", size), &plain, |b, p| {
            b.iter(|| gcm.encrypt(&nonce.into(), Payload { msg: p, aad: &aad }))
        });
        group.bench_with_input(BenchmarkId::new("randomized", size), &plain, |b, p| {
            b.iter(|| cipher.seal(Mode::Randomized, &binding, black_box(p)))
        });
        group.bench_with_input(
            BenchmarkId::new("raw_aes256gcmsiv", size),
            &plain,
            |b, p| b.iter(|| siv.encrypt(&nonce.into(), Payload { msg: p, aad: &aad })),
        );
        group.bench_with_input(BenchmarkId::new("deterministic", size), &plain, |b, p| {
            b.iter(|| cipher.seal(Mode::Deterministic, &binding, black_box(p)))
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let (cipher, binding) = setup();
    let gcm = Aes256Gcm::new(&[7u8; 32].into());
    let siv = Aes256GcmSiv::new(&[7u8; 32].into());
    let aad = [0x5au8; 54];
    let nonce = [1u8; 12];

    let mut group = c.benchmark_group("open");
    for size in SIZES {
        let plain = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));

        let raw = gcm
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("raw");
        group.bench_with_input(BenchmarkId::new("raw_aes256gcm", size), &raw, |b, ct| {
            b.iter(|| gcm.decrypt(&nonce.into(), Payload { msg: ct, aad: &aad }))
        });
        let sealed = cipher
            .seal(Mode::Randomized, &binding, &plain)
            .expect("seal");
        group.bench_with_input(BenchmarkId::new("randomized", size), &sealed, |b, env| {
            b.iter(|| cipher.open(&binding, black_box(env)))
        });

        let raw = siv
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("raw");
        group.bench_with_input(BenchmarkId::new("raw_aes256gcmsiv", size), &raw, |b, ct| {
            b.iter(|| siv.decrypt(&nonce.into(), Payload { msg: ct, aad: &aad }))
        });
        let sealed = cipher
            .seal(Mode::Deterministic, &binding, &plain)
            .expect("seal");
        group.bench_with_input(
            BenchmarkId::new("deterministic", size),
            &sealed,
            |b, env| b.iter(|| cipher.open(&binding, black_box(env))),
        );
    }
    group.finish();
}

fn rsa_unwrap(c: &mut Criterion) {
    let company = CompanyKey::from_pkcs8_pem(TEST_KEY_PEM, "test key").expect("test key");
    let key = DataKey::generate(DataKeyId::new(1).expect("id")).expect("data key");
    let wrapped = key.wrap(&company).expect("wrap");

    c.bench_function("unwrap_rsa2048_oaep", |b| {
        b.iter(|| unwrap(black_box(&wrapped), &company))
    });
}

criterion_group!(benches, seal, open, rsa_unwrap);
criterion_main!(benches);
