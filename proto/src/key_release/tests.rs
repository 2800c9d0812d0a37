//! The key-release machines talking to each other through bytes only, with evidence from the simulated
//! AMD-SP verified by the production verifier; and the wrapping's bindings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use cloister_attestation::evidence::{
    verify_evidence, Claims, EnclaveKey, Evidence, Platform, Sha384, CLAIMS_VERSION,
};
use cloister_attestation::sim::{ReportRequest, SimConfig, SimPlatform, SimSigningKey};
use cloister_attestation::snp::Product;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_models::ModelKey;
use ring::rand::SystemRandom;

use super::*;

/// A fixed clock: the machines never read the system time.
struct At(i64);

impl Clock for At {
    fn now_unix(&self) -> i64 {
        self.0
    }
}

const ISSUED: i64 = 1_767_225_600; // 2026-01-01

fn sim() -> &'static SimPlatform {
    static P: OnceLock<SimPlatform> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cloister-proto-kr-{}", std::process::id()));
        let p = SimPlatform::init(
            &dir,
            &SimConfig::new(Product::Genoa, ISSUED),
            &SystemRandom::new(),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        p
    })
}

/// Evidence the simulated enclave makes for a challenge.
fn evidence(nonce: [u8; 32], exporter: [u8; 32], key: [u8; 32], digest: Sha384) -> Evidence {
    let claims = Claims {
        version: CLAIMS_VERSION,
        nonce,
        tls_exporter: exporter,
        enclave_key: Some(EnclaveKey::X25519(key)),
        model_digests: vec![digest],
        config_digest: Sha384([7; 48]),
        receipt_key: None,
    };
    let report = sim()
        .report(&ReportRequest {
            report_data: claims.report_data().unwrap(),
            measurement: [0x42; 48],
            ..ReportRequest::default()
        })
        .unwrap();
    Evidence {
        platform: Platform::SnpSimulated,
        report: report.to_vec(),
        cert_chain: sim().certificate_chain(SimSigningKey::Vcek).unwrap(),
        claims,
        vtpm: None,
    }
}

fn policy() -> Policy {
    Policy::from_toml(&format!("measurements = [\"{}\"]", "42".repeat(48))).unwrap()
}

