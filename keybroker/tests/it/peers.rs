//! Hostile and careless peers: malformed requests, slow and junk connections, per-address bounds and the
//! audit summaries; policies that pin nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloister_keybroker::{AuditSummary, KeyBroker};
use cloister_models::ModelDigest;
use cloister_proto::frame;
use cloister_proto::key_release::{
    BrokerToEnclave, EnclaveToBroker, RefusalCode, PROTOCOL_VERSION,
};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_and_bad_requests_are_refused() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;
    let mut s = connect(broker.addr, broker.pin).await;

    // An unknown model is told only to verified evidence: first the challenge, as for any model …
    let unknown = ModelDigest::of(b"not in the keystore");
    let nonce = request(&mut s, &unknown).await;
    // … then junk evidence is refused for what it is, without revealing whether a key exists …
    let junk = evidence(
        nonce,
        [9; 32],
        Some([1; 32]),
        vec![sha(&unknown)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, junk).await),
        RefusalCode::EvidenceRejected
    );
    // (a refusal of evidence that did not verify ends the connection: one full verification per
    // connection for unverified input) …
    closed_within(&mut s, Duration::from_secs(5)).await;
    // … and verified evidence learns that there is no key.
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &unknown).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some([1; 32]),
        vec![sha(&unknown)],
        MEASUREMENT,
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::UnknownModel
    );
    let line = last_audit(&owner);
    assert_eq!(line.code.as_deref(), Some("UnknownModel"));
    assert!(line.evidence_verified);
    assert_eq!(line.model_digest, Some(unknown.to_string()));
    // The connection goes on: a known model gets its challenge.
    request(&mut s, &owner.digest).await;
    drop(s);

    // An unsupported protocol version.
    let mut s = connect(broker.addr, broker.pin).await;
    frame::write(
        &mut s,
        &EnclaveToBroker::KeyRequest {
            version: PROTOCOL_VERSION + 1,
            model_digest: sha(&owner.digest),
            state: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(refused(&recv(&mut s).await), RefusalCode::BadRequest);
    assert!(last_audit(&owner).reason.unwrap().starts_with("version"));
    closed_within(&mut s, Duration::from_secs(5)).await;

    // Attest before KeyRequest.
    let mut s = connect(broker.addr, broker.pin).await;
    let ev = evidence([0; 32], [0; 32], None, vec![], MEASUREMENT);
    assert_eq!(refused(&attest(&mut s, ev).await), RefusalCode::BadRequest);
    closed_within(&mut s, Duration::from_secs(5)).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_disconnected_and_the_broker_keeps_serving() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;

    // Garbage instead of a TLS handshake.
    let mut tcp = TcpStream::connect(broker.addr).await.unwrap();
    tcp.write_all(&[0x42; 300]).await.unwrap();
    closed_within(&mut tcp, Duration::from_secs(5)).await;

    // A silent TCP peer (no handshake): dropped after the handshake timeout (1 s here).
    let mut tcp = TcpStream::connect(broker.addr).await.unwrap();
    let took = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // A silent TLS peer: dropped after the read timeout (1 s here).
    let mut s = connect(broker.addr, broker.pin).await;
    let took = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // A silent peer after the challenge.
    let mut s = connect(broker.addr, broker.pin).await;
    request(&mut s, &owner.digest).await;
    closed_within(&mut s, Duration::from_secs(5)).await;

    // An oversized frame: refused before anything is allocated, then closed.
    let mut s = connect(broker.addr, broker.pin).await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(refused(&recv(&mut s).await), RefusalCode::BadRequest);
    closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(last_audit(&owner)
        .reason
        .unwrap()
        .contains("exceeds the limit"));

    // A frame of garbage inside TLS.
    let mut s = connect(broker.addr, broker.pin).await;
    s.write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(refused(&recv(&mut s).await), RefusalCode::BadRequest);
    closed_within(&mut s, Duration::from_secs(5)).await;

    // A half-sent frame, then silence: the read timeout covers the whole frame.
    let mut s = connect(broker.addr, broker.pin).await;
    s.write_all(&[0, 0, 1, 0, 1, 2]).await.unwrap();
    s.flush().await.unwrap();
    closed_within(&mut s, Duration::from_secs(5)).await;

    // A client that does not trust the broker's certificate cannot talk to it, and the broker
    // shrugs it off.
    let tcp = TcpStream::connect(broker.addr).await.unwrap();
    let config = pinned_config([0; 32]);
    assert!(TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("x").unwrap(), tcp)
        .await
        .is_err());

    // Still serving, and still releasing keys.
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair_public_fresh()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    assert!(matches!(
        attest(&mut s, ev).await,
        BrokerToEnclave::Granted { .. }
    ));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded() {
    let mut owner = owner(&sim_policy(&MEASUREMENT, ""));
    owner.config.limits.max_connections = 1;
    owner.config.limits.read_timeout_secs = 2;
    owner.config.limits.handshake_timeout_secs = 2;
    let broker = start(owner.config.clone()).await;
    // One silent peer holds the only slot…
    let _silent = TcpStream::connect(broker.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …so the next client is served only once the broker dropped it (after its timeout).
    let start = Instant::now();
    let mut s = connect(broker.addr, broker.pin).await;
    request(&mut s, &owner.digest).await;
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    broker.stop().await;
}

/// Issue 9, item 9: unauthenticated peers cannot grow the audit log line by line. With the default
/// summaries, 300 junk exchanges from one address make no decision line, and one summary line per address
/// when the interval ends (here: at shutdown); a decision about verified evidence is still written at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_refusals_are_summarised_per_address_not_logged_one_by_one() {
    let mut owner = owner(&sim_policy(&MEASUREMENT, ""));
    owner.config.limits.audit_summary_secs = 3600;
    owner.config.limits.max_connections_per_source = 1000;
    let broker = start(owner.config.clone()).await;
    for _ in 0..300 {
        let mut s = connect(broker.addr, broker.pin).await;
        let nonce = request(&mut s, &owner.digest).await;
        // A made-up exporter: evidence that is not bound to this connection.
        let ev = evidence(
            nonce,
            [1; 32],
            Some([2; 32]),
            vec![sha(&owner.digest)],
            MEASUREMENT,
        );
        assert_eq!(
            refused(&attest(&mut s, ev).await),
            RefusalCode::EvidenceRejected
        );
    }
    let log = std::fs::read_to_string(&owner.audit).unwrap_or_default();
    assert_eq!(log.lines().count(), 0, "{log}");

    // A genuine, bound exchange refused by the policy (the model is not allowed) is a decision: one line now.
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some([2; 32]),
        vec![sha(&owner.digest)],
        [0x11; 48],
    );
    assert_eq!(
        refused(&attest(&mut s, ev).await),
        RefusalCode::PolicyRejected
    );
    let line = last_audit(&owner);
    assert_eq!(line.code.as_deref(), Some("PolicyRejected"));
    assert!(line.reason.unwrap().starts_with("policy: measurements"));
    drop(s);

    broker.stop().await;
    let log = std::fs::read_to_string(&owner.audit).unwrap();
    let summaries: Vec<AuditSummary> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(summaries.len(), 1, "{log}");
    assert_eq!(summaries[0].peer, "127.0.0.1");
    assert_eq!(summaries[0].count, 300);
    assert_eq!(summaries[0].codes.get("EvidenceRejected"), Some(&300));
    assert!(summaries[0].reasons[0].starts_with("claims.tls_exporter"));
    assert_eq!(log.lines().count(), 2, "{log}");
}

