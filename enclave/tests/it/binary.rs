//! The `cloister-enclave` binary: usage, fatal configuration errors, and a real start on the simulated
//! platform whose evidence carries the measurement a verifier computes from the binary file itself.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cloister_attestation::evidence::{verify_evidence, Evidence, ExpectedSession};
use cloister_attestation::snp::Product;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_models::ModelDigest;
use cloister_sim::{simulated_launch_measurement, SimConfig, SimPlatform};
use ring::rand::SystemRandom;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_cloister-enclave");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_names_every_option() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for opt in [
        "--config <FILE>",
        "--listen <ADDR>",
        "--blobs <URL>",
        "--state-label <LABEL>",
    ] {
        assert!(out.contains(opt), "{out}");
    }
    // The log level is measured configuration now, not a launch argument.
    assert!(!out.contains("--log"), "{out}");
    let (code, _, err) = run(&[
        "--config",
        "x.toml",
        "--listen",
        "127.0.0.1:0",
        "--blobs",
        "http://127.0.0.1:1",
        "--log",
        "trace",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("log_level"), "{err}");
    let (code, _, err) = run(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn fatal_configuration_errors_exit_non_zero_with_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enclave.toml");
    let good = config_text(
        &[("m", ModelDigest::from_bytes([1; 48]))],
        "127.0.0.1:1",
        &[0; 32],
        "",
    );
    let cases = [
        (format!("{good}typo = 1\n"), "unknown field `typo`"),
        (
            good.replace(
                "firmware = \"simulated\"\nsim_dir = \"/nonexistent\"\n",
                "firmware = \"sev-guest\"\ncollateral = \"off\"\n",
            ),
            "firmware = \"sev-guest\" takes no certificates",
        ),
        // This machine is no SNP guest: the hardware backends say what is missing, never fall back.
        (
            good.replace(
                "firmware = \"simulated\"\nsim_dir = \"/nonexistent\"\n",
                "firmware = \"sev-guest\"\nvcek_cache = \"/nonexistent\"\n",
            ),
            "no /dev/sev-guest: not an SNP guest",
        ),
        (
            good.replace(
                "firmware = \"simulated\"\nsim_dir = \"/nonexistent\"\n",
                "firmware = \"configfs-tsm\"\n",
            ),
            "kernel without configfs-tsm or not an SNP guest",
        ),
        (good.clone(), "holds no simulated platform"),
    ];
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        let (code, out, err) = run(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--blobs",
            "http://127.0.0.1:1",
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty(), "nothing on stdout before listening: {out}");
        assert!(err.contains("cloister-enclave: error: "), "{err}");
        assert!(err.contains(want), "{err}\nwanted: {want}");
    }
    let (code, _, err) = run(&[
        "--config",
        "/nonexistent/enclave.toml",
        "--listen",
        "127.0.0.1:0",
        "--blobs",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the configuration"), "{err}");
    std::fs::write(&path, &good).unwrap();
    let (code, _, err) = run(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--blobs",
        "ftp://x",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid --blobs"), "{err}");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn starts_on_the_simulated_platform_and_attests_its_own_measurement() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let dir = tempfile::tempdir().unwrap();
    let sim_dir = dir.path().join("sim");
    let platform = SimPlatform::init(
        &sim_dir,
        &SimConfig::new(Product::Genoa, now - 3600),
        &SystemRandom::new(),
    )
    .unwrap();
    // The key broker is unreachable: the enclave serves, not ready, and keeps retrying.
    let text = config_text(
        &[("m", ModelDigest::from_bytes([2; 48]))],
        "127.0.0.1:9",
        &[0; 32],
        "",
    )
    .replace("/nonexistent", &sim_dir.display().to_string());
    let path = dir.path().join("enclave.toml");
    std::fs::write(&path, &text).unwrap();

    let mut child = Child(
        Command::new(BIN)
            .args([
                "--config",
                path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--blobs",
                "http://127.0.0.1:9",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("no listening line")
        .unwrap();
    let addr = line
        .strip_prefix("cloister-enclave: listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim_end()
        .parse()
        .unwrap();

    let mut c = Client::connect(addr).await;
    assert_eq!(c.get("/v2/health/live").await.status, 200);
    assert_eq!(c.get("/v2/health/ready").await.status, 503);
    let nonce = [0x77u8; 32];
    let reply = c
        .post_json(
            "/v2/attestation",
            &serde_json::json!({ "nonce": hex::encode(nonce) }),
        )
        .await;
    assert_eq!(reply.status, 200);
    let evidence = Evidence::from_bytes(&reply.body).unwrap();
    let verified = verify_evidence(
        &evidence,
        &Policy::baseline(),
        &VerifyOptions {
            at_unix: now,
            crls: &[],
            simulated_root: Some(platform.root()),
        },
        &ExpectedSession {
            nonce: &nonce,
            tls_exporter: &c.exporter,
        },
    )
    .unwrap();
    // What `cloister measure` computes: from the binary file and the configuration file.
    let expected = simulated_launch_measurement(&std::fs::read(BIN).unwrap(), text.as_bytes());
    assert_eq!(verified.report().report().measurement, expected);
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}
