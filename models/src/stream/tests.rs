use std::io::Cursor;

use proptest::prelude::*;
use ring::rand::SystemRandom;

use super::*;
use crate::error::Part;
use crate::header::{read_header, FIXED_HEADER_LEN, MIN_CHUNK_SIZE};
use crate::key::KEY_LEN;
use crate::open::{open, open_expecting, HASH_PIECE_LEN};

const CS: u32 = MIN_CHUNK_SIZE;
const CSU: usize = CS as usize;
const NO_LIMIT: u64 = u64::MAX;

fn key(byte: u8) -> ModelKey {
    ModelKey::from_bytes(&[byte; KEY_LEN])
}

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

fn seal_vec(pt: &[u8], key: &ModelKey, name: &str, chunk_size: u32) -> (Vec<u8>, SealedHeader) {
    let mut out = Vec::new();
    let header = seal(
        Cursor::new(pt),
        &mut out,
        key,
        name,
        chunk_size,
        &SystemRandom::new(),
        &mut |_| {},
    )
    .unwrap();
    (out, header)
}

/// Splits a sealed model into its header and its chunks (ciphertext || tag each).
fn split(sealed: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (header, header_len) = read_header(sealed).unwrap();
    let mut chunks = Vec::new();
    let mut off = header_len;
    for index in 0..header.chunk_count() {
        let n = header.chunk_plaintext_len(index) + TAG_LEN;
        chunks.push(sealed[off..off + n].to_vec());
        off += n;
    }
    assert_eq!(off, sealed.len());
    (sealed[..header_len].to_vec(), chunks)
}

