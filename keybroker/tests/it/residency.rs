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
