//! The configuration file and the TLS identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn config_resolves_relative_paths_and_rejects_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broker.toml");
    fs::write(
        &p,
        "listen = \"127.0.0.1:7443\"\nkeystore = \"keys\"\npolicy = \"/abs/policy.toml\"\n\
         tls_certificate = \"c.pem\"\ntls_key = \"k.pem\"\naudit_log = \"audit.log\"\n\
         [limits]\nread_timeout_secs = 2\n",
    )
    .unwrap();
    let c = BrokerConfig::from_file(&p).unwrap();
    assert_eq!(c.keystore, dir.path().join("keys"));
    assert_eq!(c.policy, PathBuf::from("/abs/policy.toml"));
    assert_eq!(c.limits.read_timeout_secs, 2);
    assert_eq!(c.limits.max_connections, 64);
    fs::write(&p, "listen = \"127.0.0.1:7443\"\nkeystroe = \"keys\"\n").unwrap();
    let e = BrokerConfig::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("keystroe"), "{e}");
}

#[test]
fn tls_identity_is_generated_once_and_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    assert!(generate_tls_identity(&c, &k).unwrap());
    let before = fs::read(&c).unwrap();
    assert!(!generate_tls_identity(&c, &k).unwrap());
    assert_eq!(fs::read(&c).unwrap(), before);
    assert_eq!(fs::metadata(&k).unwrap().mode() & 0o777, 0o600);
    let (cert, _key) = load_tls_identity(&c, &k).unwrap();
    assert_eq!(certificate_sha256(cert.as_ref()).len(), 32);
    fs::remove_file(&k).unwrap();
    assert!(generate_tls_identity(&c, &k).is_err());
    assert!(!k.exists());
}
