//! Sealed-model parser on arbitrary bytes (the host controls them).
//!
//! - `read_header` and `SealedHeader::decode` must agree, never panic, and round-trip: a header
//!   that parses re-encodes to exactly the bytes it was parsed from (the encoding is canonical,
//!   which the AAD relies on).
//! - `open` with a fixed key must never succeed on bytes the fuzzer made up and must not allocate
//!   more than its limit. Seed the corpus with a model sealed under this key (`[0x42; 32]`) so that
//!   the fuzzer gets past the key-id check.
//! - The push-style `Opener`, fed the same bytes cut into pieces whose lengths the input's first byte picks,
//!   must give `open`'s answer: the same plaintext, or the same error.
#![no_main]

use cloister_models::{open, read_header, ModelKey, Opener, SealedHeader};
use libfuzzer_sys::fuzz_target;

const MAX_PLAINTEXT_LEN: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let from_reader = read_header(data);
    let from_slice = SealedHeader::decode(data);
    match (&from_reader, &from_slice) {
        (Ok((a, a_len)), Ok((b, b_len))) => {
            assert_eq!(a, b);
            assert_eq!(a_len, b_len);
            assert_eq!(a.encode(), &data[..*a_len]);
            assert_eq!(a.encoded_len(), *a_len);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("read_header and decode disagree"),
    }

    let key = ModelKey::from_bytes(&[0x42; 32]);
    let read = open(data, &key, MAX_PLAINTEXT_LEN);
    if let Ok(plaintext) = &read {
        // Only possible for an input that was really sealed under this key (e.g. a corpus seed).
        assert_eq!(plaintext.len() as u64, plaintext.header().plaintext_len());
    }
    let piece = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let pushed = (|| {
        let mut opener = Opener::new(&key, None, MAX_PLAINTEXT_LEN)?;
        for part in data.chunks(piece) {
            opener.push(part)?;
        }
        opener.finish()
    })();
    match (&read, &pushed) {
        (Ok(a), Ok(b)) => assert_eq!(a.as_bytes(), b.as_bytes()),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("open and the pushed Opener disagree"),
    }
});
