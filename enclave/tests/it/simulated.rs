//! The `simulated` firmware backend end to end: evidence served by the enclave verifies with the production
//! verifier (simulated root given explicitly), carries this launch's measurement, and binds the client's own
//! exporter and nonce.

use std::sync::Arc;

use cloister_attestation::evidence::{verify_evidence, Evidence, ExpectedSession, Platform};
use cloister_attestation::snp::Product;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_enclave::config::Config;
use cloister_enclave::firmware;
use cloister_models::ModelDigest;
use cloister_sim::{simulated_launch_measurement, SimConfig, SimPlatform};
use ring::rand::SystemRandom;

use crate::common::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn simulated_evidence_verifies_and_binds_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let sim_dir = dir.path().join("sim");
    let platform = SimPlatform::init(
        &sim_dir,
        &SimConfig::new(Product::Genoa, now() - 3600),
        &SystemRandom::new(),
    )
    .unwrap();

    let digest = ModelDigest::from_bytes([0x5a; 48]);
    let text = config_text(&[("m", digest)], "127.0.0.1:1", &[0; 32], "").replace(
        "sim_dir = \"/nonexistent\"",
        &format!("sim_dir = \"{}\"", sim_dir.display()),
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    let fw = firmware::open(&config.firmware, text.as_bytes()).unwrap();
    assert_eq!(fw.platform(), Platform::SnpSimulated);
    let server = start_server(&text, Arc::clone(&fw)).await;

    let mut c = Client::connect(server.addr).await;
    let nonce = [0xc3u8; 32];
    let reply = c
        .post_json(
            "/v2/attestation",
            &serde_json::json!({ "nonce": hex::encode(nonce) }),
        )
        .await;
    assert_eq!(reply.status, 200);
    let evidence = Evidence::from_bytes(&reply.body).unwrap();

    let options = VerifyOptions {
        at_unix: now(),
        crls: &[],
        simulated_root: Some(platform.root()),
    };
    let policy = Policy::baseline();
    let verified = verify_evidence(
        &evidence,
        &policy,
        &options,
        &ExpectedSession {
            nonce: &nonce,
            tls_exporter: &c.exporter,
        },
    )
    .unwrap();
    assert!(verified.report().is_simulated());
    // The measurement is that of this launch: this executable and the exact configuration bytes.
    let exe = std::fs::read("/proc/self/exe").unwrap();
    assert_eq!(
        verified.report().report().measurement,
        simulated_launch_measurement(&exe, text.as_bytes())
    );
    assert_eq!(verified.claims().config_digest, config.digest);

    // The same evidence checked against another connection's exporter: a relay is detected.
    let other = Client::connect(server.addr).await;
    let err = verify_evidence(
        &evidence,
        &policy,
        &options,
        &ExpectedSession {
            nonce: &nonce,
            tls_exporter: &other.exporter,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, cloister_attestation::Error::ExporterMismatch { .. }),
        "{err}"
    );
    // Without the simulated root, the production verifier rejects it.
    let err = verify_evidence(
        &evidence,
        &policy,
        &VerifyOptions {
            simulated_root: None,
            ..options
        },
        &ExpectedSession {
            nonce: &nonce,
            tls_exporter: &c.exporter,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
}

#[test]
fn simulated_firmware_needs_an_initialised_platform() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &[("m", ModelDigest::from_bytes([1; 48]))],
        "127.0.0.1:1",
        &[0; 32],
        "",
    )
    .replace(
        "/nonexistent",
        &dir.path().join("empty").display().to_string(),
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    let err = firmware::open(&config.firmware, text.as_bytes())
        .err()
        .unwrap();
    let chain = cloister_enclave::runtime::error_chain(&err);
    assert!(chain.contains("simulated platform"), "{chain}");
}
