//! Key release against an in-process fake key broker, and the sealed blob from an in-process fake host:
//! granted → key unwrapped → blob opened → ready; refused → not ready; another broker certificate → TLS
//! failure; a wrong or tampered blob from the host → never loaded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cloister_attestation::evidence::{
    verify_evidence, Claims, EnclaveKey, ExpectedSession, Sha384, TLS_EXPORTER_LABEL,
};
use cloister_attestation::{Policy, VerifyOptions};
use cloister_enclave::blobs::BlobService;
use cloister_enclave::config::Config;
use cloister_enclave::key_release::{BrokerClient, KeyReleaseError};
use cloister_enclave::runtime::{self, Enclave, ModelStatus, RetryPolicy};
use cloister_models::{ModelDigest, ModelKey};
use cloister_proto::frame;
use cloister_proto::key_release::{
    wrap_model_key, BrokerToEnclave, EnclaveToBroker, RefusalCode, PROTOCOL_VERSION,
};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::common::*;

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What the fake broker does with a request.
#[derive(Clone, Copy)]
enum Decision {
    Grant,
    Refuse(RefusalCode),
}

/// What the fake broker saw in one exchange.
#[derive(Debug, Clone)]
struct Seen {
    version: u16,
    requested: Sha384,
    nonce: [u8; 32],
    broker_exporter: [u8; 32],
    claims: Option<Claims>,
    report: Vec<u8>,
}

struct FakeBroker {
    addr: SocketAddr,
    cert_sha256: [u8; 32],
    seen: Arc<Mutex<Vec<Seen>>>,
    handshake_failures: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A broker with its own fresh certificate; grants `key` (if `Grant`) for any request.
async fn fake_broker(decision: Decision, key: Option<[u8; 32]>) -> FakeBroker {
    let signing = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["broker".to_owned()])
        .unwrap()
        .self_signed(&signing)
        .unwrap();
    let cert_der = cert.der().clone();
    let cert_sha256: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &cert_der)
        .as_ref()
        .try_into()
        .unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert_der],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing.serialize_der())),
            )
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handshake_failures = Arc::new(Mutex::new(0));
    let (seen2, failures2) = (seen.clone(), handshake_failures.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let mut tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(_) => {
                    *failures2.lock().unwrap() += 1;
                    continue;
                }
            };
            let broker_exporter: [u8; 32] = tls
                .get_ref()
                .1
                .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
                .unwrap();
            let Ok(EnclaveToBroker::KeyRequest {
                version,
                model_digest,
                ..
            }) = frame::read(&mut tls, "KeyRequest").await
            else {
                continue;
            };
            let mut nonce = [0u8; 32];
            ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut nonce).unwrap();
            frame::write(&mut tls, &BrokerToEnclave::Challenge { nonce })
                .await
                .unwrap();
            let Ok(EnclaveToBroker::Attest { evidence }) = frame::read(&mut tls, "Attest").await
            else {
                continue;
            };
            seen2.lock().unwrap().push(Seen {
                version,
                requested: model_digest,
                nonce,
                broker_exporter,
                claims: Some(evidence.claims.clone()),
                report: evidence.report.clone(),
            });
            // A broker wraps only to verified evidence (wrap_model_key takes the proof): this one accepts
            // any workload of the tests' simulated platform.
            let verified = verify_evidence(
                &evidence,
                &Policy::from_toml("allow_any_workload = true").unwrap(),
                &VerifyOptions {
                    at_unix: time_now(),
                    crls: &[],
                    simulated_root: Some(test_platform().root()),
                },
                &ExpectedSession {
                    nonce: &nonce,
                    tls_exporter: &broker_exporter,
                },
            );
            let answer = match (decision, verified, key) {
                (Decision::Grant, Ok(verified), Some(key)) => {
                    let (broker_public, wrapped_key) = wrap_model_key(
                        &ModelKey::from_bytes(&key),
                        &verified,
                        &model_digest,
                        &SystemRandom::new(),
                    )
                    .unwrap();
                    BrokerToEnclave::Granted {
                        broker_public,
                        wrapped_key,
                        anchor: None,
                    }
                }
                (Decision::Refuse(code), _, _) => BrokerToEnclave::Refused { code },
                _ => BrokerToEnclave::Refused {
                    code: RefusalCode::BadRequest,
                },
            };
            let _ = frame::write(&mut tls, &answer).await;
        }
    });
    FakeBroker {
        addr,
        cert_sha256,
        seen,
        handshake_failures,
        task,
    }
}