fn join(header: &[u8], chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = header.to_vec();
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

fn open_err(sealed: &[u8], key: &ModelKey) -> Error {
    match open(sealed, key, NO_LIMIT) {
        Ok(p) => panic!("opened a tampered model: {p:?}"),
        Err(e) => e,
    }
}

/// A 4-chunk model (3 full chunks and a short last one) sealed under key 1.
fn four_chunks() -> (Vec<u8>, Vec<u8>, SealedHeader) {
    let pt = data(3 * CSU + 100);
    let (sealed, header) = seal_vec(&pt, &key(1), "model", CS);
    assert_eq!(header.chunk_count(), 4);
    (pt, sealed, header)
}

#[test]
fn round_trip_boundary_sizes() {
    for len in [0, 1, CSU - 1, CSU, CSU + 1, 2 * CSU, 5 * CSU + 17] {
        let pt = data(len);
        let (sealed, header) = seal_vec(&pt, &key(1), "m", CS);
        assert_eq!(header.plaintext_len(), len as u64);
        assert_eq!(header.digest(), &ModelDigest::of(&pt));
        assert_eq!(
            header.chunk_count(),
            len.div_ceil(CSU).max(1) as u64,
            "{len}"
        );
        assert_eq!(sealed.len() as u64, header.sealed_len());
        let opened = open(&sealed[..], &key(1), NO_LIMIT).unwrap();
        assert_eq!(opened.as_bytes(), &pt[..], "{len}");
        assert_eq!(opened.header(), &header);
        let opened =
            open_expecting(&sealed[..], &key(1), &ModelDigest::of(&pt), len as u64).unwrap();
        assert_eq!(opened.as_bytes(), &pt[..]);
        assert_eq!(opened.name(), "m");
    }
}

#[test]
fn empty_model_is_one_empty_last_chunk() {
    let (sealed, header) = seal_vec(&[], &key(1), "empty", CS);
    assert_eq!(header.chunk_count(), 1);
    assert_eq!(sealed.len(), FIXED_HEADER_LEN + "empty".len() + TAG_LEN);
    assert!(open(&sealed[..], &key(1), 0).unwrap().is_empty());
    // Without its tag it is truncated.
    let err = open_err(&sealed[..sealed.len() - TAG_LEN], &key(1));
    assert!(
        matches!(
            err,
            Error::Truncated {
                at: Part::Chunk { index: 0, count: 1 }
            }
        ),
        "{err:?}"
    );
}

#[test]
fn seals_from_the_current_position() {
    let pt = data(CSU + 3);
    let mut source = Cursor::new(pt.clone());
    source.set_position(3);
    let mut out = Vec::new();
    let header = seal(
        &mut source,
        &mut out,
        &key(1),
        "m",
        CS,
        &SystemRandom::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(header.plaintext_len(), CSU as u64);
    assert_eq!(
        open(&out[..], &key(1), NO_LIMIT).unwrap().as_bytes(),
        &pt[3..]
    );
}

#[test]
fn fresh_nonce_prefix_per_seal() {
    let pt = data(10);
    let (a, ha) = seal_vec(&pt, &key(1), "m", CS);
    let (b, hb) = seal_vec(&pt, &key(1), "m", CS);
    assert_ne!(ha.nonce_prefix(), hb.nonce_prefix());
    assert_ne!(a, b);
}

#[test]
fn truncation() {
    let (_, sealed, header) = four_chunks();
    let (h, chunks) = split(&sealed);
    // The whole last chunk missing: a clean chunk boundary, caught by the last-chunk flag and length.
    let err = open_err(&join(&h, &chunks[..3]), &key(1));
    assert!(
        matches!(
            err,
            Error::Truncated {
                at: Part::Chunk { index: 3, count: 4 }
            }
        ),
        "{err:?}"
    );
    // Cut inside a chunk, inside a tag, and inside the header.
    let err = open_err(&sealed[..sealed.len() - 1], &key(1));
    assert!(
        matches!(
            err,
            Error::Truncated {
                at: Part::Chunk { index: 3, .. }
            }
        ),
        "{err:?}"
    );
    let err = open_err(&sealed[..h.len() + CSU + 5], &key(1));
    assert!(
        matches!(
            err,
            Error::Truncated {
                at: Part::Chunk { index: 0, .. }
            }
        ),
        "{err:?}"
    );
    let err = open_err(&sealed[..h.len()], &key(1));
    assert!(
        matches!(
            err,
            Error::Truncated {
                at: Part::Chunk { index: 0, .. }
            }
        ),
        "{err:?}"
    );
    let err = open_err(&sealed[..h.len() - 1], &key(1));
    assert!(
        matches!(err, Error::Truncated { at: Part::Header }),
        "{err:?}"
    );
    // Exactly chunk-aligned model: dropping the (full) last chunk is still truncation.
    let (sealed, _) = seal_vec(&data(2 * CSU), &key(1), "m", CS);
    let (h, chunks) = split(&sealed);
    let err = open_err(&join(&h, &chunks[..1]), &key(1));
    assert!(
        matches!(
            err,
            Error::Truncated {
                at: Part::Chunk { index: 1, count: 2 }
            }
        ),
        "{err:?}"
    );
    assert_eq!(header.chunk_count(), 4);
}

#[test]
fn dropped_chunk() {
    let (_, sealed, _) = four_chunks();
    let (h, mut chunks) = split(&sealed);
    chunks.remove(1);
    let err = open_err(&join(&h, &chunks), &key(1));
    assert!(
        matches!(err, Error::ChunkAuthFailed { index: 1 }),
        "{err:?}"
    );
}

#[test]
fn dropped_chunk_of_aligned_model() {
    // All chunks the same size: removing one in the middle shifts the last chunk (flag set) forward.
    let (sealed, _) = seal_vec(&data(3 * CSU), &key(1), "m", CS);
    let (h, mut chunks) = split(&sealed);
    chunks.remove(1);
    let err = open_err(&join(&h, &chunks), &key(1));
    assert!(
        matches!(err, Error::ChunkAuthFailed { index: 1 }),
        "{err:?}"
    );
}

#[test]
fn swapped_chunks() {
    let (_, sealed, _) = four_chunks();
    let (h, mut chunks) = split(&sealed);
    chunks.swap(1, 2);
    let err = open_err(&join(&h, &chunks), &key(1));
    assert!(
        matches!(err, Error::ChunkAuthFailed { index: 1 }),
        "{err:?}"
    );
}

#[test]
fn duplicated_chunk() {
    let (_, sealed, _) = four_chunks();
    let (h, chunks) = split(&sealed);
    let mut dup = chunks.clone();
    dup.insert(1, chunks[0].clone());
    let err = open_err(&join(&h, &dup), &key(1));
    assert!(
        matches!(err, Error::ChunkAuthFailed { index: 1 }),
        "{err:?}"
    );
    // The last chunk repeated after itself: trailing data.
    let mut dup = chunks.clone();
    dup.push(chunks[3].clone());
    let err = open_err(&join(&h, &dup), &key(1));
    assert!(matches!(err, Error::TrailingData), "{err:?}");
}

#[test]
fn trailing_garbage() {
    let (_, mut sealed, _) = four_chunks();
    sealed.push(0);
    assert!(matches!(open_err(&sealed, &key(1)), Error::TrailingData));
    // Two sealed models back to back.
    let (other, _) = seal_vec(b"x", &key(1), "m", CS);
    let (mut sealed, _) = seal_vec(b"y", &key(1), "m", CS);
    sealed.extend_from_slice(&other);
    assert!(matches!(open_err(&sealed, &key(1)), Error::TrailingData));
}

#[test]
fn flipped_byte_in_header() {
    let (_, sealed, header) = four_chunks();
    let header_len = header.encoded_len();
    for pos in 0..header_len {
        let mut bad = sealed.clone();
        bad[pos] ^= 0x01;
        let err = open_err(&bad, &key(1));
        let expected = match pos {
            0..=8 => matches!(err, Error::BadMagic),
            9..=10 => matches!(err, Error::UnsupportedVersion { .. }),
            11 => matches!(err, Error::UnsupportedCipher { .. }),
            12..=15 => matches!(
                err,
                Error::InvalidChunkSize { .. }
                    | Error::ChunkAuthFailed { index: 0 }
                    | Error::Truncated { .. }
            ),
            16..=23 => matches!(
                err,
                Error::ChunkAuthFailed { index: 0 }
                    | Error::TooLarge { .. }
                    | Error::TooManyChunks { .. }
                    | Error::OutOfMemory { .. }
            ),
            72..=87 => matches!(err, Error::WrongKey { .. }),
            // name length 5 -> 4: a shorter name that still parses
            95 => matches!(err, Error::ChunkAuthFailed { index: 0 }),
            // digest, nonce prefix, name
            _ => matches!(err, Error::ChunkAuthFailed { index: 0 }),
        };
        assert!(expected, "byte {pos}: {err:?}");
    }
}

#[test]
fn flipped_byte_in_header_digest_is_caught_before_decryption() {
    let (pt, sealed, _) = four_chunks();
    let mut bad = sealed;
    bad[30] ^= 0x80; // inside the digest
    let err = open_expecting(&bad[..], &key(1), &ModelDigest::of(&pt), NO_LIMIT).unwrap_err();
    assert!(matches!(err, Error::UnexpectedModel { .. }), "{err:?}");
}

#[test]
fn flipped_byte_in_body() {
    let (_, sealed, header) = four_chunks();
    let start = header.encoded_len();
    let chunk_len = CSU + TAG_LEN;
    for pos in [
        start,
        start + 1,
        start + CSU - 1,
        start + CSU,
        start + chunk_len - 1,
        start + chunk_len,
        sealed.len() - 1,
    ] {
        let mut bad = sealed.clone();
        bad[pos] ^= 0x40;
        let index = ((pos - start) / chunk_len) as u32;
        let err = open_err(&bad, &key(1));
        assert!(
            matches!(err, Error::ChunkAuthFailed { index: i } if i == index),
            "byte {pos}: {err:?}"
        );
    }
}

#[test]
fn wrong_key() {
    let (_, sealed, header) = four_chunks();
    let err = open_err(&sealed, &key(2));
    match err {
        Error::WrongKey {
            expected_key_id,
            found,
        } => {
            assert_eq!(expected_key_id, key(1).key_id());
            assert_eq!(expected_key_id, header.key_id());
            assert_eq!(found, key(2).key_id());
        }
        other => panic!("{other:?}"),
    }
    // Message names key ids, never key bytes.
    let msg = open_err(&sealed, &key(2)).to_string();
    assert!(
        msg.contains(&key(1).key_id().to_string()) && !msg.contains(&"02".repeat(8)),
        "{msg}"
    );
}

#[test]
fn wrong_key_with_forged_key_id() {
    let (_, mut sealed, _) = four_chunks();
    sealed[72..88].copy_from_slice(key(2).key_id().as_bytes());
    let err = open_err(&sealed, &key(2));
    assert!(
        matches!(err, Error::ChunkAuthFailed { index: 0 }),
        "{err:?}"
    );
}

#[test]
fn changed_model_name() {
    let (_, sealed, header) = four_chunks();
    let (_, chunks) = split(&sealed);
    for name in ["modeL", "other-model", "m"] {
        let renamed = SealedHeader::new(
            name,
            *header.digest(),
            header.plaintext_len(),
            header.chunk_size(),
            header.key_id(),
            *header.nonce_prefix(),
        )
        .unwrap();
        let err = open_err(&join(&renamed.encode(), &chunks), &key(1));
        assert!(
            matches!(err, Error::ChunkAuthFailed { index: 0 }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn plaintext_len_lie() {
    let (_, sealed, header) = four_chunks();
    let (_, chunks) = split(&sealed);
    let len = header.plaintext_len();
    for lie in [
        len - 1,
        len + 1,
        len - 100,
        3 * u64::from(CS),
        len + u64::from(CS),
        0,
    ] {
        let liar = SealedHeader::new(
            header.name(),
            *header.digest(),
            lie,
            header.chunk_size(),
            header.key_id(),
            *header.nonce_prefix(),
        )
        .unwrap();
        // With the body unchanged, and with the body cut to fit the lie.
        let as_is = join(&liar.encode(), &chunks);
        let err = open_err(&as_is, &key(1));
        assert!(
            matches!(
                err,
                Error::ChunkAuthFailed { index: 0 } | Error::Truncated { .. }
            ),
            "{lie}: {err:?}"
        );
        let mut fitted = as_is.clone();
        fitted.resize(liar.sealed_len() as usize, 0);
        let err = open_err(&fitted, &key(1));
        assert!(
            matches!(err, Error::ChunkAuthFailed { index: 0 }),
            "{lie}: {err:?}"
        );
    }
}

#[test]
fn digest_mismatch_when_header_lies_under_the_right_key() {
    // Only a key holder can produce this: chunks authentic, header digest wrong. Both paths: hashed
    // inline (small) and on the hashing thread (large).
    for len in [CSU + 1, 3 * HASH_PIECE_LEN + 5] {
        digest_mismatch_of_len(len);
    }
}

fn digest_mismatch_of_len(len: usize) {
    let pt = data(len);
    let k = key(1);
    let header = SealedHeader::new(
        "m",
        ModelDigest::of(b"not it"),
        pt.len() as u64,
        CS,
        k.key_id(),
        [5; 7],
    )
    .unwrap();
    let header_bytes = header.encode();
    let mut sealed = header_bytes.clone();
    let mut buf = vec![0u8; CSU + TAG_LEN];
    let aad = hash_header_bytes(&header_bytes);
    write_chunks(
        &header,
        &aad,
        &k.aead_key().unwrap(),
        &mut &pt[..],
        &mut sealed,
        &mut buf,
        &mut |_| {},
    )
    .unwrap();
    match open_err(&sealed, &k) {
        Error::DigestMismatch { expected, found } => {
            assert_eq!(expected, ModelDigest::of(b"not it"));
            assert_eq!(found, ModelDigest::of(&pt));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn large_models_open_with_the_hashing_thread() {
    // Above HASH_PIECE_LEN the digest is computed on a second thread; the verdicts are the same.
    let pt = data(HASH_PIECE_LEN * 2 + 3 * CSU + 11);
    let (sealed, header) = seal_vec(&pt, &key(1), "big", CS);
    let opened = open_expecting(&sealed[..], &key(1), &ModelDigest::of(&pt), NO_LIMIT).unwrap();
    assert_eq!(opened.as_bytes(), &pt[..]);
    let last = (header.chunk_count() - 1) as u32;
    let mut flipped = sealed.clone();
    let at = flipped.len() - TAG_LEN - 1;
    flipped[at] ^= 1;
    assert!(
        matches!(open_err(&flipped, &key(1)), Error::ChunkAuthFailed { index } if index == last)
    );
    let truncated = &sealed[..sealed.len() - 1];
    assert!(matches!(
        open_err(truncated, &key(1)),
        Error::Truncated { .. }
    ));
    assert!(matches!(
        open_err(&[&sealed[..], b"x"].concat(), &key(1)),
        Error::TrailingData
    ));
}

/// A reader that counts the bytes taken from it.
struct Counting<'a> {
    inner: &'a [u8],
    taken: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n;
        Ok(n)
    }
}

#[test]
fn expected_digest_checked_before_decryption() {
    let (_, sealed, header) = four_chunks();
    let mut reader = Counting {
        inner: &sealed,
        taken: 0,
    };
    let wanted = ModelDigest::of(b"the model the key was released for");
    let err = open_expecting(&mut reader, &key(1), &wanted, NO_LIMIT).unwrap_err();
    match err {
        Error::UnexpectedModel { expected, found } => {
            assert_eq!(expected, wanted);
            assert_eq!(&found, header.digest());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reader.taken, header.encoded_len(), "read past the header");
    // Same for the key and size checks.
    let mut reader = Counting {
        inner: &sealed,
        taken: 0,
    };
    assert!(matches!(
        open(&mut reader, &key(3), NO_LIMIT),
        Err(Error::WrongKey { .. })
    ));
    assert_eq!(reader.taken, header.encoded_len());
    let mut reader = Counting {
        inner: &sealed,
        taken: 0,
    };
    let err = open(&mut reader, &key(1), header.plaintext_len() - 1).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { len, max } if len == header.plaintext_len() && max == len - 1)
    );
    assert_eq!(reader.taken, header.encoded_len());
}

#[test]
fn seal_validates_before_reading() {
    let rng = SystemRandom::new();
    let mut out = Vec::new();
    let long = "n".repeat(256);
    let err = seal(
        Cursor::new(b"x"),
        &mut out,
        &key(1),
        &long,
        CS,
        &rng,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::NameTooLong { len: 256, max: 255 }));
    let err = seal(
        Cursor::new(b"x"),
        &mut out,
        &key(1),
        "m",
        1024,
        &rng,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidChunkSize { found: 1024, .. }));
    assert!(out.is_empty());
}

/// A seekable source whose content changes when it is rewound for the second pass.
struct Changing {
    data: Cursor<Vec<u8>>,
    rewinds: usize,
    grow: bool,
}

impl Read for Changing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.data.read(buf)
    }
}

impl Seek for Changing {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        if let SeekFrom::Start(_) = pos {
            self.rewinds += 1;
            if self.rewinds == 2 {
                if self.grow {
                    self.data.get_mut().push(0);
                } else {
                    self.data.get_mut()[10] ^= 1;
                }
            }
        }
        self.data.seek(pos)
    }
}

#[test]
fn source_changed_between_passes() {
    for grow in [false, true] {
        let source = Changing {
            data: Cursor::new(data(3 * CSU)),
            rewinds: 0,
            grow,
        };
        let err = seal(
            source,
            Vec::new(),
            &key(1),
            "m",
            CS,
            &SystemRandom::new(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, Error::SourceChanged), "{err:?}");
    }
}

#[test]
fn progress_reports_both_passes() {
    let pt = data(2 * CSU + 1);
    let mut events = Vec::new();
    seal(
        Cursor::new(&pt),
        Vec::new(),
        &key(1),
        "m",
        CS,
        &SystemRandom::new(),
        &mut |p| events.push(p),
    )
    .unwrap();
    let total = pt.len() as u64;
    let expect = |phase| {
        [CSU as u64, 2 * CSU as u64, total]
            .map(|done| Progress { phase, done, total })
            .to_vec()
    };
    assert_eq!(
        events,
        [expect(Phase::Hashing), expect(Phase::Sealing)].concat()
    );
}

#[test]
fn seal_file_round_trip_and_no_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("model.onnx");
    let output = tmp.path().join("model.sealed");
    let pt = data(3 * CSU + 7);
    fs::write(&input, &pt).unwrap();
    let rng = SystemRandom::new();
    let header = seal_file(&input, &output, &key(1), "model", CS, &rng, &mut |_| {}).unwrap();
    let sealed = fs::read(&output).unwrap();
    assert_eq!(sealed.len() as u64, header.sealed_len());
    let opened = open_expecting(
        File::open(&output).unwrap(),
        &key(1),
        &ModelDigest::of(&pt),
        NO_LIMIT,
    )
    .unwrap();
    assert_eq!(opened.as_bytes(), &pt[..]);
    // Never overwrites, and leaves the existing file alone.
    let err = seal_file(&input, &output, &key(2), "model", CS, &rng, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::AlreadyExists),
        "{err:?}"
    );
    assert_eq!(fs::read(&output).unwrap(), sealed);
    // A failed seal leaves no output behind.
    let bad = tmp.path().join("bad.sealed");
    let err = seal_file(&input, &bad, &key(1), "", CS, &rng, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::NameEmpty));
    assert!(!bad.exists());
}

