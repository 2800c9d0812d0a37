//! The key-release machines talking to each other through bytes only, with evidence from the simulated
//! AMD-SP verified by the production verifier; and the wrapping's bindings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use cloister_attestation::evidence::{
    verify_evidence, Claims, EnclaveKey, Evidence, Platform, Sha384, VerifiedEvidence,
    CLAIMS_VERSION,
};
use cloister_attestation::snp::Product;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_models::ModelKey;
use cloister_sim::{ReportRequest, SimConfig, SimPlatform, SimSigningKey};
use ring::rand::SystemRandom;

use super::*;

/// A fixed clock: the machines never read the system time.
struct At(i64);

impl Clock for At {
    fn now_unix(&self) -> i64 {
        self.0
    }
}

pub(crate) const ISSUED: i64 = 1_767_225_600; // 2026-01-01

pub(crate) fn sim() -> &'static SimPlatform {
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
    evidence_for(Claims {
        version: CLAIMS_VERSION,
        nonce,
        tls_exporter: exporter,
        enclave_key: Some(EnclaveKey::X25519(key)),
        model_digests: vec![digest],
        config_digest: Sha384([7; 48]),
        receipt_key: None,
        model_signers: Vec::new(),
    })
}

/// Evidence for `claims` from the simulated AMD-SP, measurement `42…42` (what [`policy`] pins).
pub(crate) fn evidence_for(claims: Claims) -> Evidence {
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

/// A policy pinning the simulated enclave's measurement.
pub(crate) fn policy() -> Policy {
    Policy::from_toml(&format!(
        "workload_identity = \"measurement\"\nmeasurements = [\"{}\"]",
        "42".repeat(48)
    ))
    .unwrap()
}

/// The broker's answer to verified evidence: the framed message to send.
type Decide<'a> = Box<dyn FnOnce(&mut BrokerConnection, &VerifiedEvidence) -> Vec<u8> + 'a>;

/// Runs one exchange through both machines, bytes only; `tamper` may change the evidence in flight;
/// `decide` answers verified evidence. Returns what the enclave's machine made of the answer.
fn run_with(
    state: Option<StateRequest>,
    tamper: impl FnOnce(&mut Evidence),
    decide: Decide<'_>,
) -> Result<EnclaveEvent, String> {
    let rng = SystemRandom::new();
    let exporter = [5; 32];
    let digest = Sha384([1; 48]);
    let mut broker = BrokerConnection::new(exporter, 4);
    let (mut enclave, request) = EnclaveExchange::start(digest, state.clone()).unwrap();

    // KeyRequest → Challenge, delivered a byte at a time to exercise reassembly.
    let mut challenge = None;
    for b in &request {
        for event in broker
            .receive(std::slice::from_ref(b), &rng, &At(ISSUED + 60))
            .unwrap()
        {
            match event {
                BrokerEvent::Challenge { frame, .. } => challenge = Some(frame),
                BrokerEvent::Refuse { reason, .. } => return Err(reason),
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
    assert_eq!(pending.state, state, "the state request reaches the broker");
    let options = VerifyOptions {
        at_unix: pending.at_unix,
        crls: &[],
        simulated_root: Some(sim().root()),
    };
    let answer = match verify_evidence(&pending.evidence, &policy(), &options, &pending.expected())
    {
        Ok(verified) => decide(&mut broker, &verified),
        Err(e) => {
            let frame = broker.refuse(RefusalCode::EvidenceRejected, true).unwrap();
            match enclave.receive(&frame, &rng).unwrap() {
                Some(EnclaveEvent::Refused(code)) => return Err(format!("{code:?}: {e}")),
                other => panic!("{other:?}"),
            }
        }
    };
    enclave
        .receive(&answer, &rng)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no event".to_owned())
}

fn grant_with(anchor: Option<StateAnchor>) -> Decide<'static> {
    Box::new(move |broker, verified| {
        broker
            .grant(
                verified,
                &ModelKey::from_bytes(&[9; 32]),
                anchor,
                &SystemRandom::new(),
            )
            .unwrap()
    })
}

/// Runs one key release (no state operation).
fn run_exchange(tamper: impl FnOnce(&mut Evidence)) -> Result<ModelKey, String> {
    match run_with(None, tamper, grant_with(None))? {
        EnclaveEvent::Released { key, anchor: None } => Ok(key),
        other => panic!("{other:?}"),
    }
}

#[test]
fn opening_a_state_returns_its_anchor_with_the_key() {
    let anchor = StateAnchor {
        version: 7,
        digest: Some(Sha384([3; 48])),
    };
    let open = || {
        Some(StateRequest::Open {
            label: "pod-0".into(),
        })
    };
    match run_with(open(), |_| {}, grant_with(Some(anchor))).unwrap() {
        EnclaveEvent::Released { key, anchor: got } => {
            assert_eq!(key.expose_secret(), &[9; 32]);
            assert_eq!(got, Some(anchor));
        }
        other => panic!("{other:?}"),
    }
    // An Open answered without an anchor, or a plain request answered with one: protocol errors.
    let err = run_with(open(), |_| {}, grant_with(None)).unwrap_err();
    assert!(err.contains("anchor"), "{err}");
    let err = run_with(None, |_| {}, grant_with(Some(anchor))).unwrap_err();
    assert!(err.contains("anchor"), "{err}");
    // The broker cannot answer an Open with Committed.
    let err = run_with(
        open(),
        |_| {},
        Box::new(|broker, verified| {
            assert!(broker.commit(verified, StateAnchor::default()).is_err());
            broker.refuse(RefusalCode::Internal, true).unwrap()
        }),
    );
    assert!(matches!(
        err,
        Ok(EnclaveEvent::Refused(RefusalCode::Internal))
    ));
}

#[test]
fn a_commit_releases_no_key_and_must_come_back_as_committed() {
    let digest = Sha384([4; 48]);
    let commit = || {
        Some(StateRequest::Commit {
            label: "pod-0".into(),
            version: 8,
            digest,
        })
    };
    let committed = |version: u64, digest: Sha384| -> Decide<'static> {
        Box::new(move |broker, verified| {
            // A key for a commit is refused by the machine: the caller cannot release one by mistake.
            assert!(broker
                .grant(
                    verified,
                    &ModelKey::from_bytes(&[9; 32]),
                    None,
                    &SystemRandom::new()
                )
                .is_err());
            broker
                .commit(
                    verified,
                    StateAnchor {
                        version,
                        digest: Some(digest),
                    },
                )
                .unwrap()
        })
    };
    match run_with(commit(), |_| {}, committed(8, digest)).unwrap() {
        EnclaveEvent::Committed(a) => assert_eq!((a.version, a.digest), (8, Some(digest))),
        other => panic!("{other:?}"),
    }
    // A broker that says it recorded something else: the enclave does not take it as committed.
    assert!(run_with(commit(), |_| {}, committed(9, digest)).is_err());
    assert!(run_with(commit(), |_| {}, committed(8, Sha384([5; 48]))).is_err());
    // Forged evidence commits nothing.
    let err = run_with(commit(), |ev| ev.claims.nonce[0] ^= 1, committed(8, digest)).unwrap_err();
    assert!(err.contains("EvidenceRejected"), "{err}");
}

#[test]
fn malformed_state_requests_are_refused_before_a_challenge() {
    for label in ["", "-a", "A", "a/b", "../x", &"a".repeat(65)] {
        let err = run_with(
            Some(StateRequest::Open {
                label: label.into(),
            }),
            |_| {},
            grant_with(None),
        )
        .unwrap_err();
        assert!(err.contains("label"), "{label:?}: {err}");
    }
    let err = run_with(
        Some(StateRequest::Commit {
            label: "a".into(),
            version: 0,
            digest: Sha384([0; 48]),
        }),
        |_| {},
        grant_with(None),
    )
    .unwrap_err();
    assert!(err.contains("version"), "{err}");
    assert!(is_valid_state_label("pod-0") && is_valid_state_label(&"a".repeat(64)));
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
        state: None,
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
    let (mut enclave, _) = EnclaveExchange::start(Sha384([1; 48]), None).unwrap();
    let granted = crate::frame::encode(&BrokerToEnclave::Granted {
        broker_public: [0; 32],
        wrapped_key: vec![0; WRAPPED_KEY_LEN],
        anchor: None,
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
        state: None,
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
