//! Issue 21, item 4, at the broker: the enclaves' durable-state anchors and the per-model release limit.
//! A host that kills and restarts an enclave used to get a fresh key release (and fresh budgets) every
//! time, without limit; and nothing told a restarted enclave which of the host's state blobs was the latest.

use cloister_attestation::evidence::Sha384;
use cloister_proto::key_release::{BrokerToEnclave, RefusalCode, StateAnchor, StateRequest};

use crate::common::*;

/// One attested exchange for the owner's model with `state`; the broker's answer.
async fn exchange(broker: &Running, owner: &Owner, state: Option<StateRequest>) -> BrokerToEnclave {
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request_with_state(&mut s, &owner.digest, state).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair_public_fresh()),
        vec![sha(&owner.digest)],
        MEASUREMENT,
    );
    attest(&mut s, ev).await
}

fn open(label: &str) -> Option<StateRequest> {
    Some(StateRequest::Open {
        label: label.into(),
    })
}

fn commit(label: &str, version: u64, digest: Sha384) -> Option<StateRequest> {
    Some(StateRequest::Commit {
        label: label.into(),
        version,
        digest,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_anchors_advance_one_version_at_a_time_and_survive_a_broker_restart() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let broker = start(owner.config.clone()).await;
    // A new instance: the key, and an empty anchor.
    let BrokerToEnclave::Granted { anchor, .. } = exchange(&broker, &owner, open("pod-0")).await
    else {
        panic!("expected a grant")
    };
    assert_eq!(anchor, Some(StateAnchor::default()));
    // Commits: no key, the anchor moves by one.
    let (d1, d2) = (Sha384([1; 48]), Sha384([2; 48]));
    let answer = exchange(&broker, &owner, commit("pod-0", 1, d1)).await;
    assert_eq!(
        answer,
        BrokerToEnclave::Committed {
            anchor: StateAnchor {
                version: 1,
                digest: Some(d1)
            }
        }
    );
    assert_eq!(last_audit(&owner).decision, "committed");
    // A replayed or skipped version conflicts (the host replaying an old commit, or two instances
    // sharing a label).
    for (version, digest) in [(1, d2), (3, d2)] {
        let answer = exchange(&broker, &owner, commit("pod-0", version, digest)).await;
        assert_eq!(refused(&answer), RefusalCode::StateConflict);
        let line = last_audit(&owner);
        assert!(
            line.reason
                .as_deref()
                .unwrap()
                .contains("the anchor is at v1"),
            "{line:?}"
        );
    }
    exchange(&broker, &owner, commit("pod-0", 2, d2)).await;
    // Another label is another instance.
    let BrokerToEnclave::Granted { anchor, .. } = exchange(&broker, &owner, open("pod-1")).await
    else {
        panic!("expected a grant")
    };
    assert_eq!(anchor.unwrap().version, 0);
    broker.stop().await;

    // The anchors are on disk: a restarted broker gives the restarted enclave the latest.
    let broker = start(owner.config.clone()).await;
    let BrokerToEnclave::Granted { anchor, .. } = exchange(&broker, &owner, open("pod-0")).await
    else {
        panic!("expected a grant")
    };
    assert_eq!(
        anchor,
        Some(StateAnchor {
            version: 2,
            digest: Some(d2)
        })
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_releases_are_limited_per_model_and_commits_do_not_count() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let mut config = owner.config.clone();
    config.limits.releases_per_model_per_hour = 2;
    let broker = start(config).await;
    for label in ["a", "b"] {
        assert!(matches!(
            exchange(&broker, &owner, open(label)).await,
            BrokerToEnclave::Granted { .. }
        ));
    }
    // Commits are not releases.
    for v in 1..=3 {
        assert!(matches!(
            exchange(&broker, &owner, commit("a", v, Sha384([v as u8; 48]))).await,
            BrokerToEnclave::Committed { .. }
        ));
    }
    // A third start in the hour, under any label or none: refused, and the audit line says why.
    for state in [open("c"), None] {
        let answer = exchange(&broker, &owner, state).await;
        assert_eq!(refused(&answer), RefusalCode::RateLimited);
        let line = last_audit(&owner);
        assert!(
            line.reason
                .as_deref()
                .unwrap()
                .starts_with("releases_per_model_per_hour: 2"),
            "{line:?}"
        );
    }
    // A refusal is not a release: requests for a model the broker holds no key for do not count.
    let other = owner_with_limit(1);
    let broker2 = start(other.1).await;
    for _ in 0..3 {
        let mut s = connect(broker2.addr, broker2.pin).await;
        let unknown = cloister_models::ModelDigest::of(b"a model nobody sealed");
        let nonce = request(&mut s, &unknown).await;
        let ev = evidence(
            nonce,
            exporter(&s),
            Some(pair_public_fresh()),
            vec![sha(&unknown)],
            MEASUREMENT,
        );
        assert_eq!(
            refused(&attest(&mut s, ev).await),
            RefusalCode::UnknownModel
        );
    }
    assert!(matches!(
        exchange(&broker2, &other.0, None).await,
        BrokerToEnclave::Granted { .. }
    ));
    broker2.stop().await;

    // The other model has its own count.
    let mut s = connect(broker.addr, broker.pin).await;
    let nonce = request(&mut s, &owner.other_digest).await;
    let ev = evidence(
        nonce,
        exporter(&s),
        Some(pair_public_fresh()),
        vec![sha(&owner.other_digest)],
        MEASUREMENT,
    );
    assert!(matches!(
        attest(&mut s, ev).await,
        BrokerToEnclave::Granted { .. }
    ));
    broker.stop().await;
}

/// An owner whose broker allows `per_hour` releases per model.
fn owner_with_limit(per_hour: u32) -> (Owner, cloister_keybroker::BrokerConfig) {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let mut config = owner.config.clone();
    config.limits.releases_per_model_per_hour = per_hour;
    (owner, config)
}
