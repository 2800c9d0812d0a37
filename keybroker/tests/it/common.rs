//! The fake enclave and the model owner's files, shared by the broker's tests (and by the `cloister
//! keybroker` command's tests in the client crate, which include this file): a TLS client that pins the
//! broker's certificate and builds evidence with the simulated platform (`cloister_sim`),
//! exactly as the real enclave's key-release client does.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloister_attestation::evidence::{
    Claims, EnclaveKey, Evidence, Platform, Sha384, CLAIMS_VERSION, TLS_EXPORTER_LABEL,
};
use cloister_attestation::snp::Product;
use cloister_keybroker::{generate_tls_identity, AuditRecord, BrokerConfig, KeyBroker, Limits};
use cloister_models::{Keystore, ModelDigest, ModelKey};
use cloister_proto::frame;
use cloister_proto::key_release::{
    BrokerToEnclave, EnclaveToBroker, RefusalCode, PROTOCOL_VERSION,
};
use cloister_sim::{ReportRequest, SimConfig, SimPlatform, SimSigningKey};
use ring::rand::SystemRandom;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The launch measurement of the fake enclave.
pub(crate) const MEASUREMENT: [u8; 48] = [0x5a; 48];

// ---------------------------------------------------------------------------------------------------------
// The simulated platform: one per test binary (RSA-4096 key generation takes a few seconds).

pub(crate) fn sim() -> &'static SimPlatform {
    static SIM: OnceLock<SimPlatform> = OnceLock::new();
    SIM.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("keybroker-sim-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let platform_dir = dir.join("platform");
        SimPlatform::init(
            &platform_dir,
            &SimConfig::new(Product::Genoa, now - 3600),
            &SystemRandom::new(),
        )
        .unwrap()
    })
}

pub(crate) fn sim_root_path() -> PathBuf {
    sim().certs_dir().join("ark.pem")
}

// ---------------------------------------------------------------------------------------------------------
// The model owner: a keystore with two models, a policy, a TLS identity, an audit log.

pub(crate) struct Owner {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) digest: ModelDigest,
    pub(crate) other_digest: ModelDigest,
    pub(crate) key: [u8; 32],
    pub(crate) audit: PathBuf,
    pub(crate) config: BrokerConfig,
}

pub(crate) fn owner(policy: &str) -> Owner {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rng = SystemRandom::new();
    let keystore = Keystore::create(dir.join("keys")).unwrap();
    let digest = ModelDigest::of(b"the owner's model");
    let other_digest = ModelDigest::of(b"another model of the owner");
    let key = ModelKey::generate(&rng).unwrap();
    keystore.put(&digest, &key).unwrap();
    keystore
        .put(&other_digest, &ModelKey::generate(&rng).unwrap())
        .unwrap();
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    generate_tls_identity(&dir.join("broker.crt.pem"), &dir.join("broker.key.pem")).unwrap();
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        keystore: dir.join("keys"),
        policy: dir.join("policy.toml"),
        tls_certificate: dir.join("broker.crt.pem"),
        tls_key: dir.join("broker.key.pem"),
        audit_log: dir.join("audit.log"),
        state_anchors: None,
        collateral: None,
        model_policies: Vec::new(),
        limits: Limits {
            handshake_timeout_secs: 1,
            read_timeout_secs: 1,
            connection_timeout_secs: 20,
            // Every refusal on its own line, so that each test can read its reason at once; the default
            // (summaries) has its own test.
            audit_summary_secs: 0,
            ..Limits::default()
        },
    };
    Owner {
        _tmp: tmp,
        digest,
        other_digest,
        key: *key.expose_secret(),
        audit: dir.join("audit.log"),
        config,
    }
}

/// The owner's policy trusting the simulated root and pinning `measurement`.
pub(crate) fn sim_policy(measurement: &[u8; 48], extra: &str) -> String {
    format!(
        "workload_identity = \"measurement\"\nmeasurements = [\"{}\"]\nsimulated_root = \"{}\"\n{extra}",
        hex::encode(measurement),
        sim_root_path().display()
    )
}

pub(crate) fn audit_lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn last_audit(owner: &Owner) -> AuditRecord {
    audit_lines(&owner.audit).pop().expect("an audit line")
}

// ---------------------------------------------------------------------------------------------------------
// The broker, in process.

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) pin: [u8; 32],
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn start(config: BrokerConfig) -> Running {
    let bound = KeyBroker::new(config)
        .unwrap()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr().unwrap();
    let pin = bound.certificate_sha256();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bound
            .serve_until(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        pin,
        stop: Some(tx),
        task,
    }
}