/// Runs one exchange through both machines, bytes only; `tamper` may change the evidence in flight.
fn run_exchange(tamper: impl FnOnce(&mut Evidence)) -> Result<ModelKey, String> {
    let rng = SystemRandom::new();
    let exporter = [5; 32];
    let digest = Sha384([1; 48]);
    let model_key = ModelKey::from_bytes(&[9; 32]);
    let mut broker = BrokerConnection::new(exporter, 4);
    let (mut enclave, request) = EnclaveExchange::start(digest).unwrap();

    // KeyRequest → Challenge, delivered a byte at a time to exercise reassembly.
    let mut challenge = None;
    for b in &request {
        for event in broker
            .receive(std::slice::from_ref(b), &rng, &At(ISSUED + 60))
            .unwrap()
        {
            match event {
                BrokerEvent::Challenge { frame, .. } => challenge = Some(frame),
                other => panic!("{other:?}"),
            }
        }
    }
    let (nonce, enclave_public) = match enclave.receive(&challenge.unwrap(), &rng).unwrap() {
        Some(EnclaveEvent::NeedEvidence {
            nonce,
            enclave_public,
        }) => (nonce, enclave_public),
        other => panic!("{other:?}"),
    };
    let mut ev = evidence(nonce, exporter, enclave_public, digest);
    tamper(&mut ev);
    let attest = enclave.attest(ev).unwrap();
    let events = broker.receive(&attest, &rng, &At(ISSUED + 60)).unwrap();
    let [BrokerEvent::Verify(pending)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(pending.at_unix, ISSUED + 60, "the injected clock");
    let options = VerifyOptions {
        at_unix: pending.at_unix,
        crls: &[],
        simulated_root: Some(sim().root()),
    };
    let answer = match verify_evidence(&pending.evidence, &policy(), &options, &pending.expected())
    {
        Ok(verified) => broker.grant(&verified, &model_key, &rng).unwrap(),
        Err(e) => {
            let frame = broker.refuse(RefusalCode::EvidenceRejected, true).unwrap();
            match enclave.receive(&frame, &rng).unwrap() {
                Some(EnclaveEvent::Refused(code)) => return Err(format!("{code:?}: {e}")),
                other => panic!("{other:?}"),
            }
        }
    };
    match enclave.receive(&answer, &rng).unwrap() {
        Some(EnclaveEvent::Released(key)) => Ok(key),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_machines_release_a_key_through_bytes_only() {
    let key = run_exchange(|_| {}).unwrap();
    assert_eq!(key.expose_secret(), &[9; 32]);
}

#[test]
fn evidence_for_another_connection_or_nonce_releases_nothing() {
    let err = run_exchange(|ev| ev.claims.tls_exporter = [6; 32]).unwrap_err();
    assert!(err.contains("EvidenceRejected"), "{err}");
    let err = run_exchange(|ev| ev.claims.nonce[0] ^= 1).unwrap_err();
    assert!(err.contains("EvidenceRejected"), "{err}");
}

#[test]
fn protocol_violations_are_refused_and_close() {
    let rng = SystemRandom::new();
    let clock = At(ISSUED);
    // Attest first.
    let mut broker = BrokerConnection::new([0; 32], 4);
    let attest = crate::frame::encode(&EnclaveToBroker::Attest {
        evidence: evidence([0; 32], [0; 32], [0; 32], Sha384([0; 48])),
    })
    .unwrap();
    let events = broker.receive(&attest, &rng, &clock).unwrap();
    assert!(
        matches!(&events[..], [BrokerEvent::Refuse { code: RefusalCode::BadRequest, reason, .. }] if reason.contains("expected KeyRequest")),
        "{events:?}"
    );
    assert!(broker.is_closed());
    // Another version.
    let mut broker = BrokerConnection::new([0; 32], 4);
    let request = crate::frame::encode(&EnclaveToBroker::KeyRequest {
        version: PROTOCOL_VERSION + 1,
        model_digest: Sha384([1; 48]),
    })
    .unwrap();
    let events = broker.receive(&request, &rng, &clock).unwrap();
    assert!(
        matches!(&events[..], [BrokerEvent::Refuse { reason, .. }] if reason.starts_with("version")),
        "{events:?}"
    );
    // Garbage, and an oversized frame announced.
    let mut broker = BrokerConnection::new([0; 32], 4);
    let events = broker
        .receive(&[0, 0, 0, 3, 0xff, 0xff, 0xff], &rng, &clock)
        .unwrap();
    assert!(
        matches!(&events[..], [BrokerEvent::Refuse { .. }]),
        "{events:?}"
    );
    let mut broker = BrokerConnection::new([0; 32], 4);
    let events = broker.receive(&[0xff, 0, 0, 0], &rng, &clock).unwrap();
    assert!(
        matches!(&events[..], [BrokerEvent::Refuse { .. }]),
        "{events:?}"
    );
    // A grant without a pending exchange is an error, not a key.
    let mut broker = BrokerConnection::new([0; 32], 4);
    assert!(broker.refuse(RefusalCode::Internal, true).is_err());
    // The enclave refuses out-of-order messages too.
    let (mut enclave, _) = EnclaveExchange::start(Sha384([1; 48])).unwrap();
    let granted = crate::frame::encode(&BrokerToEnclave::Granted {
        broker_public: [0; 32],
        wrapped_key: vec![0; WRAPPED_KEY_LEN],
    })
    .unwrap();
    assert!(enclave.receive(&granted, &rng).is_err());
}

#[test]
fn each_exchange_draws_its_own_nonce_and_the_connection_ends_after_the_last() {
    let rng = SystemRandom::new();
    let mut broker = BrokerConnection::new([0; 32], 1);
    let request = crate::frame::encode(&EnclaveToBroker::KeyRequest {
        version: PROTOCOL_VERSION,
        model_digest: Sha384([1; 48]),
    })
    .unwrap();
    let first = broker.receive(&request, &rng, &At(ISSUED)).unwrap();
    assert!(matches!(first[..], [BrokerEvent::Challenge { .. }]));
    let attest = crate::frame::encode(&EnclaveToBroker::Attest {
        evidence: evidence([0; 32], [0; 32], [0; 32], Sha384([1; 48])),
    })
    .unwrap();
    let events = broker.receive(&attest, &rng, &At(ISSUED)).unwrap();
    assert!(matches!(events[..], [BrokerEvent::Verify(_)]));
    broker.refuse(RefusalCode::PolicyRejected, false).unwrap();
    // max_exchanges = 1: the connection is over.
    assert!(broker.is_closed());
}

#[test]
fn wrap_unwrap_round_trip_and_every_binding_matters() {
    let rng = SystemRandom::new();
    let key = ModelKey::from_bytes(&[9u8; 32]);
    let digest = Sha384([1; 48]);
    let nonce = [2u8; 32];

    let pair = EnclaveKeyPair::generate(&rng).unwrap();
    let (bp, wrapped) = wrap::wrap_to(&key, &pair.public(), &nonce, &digest, &rng).unwrap();
    assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
    let got = pair.unwrap(&nonce, &digest, &bp, &wrapped).unwrap();
    assert_eq!(got.expose_secret(), key.expose_secret());

    // Another nonce, digest, broker key, enclave key, or a flipped byte: no key.
    type Mutation = Box<dyn Fn(&mut [u8; 32], &mut Sha384, &mut [u8; 32], &mut Vec<u8>)>;
    let cases: Vec<Mutation> = vec![
        Box::new(|n, _, _, _| n[0] ^= 1),
        Box::new(|_, d, _, _| d.0[0] ^= 1),
        Box::new(|_, _, b, _| b[0] ^= 1),
        Box::new(|_, _, _, w| w[0] ^= 1),
        Box::new(|_, _, _, w| w.truncate(47)),
    ];
    for mutate in cases {
        let pair = EnclaveKeyPair::generate(&rng).unwrap();
        let (mut bp, mut wrapped) =
            wrap::wrap_to(&key, &pair.public(), &nonce, &digest, &rng).unwrap();
        let (mut n, mut d) = (nonce, digest);
        mutate(&mut n, &mut d, &mut bp, &mut wrapped);
        assert!(pair.unwrap(&n, &d, &bp, &wrapped).is_err());
    }
    // Wrapped to one enclave key, opened by another.
    let a = EnclaveKeyPair::generate(&rng).unwrap();
    let b = EnclaveKeyPair::generate(&rng).unwrap();
    let (bp, wrapped) = wrap::wrap_to(&key, &a.public(), &nonce, &digest, &rng).unwrap();
    assert!(b.unwrap(&nonce, &digest, &bp, &wrapped).is_err());
    // An invalid (all-zero, low-order) enclave public key is refused by the broker.
    assert!(wrap::wrap_to(&key, &[0u8; 32], &nonce, &digest, &rng).is_err());
}