#[test]
fn plaintext_debug_is_redacted() {
    let (sealed, _) = seal_vec(b"SECRET-WEIGHTS", &key(1), "m", CS);
    let opened = open(&sealed[..], &key(1), NO_LIMIT).unwrap();
    let dbg = format!("{opened:?}");
    assert!(
        !dbg.contains("SECRET") && !dbg.contains("83, 69, 67"),
        "{dbg}"
    );
    assert!(dbg.contains("len: 14"), "{dbg}");
}

fn mutate(sealed: &[u8], kind: u8, pos: usize, byte: u8, len: usize) -> Vec<u8> {
    let mut out = sealed.to_vec();
    let pos = pos % (out.len() + 1);
    match kind % 5 {
        0 => {
            let p = pos.min(out.len() - 1);
            out[p] ^= byte.max(1);
        }
        1 => out.truncate(pos),
        2 => {
            let extra = vec![byte; len];
            out.splice(pos..pos, extra);
        }
        3 => {
            let end = (pos + len).min(out.len());
            out.drain(pos..end);
        }
        _ => {
            let end = (pos + len).min(out.len());
            let copy = out[pos..end].to_vec();
            out.splice(end..end, copy);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_round_trip(len in 0usize..40_000, chunk_size in MIN_CHUNK_SIZE..3 * MIN_CHUNK_SIZE, seed in any::<u8>()) {
        let pt: Vec<u8> = data(len).iter().map(|b| b ^ seed).collect();
        let (sealed, header) = seal_vec(&pt, &key(seed), "prop", chunk_size);
        prop_assert_eq!(sealed.len() as u64, header.sealed_len());
        let opened = open_expecting(&sealed[..], &key(seed), &ModelDigest::of(&pt), len as u64).unwrap();
        prop_assert_eq!(opened.as_bytes(), &pt[..]);
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_mutations_never_open(
        len in 0usize..20_000,
        kind in any::<u8>(),
        pos in any::<usize>(),
        byte in any::<u8>(),
        mlen in 1usize..5_000,
    ) {
        let pt = data(len);
        let (sealed, _) = seal_vec(&pt, &key(1), "prop", CS);
        let bad = mutate(&sealed, kind, pos, byte, mlen);
        prop_assume!(bad != sealed);
        prop_assert!(open(&bad[..], &key(1), NO_LIMIT).is_err());
    }
}
