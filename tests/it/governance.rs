//! Issue 13 end to end on the simulated platform, through the CLI where a user would use it: signed
//! receipts verified offline (and their tampering caught), client certificates and budgets, output
//! hardening, the enclave's hash-chained audit log (and its tampering caught), and metrics (checked with
//! `promtool` when it is installed; CI installs it).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cloister_kserve::TensorData;
use cloister_session::{AttestedSession, ClientIdentity, SessionConfig, SessionError};
use serde_json::Value;

use crate::e2e::{deploy, mlp, mlp_input, READY};

/// A self-signed client certificate and key (PEM files), and the SHA-256 pin of the certificate.
fn identity(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{name}.client")])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let pin = hex::encode(ring::digest::digest(&ring::digest::SHA256, cert.der()));
    (c, k, pin)
}

fn cloister() -> PathBuf {
    cloister_devnet::sibling_bin_dir().unwrap().join("cloister")
}

fn run(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let o = Command::new(cloister()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn run_s(args: &[&str]) -> (i32, String, String) {
    let a = os(args);
    let refs: Vec<&std::ffi::OsStr> = a.iter().map(OsString::as_os_str).collect();
    run(&refs)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn promtool_check(text: &str, what: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        let required = std::env::var("CLOISTER_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "promtool is not installed; CLOISTER_REQUIRE_ALL_TESTS=1"
        );
        eprintln!("\n*** SKIPPED promtool check of the {what} metrics: promtool is not installed (apt-get install prometheus). ***\n");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics ({what}): {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_budgets_client_certificates_hardening_audit_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    std::fs::create_dir_all(&work).unwrap();
    let (a_crt, a_key, a_pin) = identity(dir.path(), "a");
    let (b_crt, b_key, b_pin) = identity(dir.path(), "b");
    let (c_crt, c_key, _) = identity(dir.path(), "c");
    let audit = dir.path().join("audit.jsonl");
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let id_a = Arc::new(ClientIdentity::from_pem_files(&a_crt, &a_key).unwrap());
    let d = deploy(&work, &mlp(), "mlp", |o| {
        o.enclave_config_extra = format!(
            "[audit]\ncheckpoint_every = 3\n\n[clients]\nrequire_certificate = true\n\
             certificate_sha256 = [\"{a_pin}\", \"{b_pin}\"]\n\n[budgets.per_client]\nrequests_per_minute = 20\n"
        );
        o.model_config_extra = "top_k = 2\nround_decimals = 2\n".into();
        o.host_args = vec![
            "--audit-log".into(),
            audit.clone().into(),
            "--metrics".into(),
            metrics_addr.clone().into(),
        ];
        o.client_identity = Some(Arc::clone(&id_a));
    })
    .await;
    d.wait_ready(READY).await.expect("ready");
    let policy = p(&d.client_policy).to_owned();
    let endpoint = d.endpoint.clone();

    // --- Receipts, through the CLI.
    let req = dir.path().join("req.json");
    std::fs::write(&req, serde_json::to_vec(&mlp_input()).unwrap()).unwrap();
    let infer = |receipt: &Path| {
        run_s(&[
            "infer",
            "--endpoint",
            &endpoint,
            "--policy",
            &policy,
            "--model",
            "mlp",
            "--input",
            p(&req),
            "--json",
            "--receipt",
            p(receipt),
            "--client-cert",
            p(&a_crt),
            "--client-key",
            p(&a_key),
        ])
    };
    let (r1, r2) = (dir.path().join("r1.json"), dir.path().join("r2.json"));
    let (code, stdout, err) = infer(&r1);
    assert_eq!(code, 0, "{err}");
    let resp = dir.path().join("resp.json");
    std::fs::write(&resp, &stdout).unwrap();
    let verify = |receipt: &Path, request: &Path, response: &Path| {
        run_s(&[
            "receipt",
            "verify",
            "--receipt",
            p(receipt),
            "--policy",
            &policy,
            "--request",
            p(request),
            "--response",
            p(response),
            "--json",
        ])
    };
    let (code, out, err) = verify(&r1, &req, &resp);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(
        (v["request_checked"].clone(), v["response_checked"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(v["seq"], 1);
    assert_eq!(
        v["model_signer"],
        Value::Null,
        "an unsigned model names no signer"
    );

    // Output hardening: at most two values kept per row, rounded to two decimals.
    let r: Value = serde_json::from_str(&stdout).unwrap();
    let data: Vec<f64> = r["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let row = *r["outputs"][0]["shape"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_u64()
        .as_ref()
        .unwrap() as usize;
    for chunk in data.chunks(row) {
        assert!(
            chunk.iter().filter(|x| **x != 0.0).count() <= 2,
            "{chunk:?}"
        );
        for x in chunk {
            assert!(((x * 100.0).round() - x * 100.0).abs() < 1e-6, "{x}");
        }
    }

    // Another response, another request, another session's evidence, a damaged receipt: each refused,
    // the field named.
    let mut changed: Value = r.clone();
    changed["outputs"][0]["data"][0] = 0.99.into();
    let resp2 = dir.path().join("resp2.json");
    std::fs::write(&resp2, serde_json::to_vec(&changed).unwrap()).unwrap();
    let (code, out, _) = verify(&r1, &req, &resp2);
    assert_eq!(code, 1);
    assert!(out.contains("receipt.response"), "{out}");
    let mut other_req = mlp_input();
    other_req.inputs[0].data = Some(TensorData::Fp32(vec![0.25; 16]));
    let req2 = dir.path().join("req2.json");
    std::fs::write(&req2, serde_json::to_vec(&other_req).unwrap()).unwrap();
    let (code, out, _) = verify(&r1, &req2, &resp);
    assert_eq!(code, 1);
    assert!(out.contains("receipt.request"), "{out}");
    assert_eq!(infer(&r2).0, 0);
    let mut mixed: Value = serde_json::from_slice(&std::fs::read(&r1).unwrap()).unwrap();
    let second: Value = serde_json::from_slice(&std::fs::read(&r2).unwrap()).unwrap();
    mixed["evidence"] = second["evidence"].clone();
    let r3 = dir.path().join("r3.json");
    std::fs::write(&r3, serde_json::to_vec(&mixed).unwrap()).unwrap();
    let (code, out, _) = verify(&r3, &req, &resp);
    assert_eq!(code, 1);
    assert!(out.contains("receipt.evidence"), "{out}");
    let mut damaged: Value = serde_json::from_slice(&std::fs::read(&r1).unwrap()).unwrap();
    let s = damaged["receipt"].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", &s[..40], if &s[40..41] == "A" { "B" } else { "A" }) + &s[41..];
    damaged["receipt"] = flipped.into();
    let r4 = dir.path().join("r4.json");
    std::fs::write(&r4, serde_json::to_vec(&damaged).unwrap()).unwrap();
    let (code, out, _) = verify(&r4, &req, &resp);
    assert_eq!(code, 1, "{out}");

    // Issue 21, item 2: a receipt is only as good as the policy its evidence is checked against. Under a
    // policy that pins no workload, any code on a genuine AMD platform could attest a key and sign a
    // receipt for a made-up answer: `receipt verify` refuses such a policy (it verified before).
    let unpinned = dir.path().join("unpinned-policy.toml");
    std::fs::write(
        &unpinned,
        format!(
            "simulated_root = \"{}\"\n",
            work.join("sim/certs/ark.pem").display()
        ),
    )
    .unwrap();
    let (code, out, err) = run_s(&[
        "receipt",
        "verify",
        "--receipt",
        p(&r1),
        "--policy",
        p(&unpinned),
        "--json",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("workload_identity: not set"), "{out}");

    // --- Client certificates: none, or one not pinned, cannot connect.
    let anonymous = SessionConfig::builder_from_file(&d.client_policy)
        .unwrap()
        .build()
        .unwrap();
    assert!(AttestedSession::connect(&d.endpoint, &anonymous)
        .await
        .is_err());
    let stranger = SessionConfig::builder_from_file(&d.client_policy)
        .unwrap()
        .with_client_identity(Arc::new(
            ClientIdentity::from_pem_files(&c_crt, &c_key).unwrap(),
        ))
        .build()
        .unwrap();
    assert!(AttestedSession::connect(&d.endpoint, &stranger)
        .await
        .is_err());

    // --- Budgets: client A runs out (20 a minute), gets 429 with Retry-After, and is served again after it;
    // client B is not affected.
    let mut a = d.session().await.unwrap();
    a.attested_model("mlp").await.unwrap();
    let mut refused = None;
    for _ in 0..25 {
        match a.infer_attested("mlp", &mlp_input(), false).await {
            Ok(_) => {}
            Err(SessionError::Status { status, message }) => {
                assert_eq!(status.as_u16(), 429, "{message}");
                refused = Some(message);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let message = refused.expect("the budget runs out");
    assert!(message.contains("requests_per_minute"), "{message}");
    let b_trust = SessionConfig::builder_from_file(&d.client_policy)
        .unwrap()
        .with_client_identity(Arc::new(
            ClientIdentity::from_pem_files(&b_crt, &b_key).unwrap(),
        ))
        .build()
        .unwrap();
    let mut b = AttestedSession::connect(&d.endpoint, &b_trust)
        .await
        .unwrap();
    b.infer("mlp", &mlp_input(), false).await.unwrap();
    let wait: u64 = message
        .split("retry after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    a.infer_attested("mlp", &mlp_input(), false).await.unwrap();

    // --- Metrics: counts that moved, in a format promtool accepts.
    let (status, body) = a
        .raw(hyper::Method::GET, "/metrics", None, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let enclave_metrics = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        enclave_metrics.contains("cloister_enclave_requests_total{model=\"mlp\",status=\"200\"}"),
        "{enclave_metrics}"
    );
    assert!(
        enclave_metrics.contains("status=\"429\""),
        "{enclave_metrics}"
    );
    assert!(
        enclave_metrics.contains("cloister_enclave_budget_rejections_total 1"),
        "{enclave_metrics}"
    );
    promtool_check(&enclave_metrics, "enclave");
    let host_metrics = http_get(&metrics_addr, "/metrics").await;
    assert!(
        host_metrics.contains("cloister_host_enclave_up 1"),
        "{host_metrics}"
    );
    assert!(
        host_metrics.contains("cloister_host_relay_connections_total{outcome=\"accepted\"}"),
        "{host_metrics}"
    );
    assert!(
        host_metrics.contains("cloister_host_blob_requests_total{status=\"200\"}"),
        "{host_metrics}"
    );
    promtool_check(&host_metrics, "host");
    drop((a, b));

    // --- The audit log: sealed at shutdown, verified; then each kind of tampering is found.
    d.stop().await;
    let sim_root = work.join("sim/certs/ark.pem");
    let audit_verify = |log: &Path| {
        run_s(&[
            "audit",
            "verify",
            "--log",
            p(log),
            "--evidence",
            p(&r1),
            "--policy",
            &policy,
            "--sim-root",
            p(&sim_root),
            "--json",
        ])
    };
    // Issue 21, item 2: no default policy (it was the baseline, which pins no workload), and an unpinned
    // one is refused, as for receipts.
    for policy_args in [&[][..], &["--policy", p(&unpinned)][..]] {
        let mut args = vec![
            "audit",
            "verify",
            "--log",
            p(&audit),
            "--evidence",
            p(&r1),
            "--sim-root",
            p(&sim_root),
            "--json",
        ];
        args.extend_from_slice(policy_args);
        let (code, out, err) = run_s(&args);
        assert_eq!(code, 2, "{out}{err}");
        assert!(out.contains("policy"), "{out}");
    }
    let (code, out, err) = audit_verify(&audit);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stopped"], true, "{out}");
    assert!(v["requests"].as_u64().unwrap() >= 20, "{out}");
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text.contains("\"outcome\":\"refused:429\""),
        "the budget refusal is audited"
    );
    assert!(
        text.contains(&format!("sha256:{a_pin}")),
        "the client is named"
    );
    assert!(!text.contains("0.5"), "no inputs in the audit log");
    let lines: Vec<&str> = text.lines().collect();
    let tampered = |name: &str, lines: Vec<String>| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (code, out, _) = audit_verify(&path);
        assert_eq!(code, 1, "{name}: {out}");
        out
    };
    let own: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let mut dropped = own.clone();
    dropped.remove(4);
    assert!(tampered("dropped", dropped).contains("line"));
    let mut reordered = own.clone();
    reordered.swap(5, 6);
    assert!(tampered("reordered", reordered).contains("line"));
    let mut edited = own.clone();
    edited[2] = edited[2]
        .replace("\"anonymous\"", "\"sha256:00\"")
        .replace(&a_pin, &b_pin);
    assert_ne!(edited[2], own[2]);
    assert!(tampered("edited", edited).contains("line"));
    let first_checkpoint = own
        .iter()
        .position(|l| l.contains("\"checkpoint\""))
        .unwrap();
    let cut: Vec<String> = own[..first_checkpoint + 2].to_vec();
    assert!(tampered("cut", cut).contains("unsigned tail"));
}

/// Issue 21, item 5: client A's certificate is pinned, its budget is 2 a minute. Over budget, it used to drop
/// its certificate and go on as `anonymous` (a fresh account): certificates are pinned, `require_certificate`
/// is not set. Now a connection without a certificate is refused in the handshake unless the configuration
/// says `allow_anonymous = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_over_budget_cannot_go_on_anonymously() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    std::fs::create_dir_all(&work).unwrap();
    let (a_crt, a_key, a_pin) = identity(dir.path(), "a");
    let id_a = Arc::new(ClientIdentity::from_pem_files(&a_crt, &a_key).unwrap());
    let d = deploy(&work, &mlp(), "mlp", |o| {
        o.enclave_config_extra = format!(
            "[clients]\ncertificate_sha256 = [\"{a_pin}\"]\n\n\
             [budgets.per_client]\nrequests_per_minute = 2\n"
        );
        o.client_identity = Some(Arc::clone(&id_a));
    })
    .await;
    let mut a = d.wait_ready(READY).await.expect("ready");
    let mut refused = false;
    for _ in 0..4 {
        match a.infer("mlp", &mlp_input(), false).await {
            Ok(_) => {}
            Err(SessionError::Status { status, .. }) if status.as_u16() == 429 => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused, "client A's budget runs out");
    let anonymous = SessionConfig::builder_from_file(&d.client_policy)
        .unwrap()
        .build()
        .unwrap();
    let Err(e) = AttestedSession::connect(&d.endpoint, &anonymous).await else {
        panic!("a client without a certificate was served beside pinned ones");
    };
    assert!(!matches!(e, SessionError::Status { .. }), "{e}");
    d.stop().await;
}

/// The `cloister-enclave` child of the host (the simulated backend), by its parent's pid.
fn enclave_pid(host_pid: u32) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &host_pid.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("cloister-encl"))
        })
}

/// Kills the enclave (SIGKILL: no last commit, no signed stop) and waits for the host's supervisor to
/// start another; returns its pid.
async fn kill_enclave(host_pid: u32) -> u32 {
    let old = enclave_pid(host_pid).expect("the enclave runs");
    assert!(Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap()
        .success());
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(new) = enclave_pid(host_pid).filter(|&p| p != old) {
            return new;
        }
    }
    panic!("the host did not restart the enclave");
}

/// Issue 21, item 4: the host kills the enclave to reset the budgets. Client A has used its day (3
/// requests); the enclave commits its sealed state every second (to the host, anchored at the broker); a
/// SIGKILL and a restart later, A is still over budget (before: a fresh day). Then the host hands the
/// restarted enclave an older state blob than the broker anchored: the enclave does not serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_survive_an_enclave_restart_and_an_older_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    std::fs::create_dir_all(&work).unwrap();
    let d = deploy(&work, &mlp(), "mlp", |o| {
        o.enclave_config_extra =
            "[budgets.per_client]\nrequests_per_day = 3\n\n[state]\ncommit_every_secs = 1\n".into();
    })
    .await;
    let mut a = d.wait_ready(READY).await.expect("ready");
    // Spread over commit intervals, so that the host holds several versions.
    for _ in 0..3 {
        a.infer("mlp", &mlp_input(), false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let over = |e: SessionError| match e {
        SessionError::Status { status, message } if status.as_u16() == 429 => message,
        other => panic!("expected 429, got {other}"),
    };
    let message = over(a.infer("mlp", &mlp_input(), false).await.unwrap_err());
    assert!(message.contains("requests_per_day (3)"), "{message}");
    drop(a);
    // Committed within a second or two: versions at the host, the anchor at the broker.
    let store = work.join("host/state/default");
    let versions = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&store)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|x| x == "sealed"));
        v.sort();
        v
    };
    for _ in 0..50 {
        if versions().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = versions();
    assert!(stored.len() >= 3, "{stored:?}");
    // The blobs are ciphertext: no client id in them.
    for path in &stored {
        let bytes = std::fs::read(path).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("anonymous"));
    }

    let host = d.host_pid().unwrap();
    kill_enclave(host).await;
    let mut a = d.wait_ready(READY).await.expect("ready after the restart");
    let message = over(a.infer("mlp", &mlp_input(), false).await.unwrap_err());
    assert!(message.contains("requests_per_day (3)"), "{message}");
    let broker_log = std::fs::read_to_string(&d.audit_log).unwrap();
    assert!(
        broker_log.contains("\"decision\":\"committed\""),
        "{broker_log}"
    );
    assert!(broker_log.contains("open default at v"), "{broker_log}");
    drop(a);

    // The host rolls back: the latest blob replaced by the first one it stored. The restarted enclave's
    // anchor names another digest: it refuses to serve rather than forget what was spent.
    let stored = versions();
    let (first, latest) = (&stored[0], stored.last().unwrap());
    std::fs::copy(first, latest).unwrap();
    kill_enclave(host).await;
    let err = d
        .wait_ready(Duration::from_secs(6))
        .await
        .expect_err("an enclave fed an older state must not become ready");
    let text = err.to_string();
    assert!(!text.is_empty());
    d.stop().await;
}

/// Issue 21, item 6: every refused request used to be an audit line of its own (one client: ~7,000 lines a
/// second), and `/metrics` and `/v2/attestation` were neither budgeted nor counted. Now a refusal is counted
/// and written in a tally line per client, endpoint and outcome and interval; the control endpoints have
/// their own budgets and are tallied too. 200 requests against a budget of 2 leave 2 request lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_control_calls_are_tallied_not_logged_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    std::fs::create_dir_all(&work).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let d = deploy(&work, &mlp(), "mlp", |o| {
        o.enclave_config_extra = "[audit]\ntally_every_secs = 1\n\n[budgets.per_client]\n\
                                  requests_per_minute = 2\nmetrics_per_minute = 2\n"
            .into();
        o.host_args = vec!["--audit-log".into(), audit.clone().into()];
    })
    .await;
    let mut a = d.wait_ready(READY).await.expect("ready");
    let mut refused = 0;
    for _ in 0..200 {
        match a.infer("mlp", &mlp_input(), false).await {
            Ok(_) => {}
            Err(SessionError::Status { status, .. }) if status.as_u16() == 429 => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 198);
    let mut metrics = Vec::new();
    for _ in 0..10 {
        let (status, _) = a
            .raw(hyper::Method::GET, "/metrics", None, bytes::Bytes::new())
            .await
            .unwrap();
        metrics.push(status.as_u16());
    }
    assert_eq!(
        metrics.iter().filter(|&&s| s == 200).count(),
        2,
        "{metrics:?}"
    );
    assert_eq!(
        metrics.iter().filter(|&&s| s == 429).count(),
        8,
        "{metrics:?}"
    );
    drop(a);
    d.stop().await;

    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let requests = lines.iter().filter(|l| l["kind"] == "request").count();
    assert_eq!(requests, 2, "one line per served request only");
    let tallied = |what: &str, outcome: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["kind"] == "tally")
            .filter(|l| l["tally"]["what"] == what && l["tally"]["outcome"] == outcome)
            .map(|l| l["tally"]["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(tallied("infer mlp", "refused:429"), 198, "{text}");
    assert_eq!(tallied("GET /metrics", "refused:429"), 8, "{text}");
    assert_eq!(tallied("GET /metrics", "ok"), 2, "{text}");
    assert!(tallied("POST /v2/attestation", "ok") >= 1, "{text}");
    assert!(lines.len() < 60, "{} lines", lines.len());
}