/// A blob service: for each path, a queue of bodies (the last one is served forever).
struct FakeHost {
    url: String,
    requests: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_host(blobs: HashMap<String, Vec<Vec<u8>>>) -> FakeHost {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let blobs = Arc::new(Mutex::new(blobs));
    let requests = Arc::new(Mutex::new(0));
    let requests2 = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let blobs = blobs.clone();
            let requests = requests2.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        *requests.lock().unwrap() += 1;
                        let mut blobs = blobs.lock().unwrap();
                        let body = match blobs.get_mut(req.uri().path()) {
                            Some(queue) if queue.len() > 1 => Some(queue.remove(0)),
                            Some(queue) => queue.first().cloned(),
                            None => None,
                        };
                        let resp = match body {
                            Some(b) => Response::new(Full::new(Bytes::from(b))),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    FakeHost {
        url,
        requests,
        task,
    }
}

fn seal(onnx: &[u8], key: &[u8; 32], name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    cloister_models::seal(
        Cursor::new(onnx),
        &mut out,
        &ModelKey::from_bytes(key),
        name,
        cloister_models::MIN_CHUNK_SIZE,
        &SystemRandom::new(),
        &mut |_| {},
    )
    .unwrap();
    out
}

fn blob_path(digest: &ModelDigest) -> String {
    format!("/blobs/{digest}")
}

const FAST: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(100),
    after_refusal: Duration::from_millis(100),
};

struct Setup {
    config: Config,
    enclave: Arc<Enclave>,
    firmware: Arc<FakeFirmware>,
}

fn setup(digest: ModelDigest, broker: &FakeBroker, pin: Option<[u8; 32]>) -> Setup {
    let text = config_text(
        &[("mlp", digest)],
        &broker.addr.to_string(),
        &pin.unwrap_or(broker.cert_sha256),
        "",
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    let firmware = Arc::new(FakeFirmware::default());
    let enclave = Arc::new(Enclave::new(&config, firmware.clone()).unwrap());
    Setup {
        config,
        enclave,
        firmware,
    }
}

#[tokio::test]
async fn granted_key_opens_the_blob_and_the_enclave_becomes_ready() {
    let Some(onnx) = sample("mlp/model.onnx") else {
        return;
    };
    let digest = ModelDigest::of(&onnx);
    let key = [0x42u8; 32];
    let broker = fake_broker(Decision::Grant, Some(key)).await;
    let host = fake_host(HashMap::from([(
        blob_path(&digest),
        vec![seal(&onnx, &key, "mlp")],
    )]))
    .await;
    let s = setup(digest, &broker, None);
    let task = tokio::spawn(runtime::provision(
        s.enclave.clone(),
        BrokerClient::new(&s.config.key_broker).unwrap(),
        BlobService::parse(&host.url).unwrap(),
        FAST,
    ));
    assert!(wait_until(60, || s.enclave.is_ready()).await, "not ready");
    task.await.unwrap();
    assert_eq!(s.enclave.models()[0].status(), ModelStatus::Ready);

    // What the broker saw: the protocol of docs/architecture.md, bound to its own exporter.
    let seen = broker.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.version, PROTOCOL_VERSION);
    assert_eq!(seen.requested, Sha384(*digest.as_bytes()));
    let claims = seen.claims.as_ref().unwrap();
    assert_eq!(claims.nonce, seen.nonce);
    assert_eq!(claims.tls_exporter, seen.broker_exporter);
    assert!(matches!(claims.enclave_key, Some(EnclaveKey::X25519(_))));
    assert_eq!(claims.model_digests, vec![Sha384(*digest.as_bytes())]);
    assert_eq!(claims.config_digest, s.config.digest);
    assert_eq!(
        &seen.report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64],
        &claims.report_data().unwrap()
    );
    // One report warmed the collateral path up at start, one went to the broker.
    assert_eq!(s.firmware.seen.lock().unwrap().len(), 2);

    // The loaded model is the one sealed: it serves.
    let model = s.enclave.models()[0].model().unwrap();
    assert_eq!(model.inputs()[0].name, "x");
}

#[tokio::test]
async fn key_release_unwraps_the_granted_key() {
    let digest = ModelDigest::from_bytes([5; 48]);
    let key = [0x17u8; 32];
    let broker = fake_broker(Decision::Grant, Some(key)).await;
    let s = setup(digest, &broker, None);
    let client = BrokerClient::new(&s.config.key_broker).unwrap();
    let got = client
        .request_key(s.firmware.clone(), &digest, s.config.digest)
        .await
        .unwrap();
    assert_eq!(got.expose_secret(), &key);
}

