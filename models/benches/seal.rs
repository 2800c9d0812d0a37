//! Throughput of sealing and opening, beside the same AES-256-GCM work done directly with ring over
//! the same chunking, and SHA-384 alone. Sealing is single-threaded (so its figures are per core);
//! opening hashes on a second thread while the caller's thread reads and decrypts, so its target is
//! the speed of SHA-384 alone (>= 0.9x).
//!
//! `cargo bench -p cloister-models` (optional argument: size in MiB, default 64).
//! Design target (DESIGN.md §8): sealed-model decryption >= 1 GB/s per core.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use cloister_models::{open_expecting, seal, ModelDigest, ModelKey, DEFAULT_CHUNK_SIZE, TAG_LEN};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use ring::rand::SystemRandom;

const ITERATIONS: usize = 7;

fn best_of(mut f: impl FnMut()) -> Duration {
    f(); // warm-up: page faults, caches
    (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

fn report(what: &str, bytes: usize, t: Duration) {
    let mb_s = bytes as f64 / t.as_secs_f64() / 1e6;
    println!(
        "{what:<52} {:>9.2} ms {:>9.0} MB/s",
        t.as_secs_f64() * 1e3,
        mb_s
    );
}

fn nonce(i: usize, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&(i as u32).to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(64);
    let len = mib << 20;
    let plaintext: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let rng = SystemRandom::new();
    let key = ModelKey::generate(&rng).unwrap();
    let digest = ModelDigest::of(&plaintext);
    println!("cloister-models seal/open, {mib} MiB plaintext, best of {ITERATIONS}");

    for chunk_size in [DEFAULT_CHUNK_SIZE, 64 * 1024] {
        let cs = chunk_size as usize;
        println!("\nchunk size {} KiB", cs / 1024);
        let aad = [7u8; 48];
        let raw_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose_secret()).unwrap());

        // ring alone, in place, same chunking and nonce layout.
        let mut buf = plaintext.clone();
        let mut tags = vec![[0u8; TAG_LEN]; len.div_ceil(cs).max(1)];
        let t = best_of(|| {
            let n = buf.len().div_ceil(cs);
            for (i, chunk) in buf.chunks_mut(cs).enumerate() {
                let tag = raw_key
                    .seal_in_place_separate_tag(nonce(i, i + 1 == n), Aad::from(&aad), chunk)
                    .unwrap();
                tags[i].copy_from_slice(tag.as_ref());
            }
            black_box(&buf);
        });
        report("ring AES-256-GCM seal_in_place (baseline)", len, t);
        // Re-encrypt once so that buf holds ciphertext for exactly one pass of `tags`.
        let mut ciphertext = plaintext.clone();
        let n = ciphertext.len().div_ceil(cs);
        for (i, chunk) in ciphertext.chunks_mut(cs).enumerate() {
            let tag = raw_key
                .seal_in_place_separate_tag(nonce(i, i + 1 == n), Aad::from(&aad), chunk)
                .unwrap();
            tags[i].copy_from_slice(tag.as_ref());
        }
        let t = best_of(|| {
            buf.copy_from_slice(&ciphertext);
            for (i, chunk) in buf.chunks_mut(cs).enumerate() {
                raw_key
                    .open_in_place_separate_tag(
                        nonce(i, i + 1 == n),
                        Aad::from(&aad),
                        Tag::from(tags[i]),
                        chunk,
                        0..,
                    )
                    .unwrap();
            }
            black_box(&buf);
        });
        let copy = best_of(|| {
            buf.copy_from_slice(&ciphertext);
            black_box(&buf);
        });
        report(
            "ring AES-256-GCM open_in_place (baseline, excl. copy)",
            len,
            t.saturating_sub(copy),
        );

        // Cloister.
        let mut sealed = Vec::with_capacity(len + len / cs * TAG_LEN + 4096);
        let t = best_of(|| {
            sealed.clear();
            seal(
                Cursor::new(&plaintext),
                &mut sealed,
                &key,
                "bench",
                chunk_size,
                &rng,
                &mut |_| {},
            )
            .unwrap();
        });
        report("cloister seal (hash pass + encrypt pass + re-hash)", len, t);
        // The call alone: dropping the plaintext (zeroizing it) is timed on its own line.
        let (mut open_best, mut drop_best) = (Duration::MAX, Duration::MAX);
        for _ in 0..=ITERATIONS {
            let start = Instant::now();
            let opened = open_expecting(&sealed[..], &key, &digest, len as u64).unwrap();
            black_box(opened.as_bytes());
            open_best = open_best.min(start.elapsed());
            let start = Instant::now();
            drop(opened);
            drop_best = drop_best.min(start.elapsed());
        }
        report(
            "cloister open_expecting (decrypt, copy in | SHA-384)",
            len,
            open_best,
        );
        report(
            "  then dropping the plaintext (zeroize, unmap)",
            len,
            drop_best,
        );
    }

    println!();
    let t = best_of(|| {
        black_box(ModelDigest::of(&plaintext));
    });
    report("SHA-384 alone (ring), for reference", len, t);
    let t = best_of(|| {
        black_box(ring::digest::digest(&ring::digest::SHA256, &plaintext));
    });
    report("SHA-256 alone (ring, SHA-NI), for reference", len, t);
    let t = best_of(|| {
        let mut fresh: Vec<u8> = Vec::with_capacity(len);
        fresh.extend_from_slice(&plaintext);
        black_box(&fresh);
    });
    report(
        "fresh allocation + copy in (page faults), reference",
        len,
        t,
    );
}
