//! The KServe v2 request decoder (JSON and the binary tensor extension) on arbitrary bodies: never panic,
//! never hold more elements than a tensor's shape allows within the limit, and what decodes re-encodes and
//! decodes to the same request. The first byte picks the limit and whether the body uses the binary
//! extension (and where its JSON part ends).
#![no_main]

use cloister_kserve::{DecodeLimits, InferRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_tensor_elements: 1 << (control & 0x0F),
    };
    let json_len = (control & 0x80 != 0).then(|| {
        // The JSON part ends at the first 0xFF byte, or at the end.
        body.iter().position(|&b| b == 0xFF).unwrap_or(body.len())
    });
    let Ok(request) = InferRequest::decode_with(body, json_len, &limits) else {
        return;
    };
    for input in &request.inputs {
        let data = input.data.as_ref().expect("decoded inputs carry data");
        let count = input.element_count().expect("bounded shapes do not overflow");
        assert!(count <= limits.max_tensor_elements);
        assert_eq!(data.len() as u64, count);
        assert!(input.shape.len() <= cloister_kserve::MAX_RANK);
    }
    for binary in [false, true] {
        let encoded = request.encode(binary).expect("re-encode");
        let back = InferRequest::decode_with(&encoded.bytes, encoded.json_len, &limits)
            .expect("round trip");
        // NaN payloads do not compare equal; compare the encodings instead.
        let again = back.encode(binary).expect("re-encode");
        assert_eq!(again, encoded);
    }
});