impl Running {
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("broker stops")
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fake enclave.

/// A client configuration that accepts exactly the broker certificate with SHA-256 `pin`, as the enclave's.
pub(crate) fn pinned_config(pin: [u8; 32]) -> rustls::ClientConfig {
    cloister_proto::tls::client_builder()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(cloister_proto::tls::danger::PinnedServer::new(
            pin,
            &cloister_proto::tls::provider(),
        )))
        .with_no_client_auth()
}

pub(crate) async fn connect(addr: SocketAddr, pin: [u8; 32]) -> TlsStream<TcpStream> {
    let config = pinned_config(pin);
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("cloister-keybroker").unwrap(), tcp)
        .await
        .unwrap()
}

pub(crate) fn exporter(s: &TlsStream<TcpStream>) -> [u8; 32] {
    s.get_ref()
        .1
        .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
        .unwrap()
}

pub(crate) fn sha(d: &ModelDigest) -> Sha384 {
    Sha384(*d.as_bytes())
}

/// Evidence from the simulated platform for these claims.
pub(crate) fn evidence(
    nonce: [u8; 32],
    tls_exporter: [u8; 32],
    enclave_key: Option<[u8; 32]>,
    model_digests: Vec<Sha384>,
    measurement: [u8; 48],
) -> Evidence {
    evidence_from(
        sim(),
        nonce,
        tls_exporter,
        enclave_key,
        model_digests,
        measurement,
    )
}

/// [`evidence`] from `platform` (e.g. a second chip of the simulated platform).
pub(crate) fn evidence_from(
    platform: &SimPlatform,
    nonce: [u8; 32],
    tls_exporter: [u8; 32],
    enclave_key: Option<[u8; 32]>,
    model_digests: Vec<Sha384>,
    measurement: [u8; 48],
) -> Evidence {
    let claims = Claims {
        version: CLAIMS_VERSION,
        nonce,
        tls_exporter,
        enclave_key: enclave_key.map(EnclaveKey::X25519),
        model_digests,
        config_digest: Sha384([7; 48]),
        receipt_key: None,
        model_signers: Vec::new(),
    };
    let report = platform
        .report(&ReportRequest {
            report_data: claims.report_data().unwrap(),
            measurement,
            ..ReportRequest::default()
        })
        .unwrap();
    Evidence {
        platform: Platform::SnpSimulated,
        report: report.to_vec(),
        cert_chain: platform.certificate_chain(SimSigningKey::Vcek).unwrap(),
        claims,
        vtpm: None,
    }
}

pub(crate) async fn recv(s: &mut TlsStream<TcpStream>) -> BrokerToEnclave {
    tokio::time::timeout(Duration::from_secs(30), frame::read(s, "broker message"))
        .await
        .expect("broker answers")
        .unwrap()
}

/// KeyRequest → Challenge; returns the nonce.
pub(crate) async fn request(s: &mut TlsStream<TcpStream>, digest: &ModelDigest) -> [u8; 32] {
    request_with_state(s, digest, None).await
}

/// KeyRequest with a durable-state operation → Challenge; returns the nonce.
pub(crate) async fn request_with_state(
    s: &mut TlsStream<TcpStream>,
    digest: &ModelDigest,
    state: Option<cloister_proto::key_release::StateRequest>,
) -> [u8; 32] {
    frame::write(
        s,
        &EnclaveToBroker::KeyRequest {
            version: PROTOCOL_VERSION,
            model_digest: sha(digest),
            state,
        },
    )
    .await
    .unwrap();
    match recv(s).await {
        BrokerToEnclave::Challenge { nonce } => nonce,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

pub(crate) async fn attest(s: &mut TlsStream<TcpStream>, evidence: Evidence) -> BrokerToEnclave {
    frame::write(s, &EnclaveToBroker::Attest { evidence })
        .await
        .unwrap();
    recv(s).await
}

pub(crate) fn refused(msg: &BrokerToEnclave) -> RefusalCode {
    match msg {
        BrokerToEnclave::Refused { code } => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Waits for the peer to close (EOF or reset); returns how long it took.
pub(crate) async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// A fresh X25519 public key (for evidence whose key release is not completed).
pub(crate) fn pair_public_fresh() -> [u8; 32] {
    cloister_proto::key_release::EnclaveKeyPair::generate(&SystemRandom::new())
        .unwrap()
        .public()
}
