//! Kubernetes with Confidential Containers, on the simulated platform: `cloister initdata` (document,
//! annotation, HOST_DATA computed independently from the CoCo rule), an enclave that takes its configuration
//! from initdata and refuses a document whose digest is not its HOST_DATA, a deployment whose policies pin
//! `host_data`, and the manifests rendered from `deploy/kubernetes/values.toml` validated by
//! `kubernetes-validate` (PyPI; `$CLOISTER_PYTHON` must import it: `.ci/run` installs it).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use cloister_attestation::policy::WorkloadIdentity;
use cloister_session::{AttestedSession, SessionError};
use ring::digest::{digest, SHA256, SHA384};
use serde_json::Value;

use crate::e2e::{deploy, mlp, mlp_input, READY};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin(name: &str) -> PathBuf {
    cloister_devnet::sibling_bin_dir().unwrap().join(name)
}

/// HOST_DATA by the CoCo rule, written out again here: the digest of the document's bytes with its
/// algorithm, the first 32 bytes (zero-padded if shorter).
fn host_data_by_the_spec(document: &[u8], algorithm: &'static ring::digest::Algorithm) -> String {
    let d = digest(algorithm, document);
    let mut out = [0u8; 32];
    let n = d.as_ref().len().min(32);
    out[..n].copy_from_slice(&d.as_ref()[..n]);
    hex::encode(out)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn initdata(config: &Path, out: &Path, algorithm: &str) -> Value {
    let run = Command::new(bin("cloister"))
        .args(["initdata", "--enclave-config"])
        .arg(config)
        .args(["--algorithm", algorithm, "--out"])
        .arg(out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Without an agent policy the image is not bound: said every time.
    assert!(String::from_utf8_lossy(&run.stderr).contains("WARNING: no Kata agent policy"));
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn initdata_document_annotation_and_host_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    let text = "firmware = \"configfs-tsm\"\n\n[key_broker]\naddress = \"broker:8443\"\n";
    std::fs::write(&config, text).unwrap();
    for (alg, ring_alg) in [("sha384", &SHA384), ("sha256", &SHA256)] {
        let out = dir.path().join(format!("initdata-{alg}.toml"));
        let json = initdata(&config, &out, alg);
        let document = std::fs::read(&out).unwrap();
        assert_eq!(
            json["host_data"],
            host_data_by_the_spec(&document, ring_alg)
        );
        assert_eq!(
            json["annotation_key"],
            "io.katacontainers.config.hypervisor.cc_init_data"
        );
        // The annotation is base64(gzip(document)), byte for byte.
        let annotation = base64::engine::general_purpose::STANDARD
            .decode(json["annotation"].as_str().unwrap())
            .unwrap();
        assert_eq!(gunzip(&annotation), document);
        // A CoCo initdata document carrying the configuration unchanged.
        let parsed: toml_like::Doc = toml_like::parse(&document);
        assert_eq!(parsed.version, "0.1.0");
        assert_eq!(parsed.algorithm, alg);
        assert_eq!(parsed.config, text);
    }
    // With an agent policy: carried as "policy.rego", no warning.
    let rego = dir.path().join("policy.rego");
    std::fs::write(
        &rego,
        "package agent_policy\ndefault ExecProcessRequest := false\n",
    )
    .unwrap();
    let with_policy = Command::new(bin("cloister"))
        .args(["initdata", "--enclave-config"])
        .arg(&config)
        .arg("--policy-rego")
        .arg(&rego)
        .arg("--out")
        .arg(dir.path().join("with-policy.toml"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(with_policy.status.success());
    assert!(!String::from_utf8_lossy(&with_policy.stderr).contains("WARNING"));
    let json: Value = serde_json::from_slice(&with_policy.stdout).unwrap();
    assert_eq!(
        json["data_keys"],
        serde_json::json!(["cloister-enclave.toml", "policy.rego"])
    );
    // An existing output is never overwritten (exit 2), and a configuration that is not TOML is refused.
    let again = Command::new(bin("cloister"))
        .args(["initdata", "--enclave-config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("initdata-sha384.toml"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    std::fs::write(&config, "not = [toml").unwrap();
    let bad = Command::new(bin("cloister"))
        .args(["initdata", "--enclave-config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("x.toml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not TOML"));
}

/// The committed example document: its HOST_DATA by the spec, by the library, and as written down here.
#[test]
fn committed_initdata_host_data() {
    let path = repo().join("deploy/kubernetes/example/initdata.toml");
    let document = std::fs::read(&path).unwrap();
    let by_spec = host_data_by_the_spec(&document, &SHA384);
    let parsed = cloister_attestation::initdata::InitData::parse(&document).unwrap();
    let by_library = parsed.snp_host_data();
    // The configuration it carries is one the enclave accepts, and the one committed beside it.
    let config = parsed.entry("cloister-enclave.toml").unwrap();
    cloister_enclave::config::Config::from_bytes(config.as_bytes()).unwrap();
    assert_eq!(
        config,
        std::fs::read_to_string(repo().join("deploy/kubernetes/example/enclave.toml")).unwrap()
    );
    assert_eq!(by_spec, hex::encode(by_library));
    let written_down =
        std::fs::read_to_string(repo().join("deploy/kubernetes/example/host_data")).unwrap();
    assert_eq!(
        written_down.trim(),
        by_spec,
        "regenerate deploy/kubernetes/example/ (docs/kubernetes.md)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_configured_by_initdata_serves_and_refuses_another_document() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(&dir.path().join("run"), &mlp(), "mlp", |o| {
        o.initdata = true
    })
    .await;
    let (document, host_data) = d.initdata.clone().unwrap();
    // The client's policy pins HOST_DATA; the enclave serves.
    let policy = std::fs::read_to_string(&d.client_policy).unwrap();
    assert!(policy.contains(&format!("host_data = \"{}\"", hex::encode(host_data))));
    let mut session = d.wait_ready(READY).await.unwrap();
    let reported = session.evidence().report().report().host_data;
    assert_eq!(reported, host_data);
    session.infer("mlp", &mlp_input(), false).await.unwrap();
    drop(session);

    // The same document under another HOST_DATA, and a changed document under the right one: refused.
    let changed = dir.path().join("changed.toml");
    let mut bytes = std::fs::read(&document).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&changed, &bytes).unwrap();
    for (doc, host_data) in [
        (document.as_path(), "00".repeat(32)),
        (changed.as_path(), hex::encode(host_data)),
    ] {
        let run = Command::new(bin("cloister-enclave"))
            .arg("--config-from-initdata")
            .arg(doc)
            .args(["--listen", "127.0.0.1:0", "--blobs", "http://127.0.0.1:9"])
            .env("CLOISTER_SIM_HOST_DATA", &host_data)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("does not match this guest's HOST_DATA"),
            "{stderr}"
        );
    }
    // A session whose policy pins another HOST_DATA is refused.
    let other = dir.path().join("other-policy.toml");
    std::fs::write(
        &other,
        policy.replace(&hex::encode(host_data), &"11".repeat(32)),
    )
    .unwrap();
    let trust = cloister_session::SessionConfig::builder_from_file(&other)
        .unwrap()
        .build()
        .unwrap();
    let Err(e) = AttestedSession::connect(&d.endpoint, &trust).await else {
        panic!("a policy pinning another HOST_DATA was satisfied");
    };
    let e = e.to_string();
    assert!(e.contains("host_data"), "{e}");

    // Issue 21, item 1: the pod VM's measurement is shared by every pod of its runtime class. A policy that
    // pins only it is refused before connecting under `workload_identity = "initdata"`, and under
    // `"measurement"` the report's non-zero HOST_DATA (the launcher bound data there) must be pinned.
    let Err(e) = d
        .session_config_builder()
        .unwrap()
        .with_policy(|p| p.host_data = None)
        .build()
    else {
        panic!("the pod VM's measurement alone was accepted");
    };
    assert!(matches!(e, SessionError::NoWorkloadPin(_)), "{e}");
    assert!(e.to_string().contains("pin host_data"), "{e}");
    let trust = d
        .session_config_builder()
        .unwrap()
        .with_policy(|p| {
            p.host_data = None;
            p.workload_identity = Some(WorkloadIdentity::Measurement);
        })
        .build()
        .unwrap();
    let Err(e) = AttestedSession::connect(&d.endpoint, &trust).await else {
        panic!("a measurement policy accepted a report whose HOST_DATA it does not pin");
    };
    let e = e.to_string();
    assert!(e.contains("host_data: expected a host_data pin"), "{e}");
    d.stop().await;
}

/// As in a pod: no `cloister-host`. The enclave reads its initdata document, checks HOST_DATA, gets its key
/// from the broker, and fetches its sealed model from a plain web server (Python's http.server) holding it
/// under `store/blobs/<digest>`; a client attests it directly and infers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_without_cloister_host_fetches_from_a_plain_web_server() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(&dir.path().join("run"), &mlp(), "mlp", |o| {
        o.initdata = true
    })
    .await;
    let (document, host_data) = d.initdata.clone().unwrap();
    let blobs = dir.path().join("www/store/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::copy(&d.sealed_model, blobs.join(d.model_digest.to_string())).unwrap();

    let mut www = tokio::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path().join("www"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (http.server)");
    let mut lines = BufReader::new(www.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .unwrap_or_else(|| panic!("http.server said {line:?}"))
        .to_owned();

    let mut enclave = tokio::process::Command::new(bin("cloister-enclave"))
        .arg("--config-from-initdata")
        .arg(&document)
        .args(["--listen", "127.0.0.1:0", "--blobs"])
        .arg(format!("http://127.0.0.1:{port}/store"))
        .env("CLOISTER_SIM_HOST_DATA", hex::encode(host_data))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(enclave.stdout.take().unwrap()).lines();
    let announce = out.next_line().await.unwrap().unwrap();
    let addr = announce
        .strip_prefix("cloister-enclave: listening on ")
        .unwrap_or_else(|| panic!("enclave said {announce:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });

    let trust = d.session_config().unwrap();
    let mut session = crate::fleet::ready_session(&addr, &trust).await;
    session.infer("mlp", &mlp_input(), false).await.unwrap();
    drop(session);
    let _ = enclave.kill().await;
    let _ = www.kill().await;
    d.stop().await;
}

/// The manifests rendered from the committed values validate (`deploy/kubernetes/check.py`).
#[test]
fn rendered_manifests_validate() {
    let Some(python) = crate::python_importing(
        "kubernetes_validate, yaml",
        "rendered_manifests_validate",
        "kubernetes-validate pyyaml",
    ) else {
        return;
    };
    for extra in [&[][..], &["--self-test"][..]] {
        let run = Command::new(&python)
            .arg(repo().join("deploy/kubernetes/check.py"))
            .args(extra)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "check.py {extra:?}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// Just enough TOML reading for the checks above, independent of the crates under test.
mod toml_like {
    pub(super) struct Doc {
        pub(super) version: String,
        pub(super) algorithm: String,
        pub(super) config: String,
    }

    pub(super) fn parse(bytes: &[u8]) -> Doc {
        let v: toml::Table = toml::from_str(std::str::from_utf8(bytes).unwrap()).unwrap();
        Doc {
            version: v["version"].as_str().unwrap().to_owned(),
            algorithm: v["algorithm"].as_str().unwrap().to_owned(),
            config: v["data"]["cloister-enclave.toml"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }
}
