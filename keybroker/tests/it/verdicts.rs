//! Grants and refusals of evidence: what the owner's policy decides, and what the audit log says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cloister_models::ModelDigest;
use cloister_proto::key_release::{BrokerToEnclave, EnclaveKeyPair, RefusalCode};
use ring::rand::SystemRandom;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_the_key_to_the_right_enclave_and_audits_it() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;
    let rng = SystemRandom::new();

    let nonce = request(&mut s, &owner.digest).await;
    let pair = EnclaveKeyPair::generate(&rng).unwrap();
    let enclave_public = pair.public();
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(enclave_public),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    let (broker_public, wrapped_key) = match attest(&mut s, ev).await {
        BrokerToEnclave::Granted {
            broker_public,
            wrapped_key,
            anchor: None,
        } => (broker_public, wrapped_key),
        other => panic!("expected a grant, got {other:?}"),
    };
    let key = pair
        .unwrap(&nonce, &sha(&owner.digest), &broker_public, &wrapped_key)
        .unwrap();
    assert_eq!(key.expose_secret(), &owner.key);

    let line = last_audit(&owner);
    assert_eq!(line.decision, "granted");
    assert_eq!(line.code, None);
    assert!(line.evidence_verified);
    assert_eq!(
        line.model_digest.as_deref(),
        Some(&*owner.digest.to_string())
    );
    assert_eq!(
        line.measurement.as_deref(),
        Some(&*hex::encode(MEASUREMENT))
    );
    assert_eq!(
        line.chip_id.as_deref(),
        Some(&*hex::encode(sim().chip_id()))
    );
    assert_eq!(line.product.as_deref(), Some("Genoa"));
    assert_eq!(line.simulated, Some(true));
    assert_eq!(line.reported_tcb, Some(sim().tcb().to_string()));
    assert_eq!(line.nonce.as_deref(), Some(&*hex::encode(nonce)));
    assert_eq!(
        line.enclave_key.as_deref(),
        Some(&*hex::encode(enclave_public))
    );
    assert_eq!(line.key_id, Some(key.key_id().to_string()));
    assert!(time::OffsetDateTime::parse(
        &line.time,
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());

    // A second model on the same connection: a new nonce, a new grant.
    let nonce2 = request(&mut s, &owner.other_digest).await;
    assert_ne!(nonce2, nonce);
    let pair2 = EnclaveKeyPair::generate(&rng).unwrap();
    let ev = evidence(
        nonce2,
        exporter(&s),
        Some(pair2.public()),
        vec![sha(&owner.other_digest)],
        MEASUREMENT,
    );
    assert!(matches!(
        attest(&mut s, ev).await,
        BrokerToEnclave::Granted { .. }
    ));

    // The audit log is private and never holds key bytes.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&owner.audit).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let log = std::fs::read_to_string(&owner.audit).unwrap();
    assert_eq!(log.lines().count(), 2);
    assert!(!log.contains(&hex::encode(owner.key)));
    drop(s);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_measurement_is_refused_and_the_log_says_why() {
    let pinned = [0x11u8; 48];
    let owner = owner(&sim_policy(&pinned, ""));
    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;
    let pair = EnclaveKeyPair::generate(&SystemRandom::new()).unwrap();
    let nonce = request(&mut s, &owner.digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair.public()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::PolicyRejected
    );
    let line = last_audit(&owner);
    assert_eq!(line.decision, "refused");
    assert_eq!(line.code.as_deref(), Some("PolicyRejected"));
    let reason = line.reason.unwrap();
    assert!(reason.contains("measurements"), "{reason}");
    assert!(
        reason.contains(&hex::encode(pinned)),
        "expected value missing: {reason}"
    );
    assert!(
        reason.contains(&hex::encode(MEASUREMENT)),
        "found value missing: {reason}"
    );
    assert!(!line.evidence_verified);
    // What the (unverified) report says is still recorded for diagnosis.
    assert_eq!(
        line.measurement.as_deref(),
        Some(&*hex::encode(MEASUREMENT))
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_evidence_is_refused() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;
    let rng = SystemRandom::new();

    let mut first = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut first, &owner.digest).await;
    let pair = EnclaveKeyPair::generate(&rng).unwrap();
    let ev = evidence(
        nonce,
        exporter(&first),
        Some(pair.public()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert!(matches!(
        attest(&mut first, ev.clone()).await,
        BrokerToEnclave::Granted { .. }
    ));

    // The same evidence again, on the same connection (its nonce is used up)…
    request(&mut first, &owner.digest).await;
    assert_eq!(
        refused(&attest(&mut first, ev.clone()).await),
        RefusalCode::Replay
    );
    let reason = last_audit(&owner).reason.unwrap();
    assert!(
        reason.contains("claims.nonce") && reason.contains("replayed"),
        "{reason}"
    );

    // …and on a new connection (the refusal of unverified evidence closed the first).
    closed_within(&mut first, Duration::from_secs(5)).await;
    let mut second = connect(broker.addr, broker.pin).await;
    request(&mut second, &owner.digest).await;
    assert_eq!(refused(&attest(&mut second, ev).await), RefusalCode::Replay);
    let line = last_audit(&owner);
    assert_eq!(line.code.as_deref(), Some("Replay"));
    assert!(line.reason.unwrap().contains("replayed"));

    // A refusal of evidence that did not verify ends the connection.
    closed_within(&mut second, Duration::from_secs(5)).await;

    // A nonce the broker never issued.
    let mut second = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut second, &owner.digest).await;
    let mut made_up = nonce;
    made_up[0] ^= 1;
    let ev = evidence(
        made_up,
        exporter(&second),
        Some(pair_public_fresh()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert_eq!(refused(&attest(&mut second, ev).await), RefusalCode::Replay);
    assert!(last_audit(&owner).reason.unwrap().contains("never issued"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_must_name_the_requested_model_and_the_policy_must_allow_it() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;

    // Key for `digest` requested, evidence made for `other_digest`.
    let nonce = request(&mut s, &owner.digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair_public_fresh()),
        vec![sha(&owner.other_digest)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::EvidenceRejected
    );
    let line = last_audit(&owner);
    let reason = line.reason.unwrap();
    assert!(reason.contains("claims.model_digests"), "{reason}");
    assert!(reason.contains(&owner.digest.to_string()), "{reason}");
    drop(s);
    broker.stop().await;

    // The policy allows only `digest`: a genuine request for `other_digest` is refused.
    let owner = self::owner(&sim_policy(
        &MEASUREMENT,
        &format!(
            "model_digests = [\"{}\"]\n",
            ModelDigest::of(b"the owner's model")
        ),
    ));
    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.other_digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair_public_fresh()),
        vec![sha(&owner.other_digest)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::PolicyRejected
    );
    let reason = last_audit(&owner).reason.unwrap();
    assert!(reason.contains("model_digests"), "{reason}");

    // No enclave key in the claims: nothing to wrap to.
    let nonce = request(&mut s, &owner.digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        None,
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::EvidenceRejected
    );
    assert!(last_audit(&owner).reason.unwrap().contains("enclave_key"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_bound_to_another_connection_is_refused() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;
    let other = connect(broker.addr, broker.pin).await;
    let mut s = connect(broker.addr, broker.pin).await;
    assert_ne!(exporter(&other), exporter(&s));
    let nonce = request(&mut s, &owner.digest).await;
    // Right nonce, but the exporter of another TLS connection (a relay terminating TLS sees this).
    let ev = evidence(
        nonce,
        exporter(&other),
        Some(pair_public_fresh()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::EvidenceRejected
    );
    let reason = last_audit(&owner).reason.unwrap();
    assert!(reason.contains("claims.tls_exporter"), "{reason}");
    drop(other);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_evidence_needs_the_simulated_root_in_the_policy() {
    let owner = owner(&format!(
        "workload_identity = \"measurement\"\nmeasurements = [\"{}\"]\n",
        hex::encode(MEASUREMENT)
    ));
    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair_public_fresh()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::EvidenceRejected
    );
    let line = last_audit(&owner);
    let reason = line.reason.unwrap();
    assert!(reason.starts_with("root"), "{reason}");
    assert_eq!(line.simulated, Some(true)); // what the evidence claims
    broker.stop().await;
}

/// Evidence normally carries its VCEK; when it does not, a broker with `[collateral]` fetches it (here from
/// an offline bundle), verifies it with the rest of the chain, and grants. Without `[collateral]` the same
/// evidence is refused: nothing to check its signature with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_without_its_vcek_is_completed_from_the_brokers_collateral() {
    use cloister_attestation::evidence::CertChainDer;
    use cloister_attestation::snp::report::AttestationReport;
    use cloister_collateral::{Bundle, Item, KeyTree, VcekId};
    use cloister_keybroker::CollateralConfig;
    use cloister_sim::{ReportRequest, SimSigningKey};

    let report = sim().report(&ReportRequest::default()).unwrap();
    let parsed = AttestationReport::from_bytes(&report).unwrap();
    let product = parsed.cpuid_product().unwrap();
    let chain = sim().certificate_chain(SimSigningKey::Vcek).unwrap();
    let mut bundle = Bundle::default();
    bundle.insert(
        &Item::Vcek(VcekId::of(&parsed, product).unwrap()),
        chain.leaf.clone(),
    );
    let certs = sim().certs_dir();
    let mut pem = std::fs::read(certs.join("ask.pem")).unwrap();
    pem.extend(std::fs::read(certs.join("ark.pem")).unwrap());
    bundle.insert(&Item::Chain(KeyTree::Vcek, product), pem);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collateral.json");
    bundle.write(&file).unwrap();

    let without_vcek = |nonce, exporter, digest: &ModelDigest| {
        let mut ev = evidence(
            nonce,
            exporter,
            Some(pair_public_fresh()),
            vec![sha(digest)],
            MEASUREMENT,
        );
        ev.cert_chain = CertChainDer::default();
        ev
    };

    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let mut config = owner.config.clone();
    config.collateral = Some(CollateralConfig {
        bundle: Some(file),
        ..CollateralConfig::default()
    });
    let broker = start(config).await;
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.digest).await;
    let ev = without_vcek(nonce, exporter(&s), &owner.digest);
    assert!(matches!(
        attest(&mut s, ev).await,
        BrokerToEnclave::Granted { .. }
    ));
    broker.stop().await;

    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.digest).await;
    let ev = without_vcek(nonce, exporter(&s), &owner.digest);
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::EvidenceRejected
    );
    let reason = last_audit(&owner).reason.unwrap();
    assert!(reason.contains("VCEK"), "{reason}");
    broker.stop().await;
}