#[tokio::test]
async fn refusal_keeps_the_enclave_not_ready_and_it_asks_again_later() {
    let digest = ModelDigest::from_bytes([6; 48]);
    let broker = fake_broker(Decision::Refuse(RefusalCode::PolicyRejected), None).await;
    let host = fake_host(HashMap::new()).await;
    let s = setup(digest, &broker, None);

    let client = BrokerClient::new(&s.config.key_broker).unwrap();
    let err = client
        .request_key(s.firmware.clone(), &digest, s.config.digest)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        KeyReleaseError::Refused(RefusalCode::PolicyRejected)
    ));
    assert!(
        err.to_string()
            .contains("policy does not allow this enclave"),
        "{err}"
    );

    let task = tokio::spawn(runtime::provision(
        s.enclave.clone(),
        client,
        BlobService::parse(&host.url).unwrap(),
        FAST,
    ));
    assert!(
        wait_until(20, || broker.seen.lock().unwrap().len() >= 3).await,
        "the enclave should keep asking after a refusal"
    );
    assert!(!s.enclave.is_ready());
    assert_eq!(
        s.enclave.models()[0].status(),
        ModelStatus::Refused(RefusalCode::PolicyRejected)
    );
    // No blob was ever fetched: no key, no decryption attempt.
    assert_eq!(*host.requests.lock().unwrap(), 0);
    task.abort();
}

#[tokio::test]
async fn a_broker_with_another_certificate_fails_the_handshake() {
    let digest = ModelDigest::from_bytes([7; 48]);
    let broker = fake_broker(Decision::Grant, Some([1; 32])).await;
    let mut wrong_pin = broker.cert_sha256;
    wrong_pin[0] ^= 1;
    let s = setup(digest, &broker, Some(wrong_pin));
    let client = BrokerClient::new(&s.config.key_broker).unwrap();
    let err = client
        .request_key(s.firmware.clone(), &digest, s.config.digest)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyReleaseError::Handshake(_)), "{err:?}");
    let chain = runtime::error_chain(&err);
    assert!(chain.contains("certificate"), "{chain}");
    // Nothing was attested to the impostor.
    assert!(broker.seen.lock().unwrap().is_empty());
    assert!(s.firmware.seen.lock().unwrap().is_empty());
    assert!(wait_until(5, || *broker.handshake_failures.lock().unwrap() >= 1).await);
}

#[tokio::test]
async fn a_wrong_or_tampered_blob_is_never_loaded_and_a_good_one_later_is() {
    let (Some(onnx), Some(other)) = (sample("mlp/model.onnx"), sample("mixed/model.onnx")) else {
        return;
    };
    let digest = ModelDigest::of(&onnx);
    let key = [0x33u8; 32];
    let good = seal(&onnx, &key, "mlp");
    let mut tampered = good.clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 0x01;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 16]);
    let wrong_model = seal(&other, &key, "mlp");
    let wrong_key = seal(&onnx, &[0x34; 32], "mlp");
    let queue = vec![
        wrong_model,
        tampered,
        truncated,
        padded,
        wrong_key,
        b"garbage".to_vec(),
        good,
    ];
    let attempts = queue.len();

    let broker = fake_broker(Decision::Grant, Some(key)).await;
    let host = fake_host(HashMap::from([(blob_path(&digest), queue)])).await;
    let s = setup(digest, &broker, None);
    let task = tokio::spawn(runtime::provision(
        s.enclave.clone(),
        BrokerClient::new(&s.config.key_broker).unwrap(),
        BlobService::parse(&host.url).unwrap(),
        FAST,
    ));
    assert!(wait_until(60, || s.enclave.is_ready()).await, "not ready");
    task.await.unwrap();
    assert_eq!(*host.requests.lock().unwrap(), attempts);
    // One key release: the key was kept across the host's bad answers.
    assert_eq!(broker.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn blob_checks_report_what_is_wrong() {
    let (Some(onnx), Some(other)) = (sample("mlp/model.onnx"), sample("mixed/model.onnx")) else {
        return;
    };
    let digest = ModelDigest::of(&onnx);
    let key = Arc::new(ModelKey::from_bytes(&[9; 32]));
    let wrong = seal(&other, &[9; 32], "other");
    let host = fake_host(HashMap::from([(blob_path(&digest), vec![wrong])])).await;
    let blobs = BlobService::parse(&host.url).unwrap();
    let err = blobs
        .fetch_and_open(&digest, key.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("sent the sealed model sha384:"),
        "{err}"
    );
    let err = blobs
        .fetch_and_open(&ModelDigest::from_bytes([0; 48]), key)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no blob for"), "{err}");
}
