//! `cloister sign`: OpenSSF model signing with a producer's ECDSA key, for producers without other
//! tooling. Writes what `model_signing sign key` writes (bundle v0.3, DSSE envelope, in-toto statement
//! with one SHA-256 per file and the root digest over them), so the reference verifier accepts it and
//! `cloister seal --signature` and the enclave check it like any other.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cloister_provenance::{Curve, SignerId, SignerKey};
use ring::digest::{Context, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING,
};
use zeroize::Zeroizing;

use crate::error::{io, read_pkcs8_pem};
use crate::Error;

/// Paths `model_signing` leaves out of a directory's signature by default (relative to the model's
/// root), written into the statement so a verifier hashes the same set.
pub const IGNORED_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// DER SubjectPublicKeyInfo prefixes (algorithm id-ecPublicKey + named curve, then the BIT STRING
/// header) for an uncompressed point: fixed bytes, checked against the verifier's parser in the tests.
const SPKI_P256_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
const SPKI_P384_PREFIX: &str = "3076301006072a8648ce3d020106052b81040022036200";

/// The signing algorithm of a producer key: the curve's own hash, as model_signing pairs them.
fn signing_algorithm(curve: Curve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
    }
}

fn spki_prefix(curve: Curve) -> &'static str {
    match curve {
        Curve::P256 => SPKI_P256_PREFIX,
        Curve::P384 => SPKI_P384_PREFIX,
    }
}

/// A producer's private signing key. The PKCS#8 bytes it was read from are wiped after parsing; the
/// key itself lives in ring's key pair, which never exposes it.
pub struct ProducerKey {
    pair: EcdsaKeyPair,
    public: SignerKey,
}

impl std::fmt::Debug for ProducerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerKey")
            .field("signer", &self.public.id())
            .finish_non_exhaustive()
    }
}

impl ProducerKey {
    /// Reads a PEM `PRIVATE KEY` (PKCS#8, unencrypted: `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`, or what [`ProducerKey::generate`] writes), P-256 or P-384.
    pub fn from_pem_file(path: &Path) -> Result<Self, Error> {
        let der = read_pkcs8_pem(
            path,
            " (PKCS#8; convert with `openssl pkcs8 -topk8 -nocrypt`)",
        )?;
        let bad = |reason: String| Error::Key {
            path: path.to_owned(),
            reason,
        };
        let rng = SystemRandom::new();
        for curve in [Curve::P256, Curve::P384] {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(signing_algorithm(curve), &der, &rng) {
                return Self::from_pair(pair, curve).map_err(|e| bad(e.to_string()));
            }
        }
        Err(bad(
            "not an ECDSA P-256 or P-384 PKCS#8 key (the curves model_signing and the enclave verify)"
                .into(),
        ))
    }

    fn from_pair(pair: EcdsaKeyPair, curve: Curve) -> Result<Self, Error> {
        let mut spki = hex::decode(spki_prefix(curve)).unwrap_or_default();
        spki.extend_from_slice(pair.public_key().as_ref());
        let public = SignerKey::from_spki_der(&spki)?;
        Ok(Self { pair, public })
    }

    /// A new key: the PKCS#8 PEM to store (wiped when dropped) and the key.
    pub fn generate(curve: Curve) -> Result<(Zeroizing<String>, Self), Error> {
        let rng = SystemRandom::new();
        let fail = |reason: &str| Error::Key {
            path: PathBuf::from("(new key)"),
            reason: reason.to_owned(),
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing_algorithm(curve), &rng)
            .map_err(|_| fail("the system RNG failed"))?;
        let pem =
            pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8.as_ref())
                .map_err(|e| fail(&e.to_string()))?;
        let pair = EcdsaKeyPair::from_pkcs8(signing_algorithm(curve), pkcs8.as_ref(), &rng)
            .map_err(|_| fail("ring refused the key it generated"))?;
        Ok((Zeroizing::new(pem), Self::from_pair(pair, curve)?))
    }

    /// The public half, as verifiers pin it.
    pub fn public(&self) -> &SignerKey {
        &self.public
    }

    /// The signer id policies name (`sha256:` of the SubjectPublicKeyInfo).
    pub fn signer_id(&self) -> SignerId {
        self.public.id()
    }
}

