//! Both halves through bytes only, with evidence from the simulated AMD-SP verified by the production
//! verifier: what each refuses, and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloister_attestation::evidence::{Claims, Evidence, Sha384, CLAIMS_VERSION};
use cloister_attestation::VerifyOptions;
use cloister_sim::ReportRequest;
use ring::rand::SystemRandom;

use super::*;
use crate::key_release::tests::{evidence_for, policy, sim, ISSUED};
use crate::Error;

const EXPORTER: [u8; 32] = [5; 32];

/// Evidence the simulated enclave makes for a nonce and an exporter.
fn evidence(nonce: [u8; 32], exporter: [u8; 32]) -> Evidence {
    evidence_for(Claims {
        version: CLAIMS_VERSION,
        nonce,
        tls_exporter: exporter,
        enclave_key: None,
        model_digests: vec![Sha384([1; 48])],
        config_digest: Sha384([7; 48]),
        receipt_key: None,
        model_signers: Vec::new(),
    })
}

fn options() -> VerifyOptions<'static> {
    VerifyOptions {
        at_unix: ISSUED + 60,
        crls: &[],
        simulated_root: Some(sim().root()),
    }
}

/// One attestation through both halves; `tamper` changes the evidence the enclave makes.
fn attest(
    client_exporter: [u8; 32],
    tamper: impl FnOnce(&mut Evidence),
) -> Result<Attested, Error> {
    let (client, request) = ClientAttestation::start(&SystemRandom::new(), client_exporter)?;
    let to_attest = EnclaveAttestation::receive(&request, EXPORTER)?;
    let mut ev = evidence(to_attest.nonce(), to_attest.exporter());
    tamper(&mut ev);
    let body = ev.to_bytes()?;
    client
        .receive(200, Some(cloister_kserve::EVIDENCE_CONTENT_TYPE), body)?
        .verify(&policy(), &options())
}

#[test]
fn a_genuine_answer_on_the_same_connection_is_attested() {
    let (client, request) = ClientAttestation::start(&SystemRandom::new(), EXPORTER).unwrap();
    let to_attest = EnclaveAttestation::receive(&request, EXPORTER).unwrap();
    let nonce = to_attest.nonce();
    let answer = to_attest.answer(&evidence(nonce, EXPORTER)).unwrap();
    assert_eq!(answer.content_type, cloister_kserve::EVIDENCE_CONTENT_TYPE);
    let attested = client
        .receive(200, Some(answer.content_type), answer.body.clone())
        .unwrap()
        .verify(&policy(), &options())
        .unwrap();
    assert_eq!(attested.evidence_bytes(), answer.body.as_slice());
    assert_eq!(attested.evidence().claims().tls_exporter, EXPORTER);
}

#[test]
fn evidence_from_another_connection_is_refused() {
    // A relay that splices two connections: the enclave's exporter is not the client's.
    let err = attest([6; 32], |_| {}).unwrap_err();
    assert!(err.to_string().contains("exporter"), "{err}");
}

#[test]
fn evidence_for_another_nonce_is_refused() {
    let err = attest(EXPORTER, |ev| *ev = evidence([9; 32], EXPORTER)).unwrap_err();
    assert!(err.to_string().contains("nonce"), "{err}");
}

#[test]
fn evidence_outside_the_policy_is_refused() {
    let err = attest(EXPORTER, |ev| {
        let mut claims = ev.claims.clone();
        claims.model_digests = vec![Sha384([2; 48])];
        let report = sim()
            .report(&ReportRequest {
                report_data: claims.report_data().unwrap(),
                measurement: [0x43; 48],
                ..ReportRequest::default()
            })
            .unwrap();
        ev.report = report.to_vec();
        ev.claims = claims;
    })
    .unwrap_err();
    assert!(err.to_string().contains("measurement"), "{err}");
}

#[test]
fn the_enclave_does_not_answer_with_evidence_for_another_connection() {
    let to_attest = EnclaveAttestation::receive(
        br#"{"nonce":"0101010101010101010101010101010101010101010101010101010101010101"}"#,
        EXPORTER,
    )
    .unwrap();
    assert_eq!(to_attest.nonce(), [1; 32]);
    let err = to_attest.answer(&evidence([1; 32], [6; 32])).unwrap_err();
    assert!(matches!(err, Error::UnexpectedMessage { .. }), "{err}");
}

#[test]
fn malformed_requests_are_refused_by_name() {
    let long = vec![b' '; MAX_REQUEST_LEN + 1];
    for (body, why) in [
        (&b""[..], "EOF"),
        (b"nonce", "expected"),
        (br#"{"nonce":"01"}"#, "64 hex digits"),
        (
            br#"{"nonce":"0101010101010101010101010101010101010101010101010101010101010101","x":1}"#,
            "unknown field",
        ),
        (br#"{"nonce":7}"#, "invalid type"),
        (&long, "exceeds the limit"),
    ] {
        let err = EnclaveAttestation::receive(body, EXPORTER).unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}

#[test]
fn what_is_not_evidence_is_refused_by_name() {
    let start = || {
        ClientAttestation::start(&SystemRandom::new(), EXPORTER)
            .unwrap()
            .0
    };
    let err = start()
        .receive(
            429,
            Some("application/json"),
            br#"{"error":"busy"}"#.to_vec(),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "enclave answered 429: busy");
    let err = start()
        .receive(200, Some("text/html"), b"<html>".to_vec())
        .unwrap_err();
    assert!(err.to_string().contains("text/html"), "{err}");
    let err = start()
        .receive(
            200,
            Some(cloister_kserve::EVIDENCE_CONTENT_TYPE),
            vec![0xff; 40],
        )
        .unwrap_err();
    assert!(matches!(err, Error::Evidence(_)), "{err}");
}

#[test]
fn a_vcek_fetched_by_the_caller_is_verified_like_the_rest() {
    let (client, request) = ClientAttestation::start(&SystemRandom::new(), EXPORTER).unwrap();
    let to_attest = EnclaveAttestation::receive(&request, EXPORTER).unwrap();
    let mut ev = evidence(to_attest.nonce(), EXPORTER);
    let full = ev.cert_chain.clone();
    ev.cert_chain.leaf.clear();
    let mut received = client
        .receive(
            200,
            Some(cloister_kserve::EVIDENCE_CONTENT_TYPE),
            ev.to_bytes().unwrap(),
        )
        .unwrap();
    assert_eq!(received.missing_vcek().unwrap(), Some(ev.report.as_slice()));
    *received.chain_mut() = full;
    assert!(received.missing_vcek().unwrap().is_none());
    received.verify(&policy(), &options()).unwrap();
}
