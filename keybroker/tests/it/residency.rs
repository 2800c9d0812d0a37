//! Per-model residency: one broker, two models, each with its own policy (`[models."sha384:…"] policy`);
//! two chips of the simulated platform; each key is released only to the chip its model's policy approves,
//! and the audit line names the policy that decided.

use cloister_proto::key_release::{BrokerToEnclave, RefusalCode};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_is_released_only_to_the_chips_its_policy_approves() {
    let chip_a = sim();
    let mut other = [0u8; 64];
    other[..8].copy_from_slice(b"chip-two");
    let chip_b = chip_a.other_chip(other).unwrap();

    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let dir = owner.config.policy.parent().unwrap().to_path_buf();
    let only = |name: &str, chip: [u8; 64]| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            sim_policy(
                &MEASUREMENT,
                &format!("chip_ids = [\"{}\"]\n", hex::encode(chip)),
            ),
        )
        .unwrap();
        path
    };
    let mut config = owner.config.clone();
    config.model_policies = vec![
        (owner.digest, only("eu-a.toml", chip_a.chip_id())),
        (owner.other_digest, only("eu-b.toml", chip_b.chip_id())),
    ];
    let broker = start(config).await;

    for (platform, model, granted, policy) in [
        (chip_a, owner.digest, true, "eu-a.toml"),
        (&chip_b, owner.digest, false, "eu-a.toml"),
        (&chip_b, owner.other_digest, true, "eu-b.toml"),
        (chip_a, owner.other_digest, false, "eu-b.toml"),
    ] {
        let mut s = connect(broker.addr, broker.pin).await;
        let nonce = request(&mut s, &model).await;
        let ev = evidence_from(
            platform,
            nonce,
            exporter(&s),
            Some(pair_public_fresh()),
            vec![sha(&model)],
            MEASUREMENT,
        );
        let answer = attest(&mut s, ev).await;
        let line = last_audit(&owner);
        assert!(
            line.policy.as_deref().unwrap().ends_with(policy),
            "{line:?}"
        );
        if granted {
            assert!(
                matches!(answer, BrokerToEnclave::Granted { .. }),
                "{line:?}"
            );
        } else {
            assert_eq!(refused(&answer), RefusalCode::PolicyRejected);
            assert!(line.reason.unwrap().contains("chip_ids"));
        }
    }
    broker.stop().await;
}

/// Issue 21, item 8: a `[models."sha384:…"]` entry whose digest has no key in the keystore (a typo) used to
/// be accepted, leaving the intended model under the default policy. The broker refuses to start, naming the
/// digest and the policy file.
#[test]
fn a_model_policy_for_a_digest_without_a_key_does_not_start_the_broker() {
    let owner = owner(&sim_policy(&MEASUREMENT, ""));
    let dir = owner.config.policy.parent().unwrap().to_path_buf();
    let strict = dir.join("eu.toml");
    std::fs::write(&strict, sim_policy(&MEASUREMENT, "chip_ids = []\n")).unwrap();
    let mut typo = *owner.digest.as_bytes();
    typo[47] ^= 1;
    let typo = cloister_models::ModelDigest::from_bytes(typo);
    let mut config = owner.config.clone();
    config.model_policies = vec![(typo, strict.clone())];
    let err = cloister_keybroker::KeyBroker::new(config)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&typo.to_string()), "{err}");
    assert!(err.contains("holds no key for this model"), "{err}");
    assert!(err.contains("eu.toml"), "{err}");
    // The digest as it should be: starts.
    let mut config = owner.config.clone();
    config.model_policies = vec![(owner.digest, strict)];
    cloister_keybroker::KeyBroker::new(config).unwrap();
}