/// Issue 9, item 10: one address cannot hold every connection of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let mut owner = owner(&sim_policy(&MEASUREMENT, ""));
    owner.config.limits.max_connections_per_source = 3;
    owner.config.limits.handshake_timeout_secs = 10;
    let broker = start(owner.config.clone()).await;
    // Three silent connections from 127.0.0.1 hold their slots …
    let mut silent = vec![];
    for _ in 0..3 {
        silent.push(TcpStream::connect(broker.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // … a fourth from the same address is closed at once …
    let mut fourth = TcpStream::connect(broker.addr).await.unwrap();
    let took = closed_within(&mut fourth, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    // … and once one of them leaves, the address is served again.
    drop(silent.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = connect(broker.addr, broker.pin).await;
    request(&mut s, &owner.digest).await;
    broker.stop().await;
}

/// Issue 9, item 3: a policy that pins no workload identity releases nothing: the broker refuses to start,
/// naming the missing pins, unless the policy says `allow_any_workload = true`.
#[test]
fn a_policy_without_a_workload_pin_is_refused_at_start() {
    let owner = owner(&format!(
        "simulated_root = \"{}\"\n",
        sim_root_path().display()
    ));
    let err = KeyBroker::new(owner.config.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("workload_identity: not set"), "{err}");
    assert!(err.contains("allow_any_workload"), "{err}");
    std::fs::write(
        &owner.config.policy,
        format!(
            "allow_any_workload = true\nsimulated_root = \"{}\"\n",
            sim_root_path().display()
        ),
    )
    .unwrap();
    let broker = KeyBroker::new(owner.config).unwrap();
    assert!(broker.accepts_any_workload());
}

/// Issue 21, item 1: a platform's shared measurement is not a workload pin. The Azure paravisor's
/// measurement alone (the same on every Azure CVM), a Kata pod VM's alone (the same for every pod of a
/// runtime class), or a measurement with no word on which platform it is for: the broker refuses to start,
/// naming the missing pin.
#[test]
fn platform_only_pins_do_not_start_the_broker() {
    let m = format!("measurements = [\"{}\"]\n", "11".repeat(48));
    let root = format!("simulated_root = \"{}\"\n", sim_root_path().display());
    let owner = owner(&root);
    let refused = |policy: String| {
        std::fs::write(&owner.config.policy, policy).unwrap();
        KeyBroker::new(owner.config.clone())
            .unwrap_err()
            .to_string()
    };
    let err = refused(format!("workload_identity = \"tpm\"\n{m}{root}"));
    assert!(
        err.contains("workload_identity = \"tpm\": pin tpm.pcrs"),
        "{err}"
    );
    let err = refused(format!("workload_identity = \"initdata\"\n{m}{root}"));
    assert!(
        err.contains("workload_identity = \"initdata\": pin host_data"),
        "{err}"
    );
    let err = refused(format!("{m}{root}"));
    assert!(err.contains("workload_identity: not set"), "{err}");
    // Pinned as the platform requires: it starts.
    for good in [
        format!("workload_identity = \"measurement\"\n{m}{root}"),
        format!(
            "workload_identity = \"initdata\"\n{m}host_data = \"{}\"\n{root}",
            "22".repeat(32)
        ),
        format!(
            "workload_identity = \"tpm\"\n{m}{root}[tpm]\npcrs = {{ 11 = \"{}\" }}\n",
            "33".repeat(32)
        ),
    ] {
        std::fs::write(&owner.config.policy, &good).unwrap();
        let broker = KeyBroker::new(owner.config.clone()).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert!(!broker.accepts_any_workload());
    }
}