/// SHA-256 of a file, read in 1 MiB pieces (models are large).
fn file_digest(path: &Path) -> Result<[u8; 32], Error> {
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// The files of a model directory, relative names with `/`, sorted; symlinks and special files refused
/// (model_signing's default), the ignored paths and `exclude` (the signature being written) left out.
fn walk(root: &Path, exclude: Option<&Path>) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| Error::Model {
                path: path.clone(),
                reason: "file name is not UTF-8".into(),
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if IGNORED_PATHS.contains(&rel.as_str()) || exclude.is_some_and(|x| same_file(x, &path))
            {
                continue;
            }
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                stack.push((rel, path));
            } else if kind.is_file() {
                out.push((rel, path));
            } else {
                return Err(Error::Model {
                    path,
                    reason: "a symlink or special file (model signatures cover regular files only)"
                        .into(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Signs the model at `model` (one file, or a directory) and returns the bundle (JSON). `exclude` is
/// the path the bundle will be written to, left out when it lies inside the model directory.
///
/// The bundle is checked with the verifier before it is returned: a signature that the enclave would
/// refuse is never written.
pub fn sign_model(
    model: &Path,
    key: &ProducerKey,
    exclude: Option<&Path>,
) -> Result<Vec<u8>, Error> {
    let meta = fs::symlink_metadata(model).map_err(io(model))?;
    let subject = model
        .canonicalize()
        .map_err(io(model))?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::Model {
            path: model.to_owned(),
            reason: "has no UTF-8 file name".into(),
        })?;
    let files: Vec<(String, [u8; 32])> = if meta.is_file() {
        vec![(".".to_owned(), file_digest(model)?)]
    } else if meta.is_dir() {
        walk(model, exclude)?
            .into_iter()
            .map(|(name, path)| Ok((name, file_digest(&path)?)))
            .collect::<Result<_, Error>>()?
    } else {
        return Err(Error::Model {
            path: model.to_owned(),
            reason: "neither a regular file nor a directory".into(),
        });
    };
    if files.is_empty() {
        return Err(Error::Model {
            path: model.to_owned(),
            reason: "no files to sign".into(),
        });
    }
    let mut root = Context::new(&SHA256);
    for (_, d) in &files {
        root.update(d);
    }
    let statement = serde_json::json!({
        "_type": cloister_provenance::STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {"sha256": hex::encode(root.finish())}}],
        "predicateType": cloister_provenance::PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": false,
                "ignore_paths": IGNORED_PATHS,
            },
            "resources": files.iter().map(|(name, d)| serde_json::json!({
                "algorithm": "sha256", "name": name, "digest": hex::encode(d),
            })).collect::<Vec<_>>(),
        },
    });
    let payload = serde_json::to_vec(&statement).map_err(|e| Error::Model {
        path: model.to_owned(),
        reason: e.to_string(),
    })?;
    let message = cloister_provenance::pae(cloister_provenance::IN_TOTO_PAYLOAD_TYPE, &payload);
    let sig = key
        .pair
        .sign(&SystemRandom::new(), &message)
        .map_err(|_| Error::Key {
            path: PathBuf::from("(producer key)"),
            reason: "signing failed (system RNG)".into(),
        })?;
    let bundle = serde_json::json!({
        "mediaType": cloister_provenance::MEDIA_TYPES[0],
        "verificationMaterial": {
            "publicKey": {"hint": key.public.hint()},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": STANDARD.encode(&payload),
            "payloadType": cloister_provenance::IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": STANDARD.encode(sig.as_ref()), "keyid": ""}],
        },
    });
    let bytes = serde_json::to_vec_pretty(&bundle).map_err(|e| Error::Model {
        path: model.to_owned(),
        reason: e.to_string(),
    })?;
    let manifest = cloister_provenance::verify_bundle(&bytes, std::slice::from_ref(&key.public))?;
    if manifest.files().len() != files.len() {
        return Err(Error::Model {
            path: model.to_owned(),
            reason: "the verifier read back another file list".into(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_under_the_producer_key_only_and_cover_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        fs::create_dir_all(model.join("sub")).unwrap();
        fs::create_dir_all(model.join(".git")).unwrap();
        fs::write(model.join("model.onnx"), b"weights").unwrap();
        fs::write(model.join("sub/tokenizer.json"), b"{}").unwrap();
        fs::write(model.join(".git/HEAD"), b"ignored").unwrap();
        for curve in [Curve::P256, Curve::P384] {
            let (pem, key) = ProducerKey::generate(curve).unwrap();
            let key_path = dir.path().join("k.pem");
            fs::write(&key_path, pem.as_bytes()).unwrap();
            let read_back = ProducerKey::from_pem_file(&key_path).unwrap();
            assert_eq!(read_back.signer_id(), key.signer_id());
            let key = read_back;
            let bundle = sign_model(&model, &key, None).unwrap();
            let m = cloister_provenance::verify_bundle(&bundle, &[key.public().clone()]).unwrap();
            assert_eq!(
                m.files().keys().collect::<Vec<_>>(),
                ["model.onnx", "sub/tokenizer.json"]
            );
            m.check_files(&[("model.onnx", b"weights"), ("sub/tokenizer.json", b"{}")])
                .unwrap();
            let (_, other) = ProducerKey::generate(curve).unwrap();
            assert!(
                cloister_provenance::verify_bundle(&bundle, &[other.public().clone()]).is_err()
            );
        }
        // One file: model_signing's "." resource.
        let (_, key) = ProducerKey::generate(Curve::P256).unwrap();
        let bundle = sign_model(&model.join("model.onnx"), &key, None).unwrap();
        let m = cloister_provenance::verify_bundle(&bundle, &[key.public().clone()]).unwrap();
        assert_eq!(m.model_name(), "model.onnx");
        m.check_files(&[("model.onnx", b"weights")]).unwrap();
    }

    #[test]
    fn bad_keys_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        fs::write(
            &p,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(ProducerKey::from_pem_file(&p).is_err());
        fs::write(&p, "garbage").unwrap();
        assert!(ProducerKey::from_pem_file(&p).is_err());
        let model = dir.path().join("m");
        fs::create_dir(&model).unwrap();
        assert!(sign_model(&model, &ProducerKey::generate(Curve::P256).unwrap().1, None).is_err());
        fs::write(model.join("a"), b"x").unwrap();
        std::os::unix::fs::symlink(model.join("a"), model.join("b")).unwrap();
        let err = sign_model(&model, &ProducerKey::generate(Curve::P256).unwrap().1, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
    }
}
