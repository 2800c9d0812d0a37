//! Both halves of the session attestation on arbitrary bytes: the enclave reads a client's request (any
//! client may send one), the client reads the enclave's answer (the host relays it). Neither may panic; a
//! request the enclave accepts carries exactly a 32-byte nonce, and made-up evidence never verifies.
#![no_main]

use cloister_attestation::{Policy, VerifyOptions};
use cloister_proto::session_attestation::{ClientAttestation, EnclaveAttestation};
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;

fuzz_target!(|data: &[u8]| {
    if let Ok(to_attest) = EnclaveAttestation::receive(data, [5; 32]) {
        assert_eq!(to_attest.exporter(), [5; 32]);
        let text = std::str::from_utf8(data).expect("accepted requests are JSON text");
        assert!(text.contains(&hex::encode(to_attest.nonce())));
    }

    let Ok((client, _request)) = ClientAttestation::start(&SystemRandom::new(), [5; 32]) else {
        return;
    };
    let content_type = (data.first() != Some(&0)).then_some(cloister_kserve::EVIDENCE_CONTENT_TYPE);
    let status = if data.get(1) == Some(&0) { 500 } else { 200 };
    if let Ok(mut received) = client.receive(status, content_type, data.to_vec()) {
        let _ = received.missing_vcek();
        let _ = received.chain_mut();
        let policy = Policy::from_toml(&format!(
            "workload_identity = \"measurement\"\nmeasurements = [\"{}\"]",
            "42".repeat(48)
        ))
        .expect("policy");
        let options = VerifyOptions {
            at_unix: 1_767_225_600,
            crls: &[],
            simulated_root: None,
        };
        assert!(received.verify(&policy, &options).is_err(), "made-up evidence verified");
    }
});
