//! End to end on the simulated platform, with the real binaries as separate processes on loopback:
//! the key broker (in this process, as the model owner runs it), `cloister-host`, `cloister-enclave`, and
//! the client library. Each scenario starts its own deployment in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloister_attestation::evidence::{Evidence, TLS_EXPORTER_LABEL};
use cloister_attestation::policy::ModelDigestPin;
use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_enclave::inference::{LoadedModel, NamedTensor};
use cloister_kserve::{InferRequest, InferTensor, TensorData};
use cloister_session::{AttestedSession, SessionError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const READY: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn magika() -> PathBuf {
    repo().join("models/sample/magika/model.onnx")
}

pub(crate) fn mixed() -> PathBuf {
    repo().join("models/sample/mixed/model.onnx")
}

pub(crate) fn mlp() -> PathBuf {
    repo().join("models/sample/mlp/model.onnx")
}

pub(crate) async fn deploy(
    dir: &Path,
    model: &Path,
    name: &str,
    tweak: impl FnOnce(&mut DeploymentOptions),
) -> Deployment {
    let mut options = DeploymentOptions::new(dir, model, name).expect("binaries next to the tests");
    tweak(&mut options);
    Deployment::start(&options)
        .await
        .expect("deployment starts")
}

/// A Magika request for a Python source file, and the same input for the in-process engine.
fn magika_input() -> (InferRequest, Vec<NamedTensor>) {
    let config = cloister_cli::magika::MagikaConfig::embedded().unwrap();
    let text = b"import os\nimport sys\n\ndef main():\n    for k, v in sorted(os.environ.items()):\n        print(k, '=', v)\n    return 0\n\nif __name__ == '__main__':\n    sys.exit(main())\n";
    let features = config.features(text);
    let [rows, cols] = config.input_shape();
    let request = InferRequest {
        inputs: vec![InferTensor::new(
            "bytes",
            vec![rows as u64, cols as u64],
            TensorData::Int32(features.clone()),
        )],
        ..InferRequest::default()
    };
    let engine = vec![NamedTensor::new(
        "bytes",
        vec![rows, cols],
        TensorData::Int32(features),
    )];
    (request, engine)
}

/// One row for the synthetic MLP (`x` f32 [N,16]).
pub(crate) fn mlp_input() -> InferRequest {
    InferRequest {
        inputs: vec![InferTensor::new(
            "x",
            vec![1, 16],
            TensorData::Fp32(vec![0.5; 16]),
        )],
        ..InferRequest::default()
    }
}

fn as_f32(data: &TensorData) -> Vec<f32> {
    match data {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("expected FP32, got {:?}", other.datatype()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_equals_in_process_tract_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &magika(), "magika", |_| {}).await;
    let mut session = d.wait_ready(READY).await.expect("ready");

    // The evidence says what the client pinned.
    let ev = session.evidence();
    assert_eq!(ev.report().report().measurement, d.measurement);
    assert!(ev.report().is_simulated());
    assert_eq!(ev.claims().model_digests.len(), 1);
    assert_eq!(&ev.claims().model_digests[0].0, d.model_digest.as_bytes());

    let meta = session.attested_model("magika").await.unwrap();
    assert_eq!(meta.inputs[0].name, "bytes");
    let (request, engine_input) = magika_input();
    let local = LoadedModel::load(&std::fs::read(magika()).unwrap())
        .unwrap()
        .run(engine_input)
        .unwrap();
    let TensorData::Fp32(expected) = &local[0].data else {
        panic!("engine output is not FP32")
    };
    for binary in [false, true] {
        let response = session.infer("magika", &request, binary).await.unwrap();
        let got = as_f32(response.outputs[0].data.as_ref().unwrap());
        let same_bits = got.len() == expected.len()
            && got
                .iter()
                .zip(expected.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same_bits,
            "binary={binary}: enclave output differs from in-process tract"
        );
    }
    let audit = std::fs::read_to_string(&d.audit_log).unwrap();
    assert_eq!(
        audit.lines().filter(|l| l.contains("\"granted\"")).count(),
        1,
        "{audit}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_measurement_in_owner_policy_releases_no_key_and_enclave_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &mlp(), "mlp", |o| {
        o.owner_measurement_override = Some([0x42; 48]);
    })
    .await;
    // The client's policy is right: it can attest, but the enclave never gets its key.
    let mut refused = false;
    for _ in 0..150 {
        let audit = std::fs::read_to_string(&d.audit_log).unwrap_or_default();
        if audit.contains("\"refused\"") {
            assert!(
                audit.contains("measurements"),
                "audit log must say why: {audit}"
            );
            assert!(
                audit.contains(&"42".repeat(48)),
                "expected value in the log: {audit}"
            );
            assert!(!audit.contains("\"granted\""));
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "the broker never refused");
    let mut session = d.session().await.expect("the client's own policy holds");
    assert!(
        !session.ready().await.unwrap(),
        "enclave must report not-ready"
    );
    let err = session.infer("mlp", &mlp_input(), false).await.unwrap_err();
    assert!(matches!(err, SessionError::Status { .. }), "{err}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_model_digest_in_client_policy_refuses_before_sending_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &mlp(), "mlp", |_| {}).await;
    d.wait_ready(READY).await.expect("ready");
    let trust = d
        .session_config_builder()
        .unwrap()
        .with_policy(|p| p.model_digests = Some([ModelDigestPin([7u8; 48])].into()))
        .build()
        .unwrap();
    let err = AttestedSession::connect(&d.endpoint, &trust)
        .await
        .expect_err("must refuse");
    let text = err.to_string();
    assert!(text.contains("model_digests"), "{text}");
    d.stop().await;
}

/// A "relay" that terminates the client's TLS with its own certificate and opens its own TLS session to
/// the enclave, forwarding plaintext: what a malicious host could do. The client must notice.
async fn tls_terminating_relay(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["cloister-enclave".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let client_config = cloister_proto::session_attestation::client_tls_config(None).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, connector, upstream) =
                (acceptor.clone(), connector.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut inbound) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let name = rustls::pki_types::ServerName::try_from("cloister-enclave").unwrap();
                let Ok(mut outbound) = connector.connect(name, up).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_terminating_relay_is_detected_by_the_exporter_binding() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &mlp(), "mlp", |_| {}).await;
    d.wait_ready(READY).await.expect("ready");
    let relay = tls_terminating_relay(d.endpoint.clone()).await;
    let trust = d.session_config().unwrap();
    let err = AttestedSession::connect(&relay, &trust)
        .await
        .expect_err("a re-originating relay must be detected");
    let text = err.to_string();
    assert!(text.contains("tls_exporter"), "{text}");
    // The direct path still works.
    AttestedSession::connect(&d.endpoint, &trust).await.unwrap();
    d.stop().await;
}

/// A fake enclave that answers every attestation request with the same recorded evidence.
async fn replaying_enclave(evidence: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["cloister-enclave".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            // Read the request head and body (small), then answer with the recorded evidence.
            let mut buf = vec![0u8; 4096];
            let _ = tls.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
                cloister_kserve::EVIDENCE_CONTENT_TYPE,
                evidence.len()
            );
            let _ = tls.write_all(head.as_bytes()).await;
            let _ = tls.write_all(&evidence).await;
            let _ = tls.flush().await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_evidence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &mlp(), "mlp", |_| {}).await;
    let mut session = d.wait_ready(READY).await.expect("ready");
    // Capture genuine evidence for a nonce of our choosing (as an eavesdropper on a past session could).
    let body = serde_json::json!({ "nonce": "11".repeat(32) }).to_string();
    let (status, evidence) = session
        .raw(
            hyper::Method::POST,
            "/v2/attestation",
            Some("application/json"),
            body.into(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let parsed = Evidence::from_bytes(&evidence).unwrap();
    assert_eq!(parsed.claims.nonce, [0x11; 32]);

    let fake = replaying_enclave(evidence.to_vec()).await;
    let trust = d.session_config().unwrap();
    let err = AttestedSession::connect(&fake, &trust)
        .await
        .expect_err("replayed evidence must be refused");
    let text = err.to_string();
    assert!(
        text.contains("claims.nonce") || text.contains("tls_exporter"),
        "{text}"
    );
    assert!(
        text.contains("claims.nonce"),
        "the nonce is checked first: {text}"
    );
    d.stop().await;
}

fn children_of(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .arg("-P")
        .arg(pid.to_string())
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_enclave_is_restarted_and_re_attests() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &mlp(), "mlp", |_| {}).await;
    let first = d.wait_ready(READY).await.expect("ready");
    let first_exporter_claim = first.evidence().claims().tls_exporter;
    drop(first);
    let host = d.host_pid().unwrap();
    let enclaves = children_of(host);
    assert_eq!(
        enclaves.len(),
        1,
        "one enclave child of the host: {enclaves:?}"
    );
    std::process::Command::new("kill")
        .arg("-KILL")
        .arg(enclaves[0].to_string())
        .status()
        .unwrap();
    // The host notices, restarts it; the new enclave gets its key again and serves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = d
        .wait_ready(READY)
        .await
        .expect("ready again after the restart");
    assert_ne!(again.evidence().claims().tls_exporter, first_exporter_claim);
    let restarted = children_of(host);
    assert_eq!(restarted.len(), 1);
    assert_ne!(restarted[0], enclaves[0], "a new enclave process");
    again.infer("mlp", &mlp_input(), false).await.unwrap();
    let audit = std::fs::read_to_string(&d.audit_log).unwrap();
    assert_eq!(
        audit.lines().filter(|l| l.contains("\"granted\"")).count(),
        2,
        "{audit}"
    );
    d.stop().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_sees_no_key_no_weights_no_inputs_no_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("host-record.bin");
    let d = deploy(dir.path(), &magika(), "magika", |o| {
        o.record = Some(record.clone())
    })
    .await;
    let mut session = d.wait_ready(READY).await.expect("ready");
    let (request, _) = magika_input();
    let mut outputs = Vec::new();
    for binary in [false, true] {
        let response = session.infer("magika", &request, binary).await.unwrap();
        outputs.push(as_f32(response.outputs[0].data.as_ref().unwrap()));
    }
    drop(session);
    let key = cloister_models::Keystore::open(&d.keystore)
        .unwrap()
        .get(&d.model_digest)
        .unwrap();
    let key_bytes = key.expose_secret().to_vec();
    drop(key);
    let sealed = std::fs::read(&d.sealed_model).unwrap();
    d.stop().await;

    let seen = std::fs::read(&record).unwrap();
    // Positive control: the recording holds what the host handled (the sealed blob, TLS records).
    assert!(
        contains(&seen, &sealed[..64]),
        "the recording must contain the sealed blob"
    );
    assert!(seen.len() > sealed.len());

    assert!(
        !contains(&seen, &key_bytes),
        "the model key crossed the host"
    );

    // No 32-byte window of the plaintext model: index the model's windows by their first 8 bytes.
    let model = std::fs::read(magika()).unwrap();
    let mut index: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    for (i, w) in model.windows(32).enumerate() {
        let head = u64::from_le_bytes(w[..8].try_into().unwrap());
        index.entry(head).or_default().push(i);
    }
    for w in seen.windows(32) {
        let head = u64::from_le_bytes(w[..8].try_into().unwrap());
        if let Some(positions) = index.get(&head) {
            for &p in positions {
                assert_ne!(
                    &model[p..p + 32],
                    w,
                    "32 bytes of the plaintext model at offset {p} crossed the host"
                );
            }
        }
    }

    // Inputs and outputs, as JSON text and as raw little-endian bytes.
    let TensorData::Int32(features) = request.inputs[0].data.clone().unwrap() else {
        panic!()
    };
    let feature_json = serde_json::to_string(&features[..16]).unwrap();
    let feature_json = feature_json.trim_start_matches('[').trim_end_matches(']');
    assert!(
        !contains(&seen, feature_json.as_bytes()),
        "input (JSON) crossed the host"
    );
    let feature_le: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    for chunk in feature_le.chunks(32).filter(|c| c.len() == 32) {
        assert!(!contains(&seen, chunk), "input (binary) crossed the host");
    }
    for out in &outputs {
        let le: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        for chunk in le.chunks(32).filter(|c| c.len() == 32) {
            assert!(!contains(&seen, chunk), "output (binary) crossed the host");
        }
        let json = serde_json::to_string(&out[..8]).unwrap();
        assert!(
            !contains(
                &seen,
                json.trim_start_matches('[')
                    .trim_end_matches(']')
                    .as_bytes()
            ),
            "output (JSON) crossed the host"
        );
    }
}

/// The label the docs state, outside the IANA registry and therefore `EXPERIMENTAL-` (RFC 5705 §4).
#[test]
fn exporter_label_is_the_documented_one() {
    assert_eq!(TLS_EXPORTER_LABEL, b"EXPERIMENTAL-cloister-attestation");
    for doc in ["docs/evidence.md", "docs/architecture.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        assert!(text.contains("EXPERIMENTAL-cloister-attestation"), "{doc}");
        assert!(!text.contains("EXPORTER-cloister-attestation"), "{doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_does_not_outlive_a_killed_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &mlp(), "mlp", |_| {}).await;
    d.wait_ready(READY).await.expect("ready");
    let host = d.host_pid().unwrap();
    let enclaves = children_of(host);
    assert_eq!(enclaves.len(), 1);
    std::process::Command::new("kill")
        .arg("-KILL")
        .arg(host.to_string())
        .status()
        .unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", enclaves[0]));
    let mut gone = false;
    for _ in 0..100 {
        // A zombie still has /proc/PID until reaped by init; its state is 'Z'.
        let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the enclave kept running after its host was killed");
}

/// `cloister infer` as a user runs it: the CLI contract (flags, exit codes, `--json`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloister_infer_cli_attests_then_infers_and_refuses_on_a_wrong_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path(), &magika(), "magika", |_| {}).await;
    d.wait_ready(READY).await.expect("ready");
    let cloister = cloister_devnet::sibling_bin_dir().unwrap().join("cloister");
    let run = |args: Vec<String>| {
        let cloister = cloister.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(cloister)
                    .args(args)
                    .output()
                    .expect("run cloister")
            })
            .await
            .unwrap()
        }
    };
    let base = |policy: &Path| {
        vec![
            "infer".to_string(),
            "--endpoint".into(),
            d.endpoint.clone(),
            "--policy".into(),
            policy.display().to_string(),
            "--model".into(),
            "magika".into(),
        ]
    };

    // --file: features computed here, the label printed.
    let py = dir.path().join("hello.py");
    std::fs::write(
        &py,
        "import sys\n\n\ndef main():\n    for arg in sys.argv[1:]:\n        print(arg.upper())\n    return 0\n\n\nif __name__ == '__main__':\n    sys.exit(main())\n",
    )
    .unwrap();
    let mut args = base(&d.client_policy);
    args.extend(["--file".into(), py.display().to_string()]);
    let out = run(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("attested:"), "{stdout}");
    assert!(stdout.contains(": python"), "{stdout}");

    // --input --json: the v2 response body on stdout, the claims on stderr.
    let (request, _) = magika_input();
    let input = dir.path().join("request.json");
    std::fs::write(&input, serde_json::to_vec(&request).unwrap()).unwrap();
    let mut args = base(&d.client_policy);
    args.extend([
        "--input".into(),
        input.display().to_string(),
        "--json".into(),
    ]);
    let out = run(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(body["model_name"], "magika");
    assert_eq!(body["outputs"][0]["shape"], serde_json::json!([1, 214]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("measurement:"));

    // A policy pinning another measurement: exit 1, the reason, and no output.
    let wrong = dir.path().join("wrong-policy.toml");
    let text = std::fs::read_to_string(&d.client_policy).unwrap();
    let pinned = hex::encode(d.measurement);
    std::fs::write(&wrong, text.replace(&pinned, &"00".repeat(48))).unwrap();
    let mut args = base(&wrong);
    args.extend([
        "--input".into(),
        input.display().to_string(),
        "--json".into(),
    ]);
    let out = run(args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing printed: nothing was sent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("measurements"));

    // Usage and I/O errors: exit 2.
    let mut args = base(&d.client_policy);
    args.extend(["--input".into(), "/nonexistent.json".into()]);
    assert_eq!(run(args).await.status.code(), Some(2));
    d.stop().await;
}
