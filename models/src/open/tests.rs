//! The push-style opener agrees with the reader-driven one however the bytes are cut, and refuses at the
//! earliest byte that shows a problem.

use std::io::Cursor;

use proptest::prelude::*;
use ring::rand::SystemRandom;

use super::*;
use crate::header::MIN_CHUNK_SIZE;
use crate::key::KEY_LEN;
use crate::stream::seal;

fn key(byte: u8) -> ModelKey {
    ModelKey::from_bytes(&[byte; KEY_LEN])
}

fn sealed(len: usize) -> (Vec<u8>, Vec<u8>) {
    let pt: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut out = Vec::new();
    seal(
        Cursor::new(&pt),
        &mut out,
        &key(1),
        "m",
        MIN_CHUNK_SIZE,
        &SystemRandom::new(),
        &mut |_| {},
    )
    .unwrap();
    (pt, out)
}

/// Pushes `sealed` cut at `cuts` (sorted offsets), then finishes.
fn push_cut(
    sealed: &[u8],
    cuts: &[usize],
    expected: Option<ModelDigest>,
) -> Result<Plaintext, Error> {
    let mut opener = Opener::new(&key(1), expected, u64::MAX)?;
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&sealed.len())) {
        let cut = cut.clamp(at, sealed.len());
        opener.push(&sealed[at..cut])?;
        at = cut;
    }
    opener.finish()
}

#[test]
fn a_byte_at_a_time_opens_what_open_opens() {
    for len in [
        0,
        1,
        MIN_CHUNK_SIZE as usize,
        3 * MIN_CHUNK_SIZE as usize + 5,
        600 * 1024,
    ] {
        let (pt, sealed) = sealed(len);
        let cuts: Vec<usize> = (1..sealed.len()).collect();
        let pushed = push_cut(&sealed, &cuts, Some(ModelDigest::of(&pt))).unwrap();
        assert_eq!(pushed.as_bytes(), pt.as_slice(), "len {len}");
        let read = open(&sealed[..], &key(1), u64::MAX).unwrap();
        assert_eq!(read.as_bytes(), pushed.as_bytes());
    }
}

#[test]
fn the_header_is_checked_before_any_chunk_arrives() {
    let (pt, sealed) = sealed(2 * MIN_CHUNK_SIZE as usize);
    let header_len = crate::header::read_header(&sealed[..]).unwrap().1;
    let mut opener = Opener::new(&key(1), Some(ModelDigest::of(&pt)), u64::MAX).unwrap();
    opener.push(&sealed[..header_len - 1]).unwrap();
    assert!(opener.header().is_none());
    opener.push(&sealed[header_len - 1..header_len]).unwrap();
    assert_eq!(opener.header().unwrap().name(), "m");

    // Another model, another key, too large: refused on the header's last byte.
    for (expected, key_byte, max) in [
        (Some(ModelDigest::of(b"other")), 1, u64::MAX),
        (None, 2, u64::MAX),
        (None, 1, 10),
    ] {
        let mut opener = Opener::new(&key(key_byte), expected, max).unwrap();
        opener.push(&sealed[..header_len - 1]).unwrap();
        let err = opener.push(&sealed[header_len - 1..]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnexpectedModel { .. } | Error::WrongKey { .. } | Error::TooLarge { .. }
            ),
            "{err}"
        );
        // The first error is final.
        assert!(opener.push(&sealed[..1]).is_err());
        assert!(opener.finish().is_err());
    }
}

#[test]
fn truncation_and_trailing_bytes_are_named() {
    let (_, sealed) = sealed(2 * MIN_CHUNK_SIZE as usize);
    for cut in [0, 10, 100, sealed.len() / 2, sealed.len() - 1] {
        let err = push_cut(&sealed[..cut], &[], None).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "cut {cut}: {err}");
    }
    let mut longer = sealed;
    longer.push(0);
    let mut opener = Opener::new(&key(1), None, u64::MAX).unwrap();
    assert!(matches!(opener.push(&longer), Err(Error::TrailingData)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any cutting gives the reader's answer: the plaintext, or the same error for a flipped bit.
    #[test]
    fn any_cutting_agrees_with_the_reader(
        len in 0usize..5000,
        mut cuts in proptest::collection::vec(0usize..6000, 0..12),
        flip in proptest::option::of((0usize..6000, 0u8..8)),
    ) {
        let (_, mut sealed) = sealed(len);
        if let Some((at, bit)) = flip {
            let at = at % sealed.len();
            sealed[at] ^= 1 << bit;
        }
        cuts.sort_unstable();
        let pushed = push_cut(&sealed, &cuts, None);
        let read = open(&sealed[..], &key(1), u64::MAX);
        match (pushed, read) {
            (Ok(p), Ok(r)) => prop_assert_eq!(p.as_bytes(), r.as_bytes()),
            (Err(p), Err(r)) => prop_assert_eq!(p.to_string(), r.to_string()),
            (p, r) => prop_assert!(false, "pushed {:?}, read {:?}", p.map(|_| ()), r.map(|_| ())),
        }
    }
}
