//! `cloister seal`: sealing a real sample model, the keystore's permissions, never overwriting a key,
//! `--inspect`, and the model checks (non-ONNX files, unsupported operators).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cloister_models::{open_expecting, Keystore, ModelDigest};
use prost::Message;
use tract_onnx::pb;

use crate::common::cloister;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A real model: the synthetic MLP if present, else Magika, else a tiny one built here.
fn sample_model(dir: &Path) -> PathBuf {
    for rel in [
        "models/sample/mlp/model.onnx",
        "models/sample/magika/model.onnx",
    ] {
        let p = repo_root().join(rel);
        if p.exists() {
            return p;
        }
    }
    let p = dir.join("tiny.onnx");
    fs::write(&p, single_op_model("Relu", "").encode_to_vec()).unwrap();
    p
}

fn value_info(name: &str) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1, // FLOAT
                shape: Some(pb::TensorShapeProto {
                    dim: [1, 4]
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `y = op(x)`, x and y float32 [1, 4].
fn single_op_model(op: &str, domain: &str) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: vec![pb::NodeProto {
                name: "n0".into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                op_type: op.into(),
                domain: domain.into(),
                ..Default::default()
            }],
            input: vec![value_info("x")],
            output: vec![value_info("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn seal(model: &Path, out: &Path, keystore: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "seal",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--keystore",
        keystore.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cloister(&args)
}

#[test]
fn seal_round_trip_keystore_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sample_model(tmp.path());
    let plaintext = fs::read(&model).unwrap();
    let keystore = tmp.path().join("owner/keys");
    let out = tmp.path().join("model.sealed");

    let o = seal(&model, &out, &keystore, &["--name", "sample-model"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    // The last line of stdout is the digest policies pin: SHA-384 of the file.
    let digest = ModelDigest::of(&plaintext);
    let last = stdout(&o).lines().last().unwrap().to_owned();
    assert_eq!(last, digest.to_string());
    let hex384 = hex::encode(ring::digest::digest(&ring::digest::SHA384, &plaintext));
    assert_eq!(last, format!("sha384:{hex384}"));

    // Keystore: directory 0700, key file 0600, the key opens the sealed model.
    assert_eq!(mode(&keystore), 0o700);
    let key_file = keystore.join(format!("{hex384}.key"));
    assert_eq!(mode(&key_file), 0o600);
    let key = Keystore::open(&keystore).unwrap().get(&digest).unwrap();
    let opened = open_expecting(fs::File::open(&out).unwrap(), &key, &digest, 1 << 30).unwrap();
    assert_eq!(opened.as_bytes(), &plaintext[..]);
    assert_eq!(opened.name(), "sample-model");

    // A second seal of the same model is refused; nothing is overwritten or left behind.
    let key_before = fs::read(&key_file).unwrap();
    let out2 = tmp.path().join("again.sealed");
    let o = seal(&model, &out2, &keystore, &[]);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("already holds a key"), "{err}");
    assert!(err.contains("never overwritten"), "{err}");
    assert!(!out2.exists());
    assert_eq!(fs::read(&key_file).unwrap(), key_before);

    // An existing output is never overwritten either.
    let o = seal(&model, &out, &tmp.path().join("other-keys"), &[]);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("refusing to overwrite"));

    // --inspect: the header, and no key.
    let key_hex = hex::encode(key.expose_secret());
    let o = cloister(&["seal", "--inspect", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "CLSTRSEAL",
        "format version 1",
        "sample-model",
        &digest.to_string(),
        &format!("{} bytes", plaintext.len()),
        "AES-256-GCM",
        &key.key_id().to_string(),
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains(&key_hex));
    let o = cloister(&["seal", "--inspect", out.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "sample-model");
    assert_eq!(v["digest"], digest.to_string());
    assert_eq!(v["plaintext_len"], plaintext.len() as u64);
    assert_eq!(v["cipher"], "AES-256-GCM");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["key_id"], key.key_id().to_string());
    assert!(!stdout(&o).contains(&key_hex));

    // --inspect on something that is not sealed: refused (exit 1).
    let o = cloister(&["seal", "--inspect", model.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("not a valid sealed model"));
}

#[test]
fn name_defaults_to_the_file_stem() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("my-relu.onnx");
    fs::write(&model, single_op_model("Relu", "").encode_to_vec()).unwrap();
    let out = tmp.path().join("m.sealed");
    let o = seal(&model, &out, &tmp.path().join("keys"), &[]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let o = cloister(&["seal", "--inspect", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "my-relu");
}

#[test]
fn refuses_models_tract_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let keystore = tmp.path().join("keys");

    // Not ONNX at all.
    let junk = tmp.path().join("junk.onnx");
    fs::write(&junk, b"\xff\xff\xff\xff this is not a protobuf").unwrap();
    let out = tmp.path().join("junk.sealed");
    let o = seal(&junk, &out, &keystore, &[]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("not an ONNX model"), "{}", stderr(&o));
    assert!(!out.exists());
    // A text file that happens to decode as an empty protobuf has no graph.
    let text = tmp.path().join("readme.onnx");
    fs::write(&text, b"").unwrap();
    let o = seal(&text, &out, &keystore, &[]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("no graph"), "{}", stderr(&o));

    // ONNX with an operator tract does not implement: named.
    let odd = tmp.path().join("odd.onnx");
    fs::write(
        &odd,
        single_op_model("TotallyNotAnOnnxOp", "").encode_to_vec(),
    )
    .unwrap();
    let o = seal(&odd, &out, &keystore, &[]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("unsupported operator TotallyNotAnOnnxOp"),
        "{err}"
    );
    assert!(!out.exists());

    // Weights in an external file: refused with the way out.
    let mut m = single_op_model("Relu", "");
    m.graph.as_mut().unwrap().initializer.push(pb::TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: 1,
        data_location: Some(1),
        external_data: vec![pb::StringStringEntryProto {
            key: "location".into(),
            value: "weights.bin".into(),
        }],
        ..Default::default()
    });
    let ext = tmp.path().join("ext.onnx");
    fs::write(&ext, m.encode_to_vec()).unwrap();
    let o = seal(&ext, &out, &keystore, &[]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("external data"), "{}", stderr(&o));

    // Nothing was stored for any refused model.
    if keystore.exists() {
        assert!(Keystore::open(&keystore)
            .unwrap()
            .list()
            .unwrap()
            .is_empty());
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = cloister(&["seal", "--model", "x.onnx"]);
    assert_eq!(o.status.code(), Some(2));
    let o = cloister(&["seal", "--inspect", "/nonexistent/x.sealed"]);
    assert_eq!(o.status.code(), Some(2));
    let o = cloister(&["seal", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("--inspect"));
}
