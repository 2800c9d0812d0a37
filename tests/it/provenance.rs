//! Model provenance with bundles the reference signer writes: `model_signing` (PyPI, in the CI venv)
//! signs a real model, `cloister seal --signature` checks and seals it, and the enclave checks it again
//! against the `signer_keys` of its configuration before loading.
//!
//! Needs `$CLOISTER_PYTHON` (default `python3`) to import `model_signing`; without it the tests print a
//! loud SKIP line and pass, and fail under CLOISTER_REQUIRE_ALL_TESTS=1 (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::e2e::{deploy, mlp, READY};

fn python_with_model_signing(test: &str) -> Option<String> {
    crate::python_importing(
        "model_signing, cryptography",
        test,
        "model_signing==1.1.1 pyopenssl",
    )
}

/// A fresh ECDSA key pair (`curve`: SECP256R1 or SECP384R1) as PEM files `<name>.key` and `<name>.pub`.
fn keypair(python: &str, dir: &Path, name: &str, curve: &str) -> PathBuf {
    let script = format!(
        "import sys\nfrom cryptography.hazmat.primitives.asymmetric import ec\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = ec.generate_private_key(ec.{curve}())\n\
         open(sys.argv[1] + '.key', 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
         open(sys.argv[1] + '.pub', 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n"
    );
    let base = dir.join(name);
    let out = Command::new(python)
        .args(["-c", &script])
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    base.with_extension("pub")
}

/// `model_signing sign key MODEL --private_key KEY --signature SIG`, the reference signer's CLI.
fn sign(python: &str, model: &Path, key_pub: &Path, sig: &Path) {
    let out = Command::new(python)
        .args(["-m", "model_signing", "sign", "key"])
        .arg(model)
        .arg("--private_key")
        .arg(key_pub.with_extension("key"))
        .arg("--signature")
        .arg(sig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "model_signing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cloister(args: &[&std::ffi::OsStr]) -> Output {
    let bin = cloister_devnet::sibling_bin_dir().unwrap().join("cloister");
    Command::new(bin).args(args).output().unwrap()
}

fn seal(model: &Path, out: &Path, keystore: &Path, sig: &Path, keys: &[&Path]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "seal".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--keystore".as_ref(),
        keystore.as_os_str(),
        "--signature".as_ref(),
        sig.as_os_str(),
    ];
    for k in keys {
        args.push("--signer-key".as_ref());
        args.push(k.as_os_str());
    }
    cloister(&args)
}

/// `cloister infer` of the MLP request under `policy`.
fn infer_mlp(endpoint: &str, policy: &Path, request: &Path) -> Output {
    cloister(&[
        "infer".as_ref(),
        "--endpoint".as_ref(),
        endpoint.as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--model".as_ref(),
        "mlp".as_ref(),
        "--input".as_ref(),
        request.as_os_str(),
        "--json".as_ref(),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cloister_seal_accepts_a_model_signing_bundle_and_refuses_each_bad_one_for_its_reason() {
    let Some(python) = python_with_model_signing("cloister_seal_accepts_a_model_signing_bundle")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let producer = keypair(&python, d, "producer", "SECP256R1");
    let producer384 = keypair(&python, d, "producer384", "SECP384R1");
    let stranger = keypair(&python, d, "stranger", "SECP256R1");
    std::fs::create_dir(d.join("mlp")).unwrap();
    let model = d.join("mlp/model.onnx");
    std::fs::copy(mlp(), &model).unwrap();
    let sig = d.join("model.sig");
    sign(&python, &model, &producer, &sig);
    let sig384 = d.join("model384.sig");
    sign(&python, &model, &producer384, &sig384);
    let ks = d.join("keys");

    // Valid, P-256 and P-384: sealed, the signer named.
    let ok = seal(
        &model,
        &d.join("a.sealed"),
        &ks,
        &sig,
        &[&stranger, &producer],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("sha384:"));
    assert!(
        stderr(&ok).contains("signature: ") && stderr(&ok).contains("1 file as signed"),
        "{}",
        stderr(&ok)
    );
    std::fs::remove_dir_all(&ks).unwrap();
    let ok = seal(&model, &d.join("b.sealed"), &ks, &sig384, &[&producer384]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // Wrong signer: exit 1, the hint matches no pinned key.
    let wrong = seal(&model, &d.join("c.sealed"), &ks, &sig, &[&stranger]);
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("matches none of the 1 pinned signer key"),
        "{}",
        stderr(&wrong)
    );

    // Tampered model: the same name, other bytes; the file is named.
    std::fs::create_dir(d.join("other")).unwrap();
    let other = d.join("other/model.onnx");
    std::fs::copy(crate::e2e::mixed(), &other).unwrap();
    let tampered = seal(&other, &d.join("d.sealed"), &ks, &sig, &[&producer]);
    assert_eq!(tampered.status.code(), Some(1), "{}", stderr(&tampered));
    assert!(
        stderr(&tampered).contains("model file \"model.onnx\": SHA-256 is"),
        "{}",
        stderr(&tampered)
    );

    // A signature without a key to check it: usage error, nothing sealed.
    let bare = cloister(&[
        "seal".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        d.join("e.sealed").as_os_str(),
        "--keystore".as_ref(),
        ks.as_os_str(),
        "--signature".as_ref(),
        sig.as_os_str(),
    ]);
    assert_eq!(bare.status.code(), Some(2), "{}", stderr(&bare));
    for f in ["c.sealed", "d.sealed", "e.sealed"] {
        assert!(!d.join(f).exists(), "{f} was written");
    }
}

/// `model_signing verify key MODEL --signature SIG --public_key PUB`: the reference verifier's answer.
fn reference_verify(python: &str, model: &Path, sig: &Path, public: &Path) -> Output {
    Command::new(python)
        .args(["-m", "model_signing", "verify", "key"])
        .arg(model)
        .arg("--signature")
        .arg(sig)
        .arg("--public_key")
        .arg(public)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn cloister_sign_writes_bundles_the_reference_verifier_accepts() {
    let Some(python) = python_with_model_signing("cloister_sign_writes_bundles") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model_dir = d.join("model");
    std::fs::create_dir_all(model_dir.join("assets")).unwrap();
    let model = model_dir.join("model.onnx");
    std::fs::copy(mlp(), &model).unwrap();
    std::fs::write(model_dir.join("assets/labels.txt"), "cat\ndog\n").unwrap();
    let ks = d.join("keys");
    for curve in ["p256", "p384"] {
        let key = d.join(format!("{curve}.key"));
        let made = cloister(&[
            "sign".as_ref(),
            "--generate-key".as_ref(),
            key.as_os_str(),
            "--curve".as_ref(),
            curve.as_ref(),
        ]);
        assert!(made.status.success(), "{}", stderr(&made));
        let public = d.join(format!("{curve}.key.pub"));
        let id =
            cloister_provenance::SignerKey::from_pem(&std::fs::read_to_string(&public).unwrap())
                .unwrap()
                .id()
                .to_string();
        assert_eq!(stdout(&made), id);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // A directory and a single file, each accepted by model_signing's own verifier.
        let dir_sig = d.join(format!("dir.{curve}.sig"));
        let one_sig = d.join(format!("one.{curve}.sig"));
        for (target, sig) in [(&model_dir, &dir_sig), (&model, &one_sig)] {
            let out = cloister(&[
                "sign".as_ref(),
                target.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
                "--signature".as_ref(),
                sig.as_os_str(),
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), id);
            let v = reference_verify(&python, target, sig, &public);
            assert!(
                v.status.success(),
                "model_signing refused {}: {}",
                sig.display(),
                stderr(&v)
            );
        }
        // Under another key, the reference verifier refuses it.
        let other = keypair(&python, d, &format!("other-{curve}"), "SECP256R1");
        assert!(!reference_verify(&python, &model_dir, &dir_sig, &other)
            .status
            .success());

        // `cloister seal` takes the single-file signature like model_signing's.
        let sealed = seal(
            &model,
            &d.join(format!("{curve}.sealed")),
            &ks,
            &one_sig,
            &[&public],
        );
        assert!(sealed.status.success(), "{}", stderr(&sealed));
        assert!(stderr(&sealed).contains(&id), "{}", stderr(&sealed));

        // Never overwrites a signature.
        let again = cloister(&[
            "sign".as_ref(),
            model.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--signature".as_ref(),
            one_sig.as_os_str(),
        ]);
        assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    }
    // A file changed after signing: the reference verifier names it.
    std::fs::write(model_dir.join("assets/labels.txt"), "cat\nfox\n").unwrap();
    let v = reference_verify(
        &python,
        &model_dir,
        &d.join("dir.p256.sig"),
        &d.join("p256.key.pub"),
    );
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("assets/labels.txt")
            || stderr(&v).contains("assets/labels.txt"),
        "{}{}",
        stdout(&v),
        stderr(&v)
    );
    // A public key is not a signing key.
    let bad = cloister(&[
        "sign".as_ref(),
        model.as_os_str(),
        "--key".as_ref(),
        d.join("p256.key.pub").as_os_str(),
        "--signature".as_ref(),
        d.join("x.sig").as_os_str(),
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(!d.join("x.sig").exists());
}

/// The signed-model container `cloister seal --signature` seals, built from model_signing's bundle.
fn signed_container(python: &str, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let producer = keypair(python, dir, "producer", "SECP256R1");
    let stranger = keypair(python, dir, "stranger", "SECP256R1");
    let sig = dir.join("model.sig");
    sign(python, &mlp(), &producer, &sig);
    let container = cloister_provenance::SignedModel::build(
        &std::fs::read(&sig).unwrap(),
        &std::fs::read(mlp()).unwrap(),
    )
    .unwrap();
    let path = dir.join("signed-mlp.bin");
    std::fs::write(&path, container).unwrap();
    (path, producer, stranger)
}

fn signer_keys_toml(pem: &Path) -> String {
    format!(
        "signer_keys = ['''\n{}''']\n",
        std::fs::read_to_string(pem).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_loads_a_signed_model_only_under_a_configured_signer() {
    let Some(python) = python_with_model_signing("the_enclave_loads_a_signed_model") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (container, producer, stranger) = signed_container(&python, dir.path());

    let good = dir.path().join("good");
    let d = deploy(&good, &container, "mlp", |o| {
        o.model_config_extra = signer_keys_toml(&producer)
    })
    .await;
    let mut session = d
        .wait_ready(READY)
        .await
        .expect("a model signed by the configured producer loads");
    let log = std::fs::read_to_string(&d.host_log).unwrap();
    let signer =
        cloister_provenance::SignerKey::from_pem(&std::fs::read_to_string(&producer).unwrap())
            .unwrap()
            .id();
    let fingerprint = signer.to_string();
    // The receipt of an inference names the signer the enclave checked.
    session
        .infer("mlp", &crate::e2e::mlp_input(), false)
        .await
        .unwrap();
    let receipt_key = session.evidence().claims().receipt_key.clone().unwrap();
    let receipt = session.receipt_file().expect("a receipt");
    let payload = receipt.receipt.open(&receipt_key).unwrap();
    let provenance = payload.provenance.expect("the receipt carries the signer");
    assert_eq!(provenance.signer, signer.0);
    // And `cloister receipt verify` reports it, offline, to whoever holds the receipt.
    let receipt_path = dir.path().join("receipt.json");
    std::fs::write(&receipt_path, receipt.to_json()).unwrap();
    let out = cloister(&[
        "receipt".as_ref(),
        "verify".as_ref(),
        "--receipt".as_ref(),
        receipt_path.as_os_str(),
        "--policy".as_ref(),
        d.client_policy.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model_signer"], fingerprint.as_str());
    assert_eq!(
        v["signed_root"],
        format!("sha256:{}", hex::encode(provenance.root_digest)).as_str()
    );

    // A client can pin the producer instead of the digest: `model_signers` in its policy admits the
    // model on the signer the enclave's claims attest, and refuses it under another producer's pin.
    let stranger_id =
        cloister_provenance::SignerKey::from_pem(&std::fs::read_to_string(&stranger).unwrap())
            .unwrap()
            .id()
            .to_string();
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        serde_json::to_vec(&crate::e2e::mlp_input()).unwrap(),
    )
    .unwrap();
    let pinned_policy = std::fs::read_to_string(&d.client_policy).unwrap();
    assert!(pinned_policy.contains("model_digests"));
    let infer_signed_by = |pin: &str| {
        let text: String = pinned_policy
            .lines()
            .map(|l| {
                if l.starts_with("model_digests") {
                    format!("model_signers = [\"{pin}\"]\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let policy = dir.path().join(format!("signed-by-{}.toml", &pin[7..15]));
        std::fs::write(&policy, text).unwrap();
        infer_mlp(&d.endpoint, &policy, &request)
    };
    let out = infer_signed_by(&fingerprint);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = infer_signed_by(&stranger_id);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("model_signers") && stderr(&out).contains(&fingerprint),
        "{}",
        stderr(&out)
    );
    assert!(
        log.contains("model signature verified") && log.contains(&fingerprint),
        "{log}"
    );

    release_log_is_required_when_the_policy_says_so(
        dir.path(),
        &d,
        &pinned_policy,
        &request,
        &session,
        &fingerprint,
        &stranger_id,
    );
    d.stop().await;

    let bad = dir.path().join("bad");
    let d = deploy(&bad, &container, "mlp", |o| {
        o.model_config_extra = signer_keys_toml(&stranger)
    })
    .await;
    assert!(
        d.wait_ready(Duration::from_secs(15)).await.is_err(),
        "a model signed by another key loaded"
    );
    let log = std::fs::read_to_string(&d.host_log).unwrap();
    assert!(
        log.contains("provenance: signature bundle: key hint"),
        "{log}"
    );
    d.stop().await;
}

fn log_cmd(args: &[&std::ffi::OsStr]) -> Output {
    let mut all: Vec<&std::ffi::OsStr> = vec!["log".as_ref()];
    all.extend_from_slice(args);
    cloister(&all)
}

/// A release log with the entries given (`--enclave`/`--model` argument lists), its proofs, and the
/// client policy `base` plus `[release_log]` pinning it.
fn logged_policy(dir: &Path, name: &str, base: &str, appends: &[Vec<String>]) -> PathBuf {
    let log = dir.join(format!("{name}.log"));
    let key = dir.join(format!("{name}.log.key"));
    let out = log_cmd(&[
        "init".as_ref(),
        "--dir".as_ref(),
        log.as_os_str(),
        "--origin".as_ref(),
        format!("test.example/{name}").as_ref(),
        "--key-out".as_ref(),
        key.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let vkey = stdout(&out);
    assert!(vkey.starts_with(&format!("test.example/{name}+")), "{vkey}");
    for entry in appends {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "append".as_ref(),
            "--dir".as_ref(),
            log.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
        ];
        args.extend(entry.iter().map(|a| -> &std::ffi::OsStr { a.as_ref() }));
        let out = log_cmd(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let proofs = dir.join(format!("{name}.proofs.json"));
    let out = log_cmd(&[
        "prove".as_ref(),
        "--dir".as_ref(),
        log.as_os_str(),
        "--out".as_ref(),
        proofs.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let policy = dir.join(format!("{name}.policy.toml"));
    std::fs::write(
        &policy,
        format!(
            "{base}\n[release_log]\nkey = \"{vkey}\"\nproofs = \"{}\"\n",
            proofs.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    policy
}

/// The release log, end to end: a client whose policy requires the log talks to the enclave only when
/// its measurement and the model (with the signer its claims attest) are logged under the pinned key.
fn release_log_is_required_when_the_policy_says_so(
    dir: &Path,
    d: &cloister_devnet::Deployment,
    base: &str,
    request: &Path,
    session: &cloister_session::AttestedSession,
    signer: &str,
    stranger: &str,
) {
    let measurement = hex::encode(session.evidence().report().report().measurement);
    let digest = format!(
        "sha384:{}",
        hex::encode(session.evidence().claims().model_digests[0].0)
    );
    let infer = |policy: &Path| infer_mlp(&d.endpoint, policy, request);
    let enclave = vec![
        "--enclave".to_owned(),
        measurement.clone(),
        "--label".into(),
        "test".into(),
    ];
    let model = |s: &str| {
        vec![
            "--model".to_owned(),
            digest.clone(),
            "--signer".into(),
            s.to_owned(),
        ]
    };

    // Both logged (with a broker policy entry between them): served.
    let broker_policy = dir.join("broker-policy.toml");
    std::fs::write(&broker_policy, base).unwrap();
    let full = logged_policy(
        dir,
        "full",
        base,
        &[
            enclave.clone(),
            vec![
                "--broker-policy".into(),
                broker_policy.to_str().unwrap().into(),
            ],
            model(signer),
        ],
    );
    let out = infer(&full);
    assert!(out.status.success(), "{}", stderr(&out));

    // The model missing, the enclave missing, the model logged under another signer: refused, each
    // for its reason, with exit 1.
    for (name, entries, reason) in [
        ("no-model", vec![enclave.clone()], "model sha384:"),
        ("no-enclave", vec![model(signer)], "enclave measurement"),
        (
            "other-signer",
            vec![enclave, model(stranger)],
            "logged as signed by",
        ),
    ] {
        let policy = logged_policy(dir, name, base, &entries);
        let out = infer(&policy);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("release log") && stderr(&out).contains(reason),
            "{name}: {}",
            stderr(&out)
        );
    }

    // Proofs of one log under another log's key: refused before connecting (exit 2, the checkpoint).
    let text = std::fs::read_to_string(&full).unwrap();
    let other_key = std::fs::read_to_string(dir.join("no-model.log/log.vkey")).unwrap();
    let full_key = std::fs::read_to_string(dir.join("full.log/log.vkey")).unwrap();
    let swapped = dir.join("swapped.policy.toml");
    std::fs::write(&swapped, text.replace(full_key.trim(), other_key.trim())).unwrap();
    let out = infer(&swapped);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("checkpoint"), "{}", stderr(&out));

    // A verifier that cannot check the log refuses the policy instead of ignoring it.
    let out = cloister(&[
        "receipt".as_ref(),
        "verify".as_ref(),
        "--receipt".as_ref(),
        dir.join("receipt.json").as_os_str(),
        "--policy".as_ref(),
        full.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("release_log"), "{}", stderr(&out));

    // The log only grew since an older checkpoint; a rewritten log does not pass that check.
    let old = dir.join("full.checkpoint.old");
    std::fs::copy(dir.join("full.log/checkpoint"), &old).unwrap();
    let out = log_cmd(&[
        "append".as_ref(),
        "--dir".as_ref(),
        dir.join("full.log").as_os_str(),
        "--key".as_ref(),
        dir.join("full.log.key").as_os_str(),
        "--enclave".as_ref(),
        "ab".repeat(48).as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let verify = |old: &Path| {
        log_cmd(&[
            "verify".as_ref(),
            "--dir".as_ref(),
            dir.join("full.log").as_os_str(),
            "--old".as_ref(),
            old.as_os_str(),
        ])
    };
    let out = verify(&old);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the log only grew"),
        "{}",
        stdout(&out)
    );
    let entries = std::fs::read_to_string(dir.join("full.log/entries")).unwrap();
    std::fs::write(
        dir.join("full.log/entries"),
        entries.replacen(&measurement, &"cd".repeat(48), 1),
    )
    .unwrap();
    let out = verify(&old);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

const KEYLESS_IDENTITY: &str = "producer@example.com";
const KEYLESS_ISSUER: &str = "https://accounts.example.com";

/// A keyless bundle for `model`, made fresh: the reference signer (`model_signing sign certificate`)
/// signs with a certificate from a local test CA, and a local test log adds its entry
/// (provenance/tests/keyless/make_keyless.py). Returns the directory holding model.sig and
/// trusted_root.json.
fn keyless_bundle(python: &str, dir: &Path, name: &str, model: &Path, flags: &[&str]) -> PathBuf {
    let out_dir = dir.join(name);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../provenance/tests/keyless/make_keyless.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&out_dir)
        .arg(model)
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "make_keyless.py: {}", stderr(&out));
    out_dir
}

fn seal_keyless(
    model: &Path,
    out: &Path,
    keystore: &Path,
    material: &Path,
    identity: &str,
) -> Output {
    cloister(&[
        "seal".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--keystore".as_ref(),
        keystore.as_os_str(),
        "--signature".as_ref(),
        material.join("model.sig").as_os_str(),
        "--signer-identity".as_ref(),
        identity.as_ref(),
        "--signer-issuer".as_ref(),
        KEYLESS_ISSUER.as_ref(),
        "--trusted-root".as_ref(),
        material.join("trusted_root.json").as_os_str(),
    ])
}

/// Keyless signatures end to end: sealed under the identity and trusted root, refused for another
/// identity, an expired certificate or a missing inclusion proof, and checked again by the enclave,
/// which attests the identity's signer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_signatures_are_checked_at_seal_and_in_the_enclave() {
    let Some(python) = python_with_model_signing("keyless_signatures_are_checked") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ks = d.join("keys");
    let valid = keyless_bundle(&python, d, "valid", &mlp(), &[]);
    let ok = seal_keyless(&mlp(), &d.join("a.sealed"), &ks, &valid, KEYLESS_IDENTITY);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let identity = cloister_provenance::keyless::SignerIdentity {
        identity: KEYLESS_IDENTITY.into(),
        issuer: KEYLESS_ISSUER.into(),
    };
    let id = identity.id().to_string();
    assert!(
        stderr(&ok).contains(&id) && stderr(&ok).contains(KEYLESS_IDENTITY),
        "{}",
        stderr(&ok)
    );
    for (name, flags, identity, reason) in [
        (
            "other",
            &[][..],
            "someone@example.com",
            "none of the allowed signers",
        ),
        ("expired", &["--expired"][..], KEYLESS_IDENTITY, "expired"),
        (
            "no-proof",
            &["--no-inclusion-proof"][..],
            KEYLESS_IDENTITY,
            "inclusionProof: absent",
        ),
    ] {
        let material = if name == "other" {
            valid.clone()
        } else {
            keyless_bundle(&python, d, name, &mlp(), flags)
        };
        let out = seal_keyless(
            &mlp(),
            &d.join(format!("{name}.sealed")),
            &ks,
            &material,
            identity,
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{name}: {}", stderr(&out));
        assert!(!d.join(format!("{name}.sealed")).exists());
    }

    // The enclave: the trusted root in its measured configuration, the identity on the model.
    let container = cloister_provenance::SignedModel::build(
        &std::fs::read(valid.join("model.sig")).unwrap(),
        &std::fs::read(mlp()).unwrap(),
    )
    .unwrap();
    let container_path = d.join("keyless-mlp.bin");
    std::fs::write(&container_path, container).unwrap();
    let root = std::fs::read_to_string(valid.join("trusted_root.json")).unwrap();
    let deployment = deploy(&d.join("deploy"), &container_path, "mlp", |o| {
        o.enclave_config_extra = format!("sigstore_trusted_root = '''{root}'''\n");
        o.model_config_extra = format!(
            "signer_identities = [{{ identity = \"{KEYLESS_IDENTITY}\", issuer = \"{KEYLESS_ISSUER}\" }}]\n"
        );
    })
    .await;
    let session = deployment
        .wait_ready(READY)
        .await
        .expect("a model signed by the configured identity loads");
    let claims = session.evidence().claims();
    let signer = claims
        .signer_of(&claims.model_digests[0].0)
        .expect("a verified signer");
    assert_eq!(signer.signer, identity.id().0);
    deployment.stop().await;
}
