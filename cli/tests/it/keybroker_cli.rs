//! `cloister keybroker` as a user runs it: the stdout line, the pin, SIGTERM, bad configurations. The fake
//! enclave is the broker crate's own test helper (included, not copied).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloister_attestation::evidence::Sha384;
use cloister_keybroker::certificate_sha256;
use cloister_models::Keystore;
use cloister_proto::frame;
use cloister_proto::key_release::{BrokerToEnclave, EnclaveToBroker, PROTOCOL_VERSION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[path = "../../../keybroker/tests/it/common.rs"]
mod broker_common;
use broker_common::*;

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let keys = dir.join("keys");
    if !keys.exists() {
        Keystore::create(&keys).unwrap();
    }
    std::fs::write(
        dir.join("owner-policy.toml"),
        format!(
            "workload_identity = \"measurement\"\nmeasurements = [\"{}\"]\n",
            hex::encode(MEASUREMENT)
        ),
    )
    .unwrap();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"keys\"\npolicy = \"owner-policy.toml\"\n\
             tls_certificate = \"broker.crt.pem\"\ntls_key = \"broker.key.pem\"\n\
             audit_log = \"audit.log\"\n{extra}"
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_its_address_and_pin_serves_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "");

    // Without TLS files and without --generate-tls: a clear error.
    let o = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["keybroker", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--generate-tls"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args([
            "keybroker",
            "--config",
            config.to_str().unwrap(),
            "--generate-tls",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .trim_end()
        .strip_prefix("cloister keybroker: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (addr, pin) = rest.split_once(" certificate_sha256=").unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);
    let der = CertificateDer::from_pem_file(tmp.path().join("broker.crt.pem")).unwrap();
    assert_eq!(pin, hex::encode(certificate_sha256(der.as_ref())));
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(tmp.path().join("broker.key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // It speaks the protocol.
    let pin: [u8; 32] = hex::decode(pin).unwrap().try_into().unwrap();
    let mut s = connect(addr, pin).await;
    frame::write(
        &mut s,
        &EnclaveToBroker::KeyRequest {
            version: PROTOCOL_VERSION,
            model_digest: Sha384([3; 48]),
            state: None,
        },
    )
    .await
    .unwrap();
    // Whatever the model, a challenge: only verified evidence learns whether a key exists.
    assert!(matches!(
        recv(&mut s).await,
        BrokerToEnclave::Challenge { .. }
    ));
    drop(s);

    // SIGTERM: a clean stop, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));

    // A second start reuses the identity (same pin), never regenerates it.
    let before = std::fs::read(tmp.path().join("broker.crt.pem")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args([
            "keybroker",
            "--config",
            config.to_str().unwrap(),
            "--generate-tls",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.ends_with(&format!("certificate_sha256={}\n", hex::encode(pin))));
    assert_eq!(
        std::fs::read(tmp.path().join("broker.crt.pem")).unwrap(),
        before
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_command_rejects_bad_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "colour = \"blue\"\n");
    let o = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args([
            "keybroker",
            "--config",
            config.to_str().unwrap(),
            "--generate-tls",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("colour"));

    // An audit log others can read is refused.
    let config = write_config(tmp.path(), "");
    std::fs::write(tmp.path().join("audit.log"), "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tmp.path().join("audit.log"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args([
            "keybroker",
            "--config",
            config.to_str().unwrap(),
            "--generate-tls",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("audit log"));
    std::fs::set_permissions(
        tmp.path().join("audit.log"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // A policy that pins no workload identity: exit 2, naming the pins.
    std::fs::write(
        tmp.path().join("owner-policy.toml"),
        "allow_debug = false\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["keybroker", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("workload_identity: not set") && stderr.contains("measurements"),
        "{stderr}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["keybroker", "--help"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("certificate_sha256"));
}
