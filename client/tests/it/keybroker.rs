//! The key broker, in process and as `cloister keybroker`, against a fake enclave: a TLS client that pins
//! the broker's certificate and builds evidence with the simulated platform
//! (`cloister_attestation::sim`), exactly as the real enclave's key-release client does.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloister_attestation::evidence::{
    Claims, EnclaveKey, Evidence, Platform, Sha384, CLAIMS_VERSION, TLS_EXPORTER_LABEL,
};
use cloister_attestation::sim::{ReportRequest, SimConfig, SimPlatform, SimSigningKey};
use cloister_attestation::snp::Product;
use cloister_client::keybroker::{
    certificate_sha256, generate_tls_identity, AuditRecord, AuditSummary, BrokerConfig, KeyBroker,
    Limits,
};
use cloister_models::{Keystore, ModelDigest, ModelKey};
use cloister_proto::frame;
use cloister_proto::key_release::{
    BrokerToEnclave, EnclaveKeyPair, EnclaveToBroker, RefusalCode, PROTOCOL_VERSION,
};
use ring::rand::SystemRandom;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The launch measurement of the fake enclave.
const MEASUREMENT: [u8; 48] = [0x5a; 48];

// ---------------------------------------------------------------------------------------------------------
// The simulated platform: one per test binary (RSA-4096 key generation takes a few seconds).

fn sim() -> &'static SimPlatform {
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

fn sim_root_path() -> PathBuf {
    sim().certs_dir().join("ark.pem")
}

// ---------------------------------------------------------------------------------------------------------
// The model owner: a keystore with two models, a policy, a TLS identity, an audit log.

struct Owner {
    _tmp: tempfile::TempDir,
    digest: ModelDigest,
    other_digest: ModelDigest,
    key: [u8; 32],
    audit: PathBuf,
    config: BrokerConfig,
}

fn owner(policy: &str) -> Owner {
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
fn sim_policy(measurement: &[u8; 48], extra: &str) -> String {
    format!(
        "measurements = [\"{}\"]\nsimulated_root = \"{}\"\n{extra}",
        hex::encode(measurement),
        sim_root_path().display()
    )
}

fn audit_lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn last_audit(owner: &Owner) -> AuditRecord {
    audit_lines(&owner.audit).pop().expect("an audit line")
}

// ---------------------------------------------------------------------------------------------------------
// The broker, in process.

struct Running {
    addr: SocketAddr,
    pin: [u8; 32],
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: BrokerConfig) -> Running {
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
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("broker stops")
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fake enclave.

/// Accepts exactly the pinned certificate (SHA-256 of its DER), as the enclave does.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if certificate_sha256(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned broker".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn connect(addr: SocketAddr, pin: [u8; 32]) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("cloister-keybroker").unwrap(), tcp)
        .await
        .unwrap()
}

fn exporter(s: &TlsStream<TcpStream>) -> [u8; 32] {
    s.get_ref()
        .1
        .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
        .unwrap()
}

fn sha(d: &ModelDigest) -> Sha384 {
    Sha384(*d.as_bytes())
}

/// Evidence from the simulated platform for these claims.
fn evidence(
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
    };
    let report = sim()
        .report(&ReportRequest {
            report_data: claims.report_data().unwrap(),
            measurement,
            ..ReportRequest::default()
        })
        .unwrap();
    Evidence {
        platform: Platform::SnpSimulated,
        report: report.to_vec(),
        cert_chain: sim().certificate_chain(SimSigningKey::Vcek).unwrap(),
        claims,
    }
}

async fn recv(s: &mut TlsStream<TcpStream>) -> BrokerToEnclave {
    tokio::time::timeout(Duration::from_secs(30), frame::read(s, "broker message"))
        .await
        .expect("broker answers")
        .unwrap()
}

/// KeyRequest → Challenge; returns the nonce.
async fn request(s: &mut TlsStream<TcpStream>, digest: &ModelDigest) -> [u8; 32] {
    frame::write(
        s,
        &EnclaveToBroker::KeyRequest {
            version: PROTOCOL_VERSION,
            model_digest: sha(digest),
        },
    )
    .await
    .unwrap();
    match recv(s).await {
        BrokerToEnclave::Challenge { nonce } => nonce,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

async fn attest(s: &mut TlsStream<TcpStream>, evidence: Evidence) -> BrokerToEnclave {
    frame::write(s, &EnclaveToBroker::Attest { evidence })
        .await
        .unwrap();
    recv(s).await
}

fn refused(msg: &BrokerToEnclave) -> RefusalCode {
    match msg {
        BrokerToEnclave::Refused { code } => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Waits for the peer to close (EOF or reset); returns how long it took.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Duration {
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

// ---------------------------------------------------------------------------------------------------------
// Tests.

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

    // …and on a new connection.
    let mut second = connect(broker.addr, broker.pin).await;
    request(&mut second, &owner.digest).await;
    assert_eq!(refused(&attest(&mut second, ev).await), RefusalCode::Replay);
    let line = last_audit(&owner);
    assert_eq!(line.code.as_deref(), Some("Replay"));
    assert!(line.reason.unwrap().contains("replayed"));

    // A nonce the broker never issued.
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

fn pair_public_fresh() -> [u8; 32] {
    EnclaveKeyPair::generate(&SystemRandom::new())
        .unwrap()
        .public()
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
        "measurements = [\"{}\"]\n",
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
    // … and verified evidence learns that there is no key.
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            pin: [0; 32],
            provider,
        }))
        .with_no_client_auth();
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

// ---------------------------------------------------------------------------------------------------------
// The command.

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let keys = dir.join("keys");
    if !keys.exists() {
        Keystore::create(&keys).unwrap();
    }
    std::fs::write(
        dir.join("owner-policy.toml"),
        format!("measurements = [\"{}\"]\n", hex::encode(MEASUREMENT)),
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
        stderr.contains("pins no workload identity") && stderr.contains("measurements"),
        "{stderr}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["keybroker", "--help"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("certificate_sha256"));
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
    assert!(
        err.contains("measurements, id_key_digests, author_key_digests, host_data"),
        "{err}"
    );
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
