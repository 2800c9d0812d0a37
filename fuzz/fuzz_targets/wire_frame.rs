//! Key-release wire messages on arbitrary payloads (both directions): never panic; what decodes
//! re-encodes and decodes to the same message.
#![no_main]

use cloister_proto::frame;
use cloister_proto::key_release::{BrokerToEnclave, EnclaveToBroker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = frame::decode::<EnclaveToBroker>(data, "fuzz") {
        let framed = frame::encode(&msg).expect("re-encode");
        let back: EnclaveToBroker = frame::decode(&framed[4..], "fuzz").expect("round trip");
        assert_eq!(back, msg);
    }
    if let Ok(msg) = frame::decode::<BrokerToEnclave>(data, "fuzz") {
        let framed = frame::encode(&msg).expect("re-encode");
        let back: BrokerToEnclave = frame::decode(&framed[4..], "fuzz").expect("round trip");
        assert_eq!(back, msg);
    }
});
