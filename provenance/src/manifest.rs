//! The signed in-toto statement: per-file digests and the root digest over them.

use std::collections::BTreeMap;

use ring::digest::{digest, Context, SHA256};
use serde::Deserialize;

use crate::keyless::SignerIdentity;
use crate::{Error, SignerId};

/// The in-toto statement type model signatures use.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// model_signing's predicate type.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Deserialize)]
struct Subject {
    name: String,
    digest: SubjectDigest,
}

#[derive(Deserialize)]
struct SubjectDigest {
    sha256: String,
}

#[derive(Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<Resource>,
}

#[derive(Deserialize)]
struct Serialization {
    method: String,
    hash_type: String,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    name: String,
    digest: String,
}

/// What a verified signature says: who signed, the root digest, and the digest of every file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    signer: SignerId,
    identity: Option<SignerIdentity>,
    root_digest: [u8; 32],
    model_name: String,
    files: BTreeMap<String, [u8; 32]>,
}

impl VerifiedManifest {
    /// Who signed: the key's id, or for a keyless signature the identity's ([`SignerIdentity::id`]).
    pub fn signer(&self) -> SignerId {
        self.signer
    }

    /// For a keyless signature, the verified identity and its issuer.
    pub fn identity(&self) -> Option<&SignerIdentity> {
        self.identity.as_ref()
    }

    pub(crate) fn with_identity(mut self, identity: SignerIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The signed root digest (SHA-256 over the file digests), model_signing's subject digest.
    pub fn root_digest(&self) -> [u8; 32] {
        self.root_digest
    }

    /// The subject name the producer gave the model (its directory or file name when signed).
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The signed files and their SHA-256, by name.
    pub fn files(&self) -> &BTreeMap<String, [u8; 32]> {
        &self.files
    }

    /// Checks the model's files against the signed digests: the same names, each with its signed
    /// SHA-256. A signature over a single file (model_signing lists it as `"."`) matches a model made of
    /// exactly one file, whatever either calls it. The error names the first file that differs.
    pub fn check_files(&self, files: &[(&str, &[u8])]) -> Result<(), Error> {
        // A one-file signature (model_signing names a signed single file ".") and a one-file model: the
        // file is the model, whatever either side calls it.
        if let ([(signed_name, expected)], [(name, bytes)]) =
            (self.files.iter().collect::<Vec<_>>().as_slice(), files)
        {
            let named = if signed_name.as_str() == "." {
                name
            } else {
                signed_name.as_str()
            };
            return compare(named, expected, bytes);
        }
        for (name, bytes) in files {
            let expected = self.files.get(*name).ok_or_else(|| Error::FileUnsigned {
                name: (*name).to_owned(),
            })?;
            compare(name, expected, bytes)?;
        }
        if let Some(missing) = self
            .files
            .keys()
            .find(|n| !files.iter().any(|(f, _)| f == n))
        {
            return Err(Error::FileMissing {
                name: missing.clone(),
            });
        }
        Ok(())
    }
}

fn compare(name: &str, expected: &[u8; 32], bytes: &[u8]) -> Result<(), Error> {
    let found = digest(&SHA256, bytes);
    if found.as_ref() != expected {
        return Err(Error::FileDigestMismatch {
            name: name.to_owned(),
            expected: hex::encode(expected),
            found: hex::encode(found),
        });
    }
    Ok(())
}

fn unsupported(field: &'static str, expected: &'static str, found: &str) -> Error {
    Error::Unsupported {
        field,
        expected,
        found: found.to_owned(),
    }
}

fn sha256_hex(field: &'static str, s: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    if s.len() != 64
        || s.bytes().any(|b| b.is_ascii_uppercase())
        || hex::decode_to_slice(s, &mut out).is_err()
    {
        return Err(unsupported(field, "64 lowercase hex digits", s));
    }
    Ok(out)
}

/// Parses the (already signature-checked) statement and recomputes its root digest.
pub(crate) fn from_statement(payload: &[u8], signer: SignerId) -> Result<VerifiedManifest, Error> {
    let st: Statement = serde_json::from_slice(payload).map_err(|e| Error::Malformed {
        what: "in-toto statement",
        detail: e.to_string(),
    })?;
    if st.statement_type != STATEMENT_TYPE {
        return Err(unsupported(
            "statement._type",
            STATEMENT_TYPE,
            &st.statement_type,
        ));
    }
    if st.predicate_type != PREDICATE_TYPE {
        return Err(unsupported(
            "statement.predicateType",
            PREDICATE_TYPE,
            &st.predicate_type,
        ));
    }
    let [subject] = st.subject.as_slice() else {
        return Err(Error::Unsupported {
            field: "statement.subject",
            expected: "exactly one subject",
            found: format!("{} subjects", st.subject.len()),
        });
    };
    let serialization = &st.predicate.serialization;
    if serialization.method != "files" {
        return Err(unsupported(
            "predicate.serialization.method",
            "files",
            &serialization.method,
        ));
    }
    if serialization.hash_type != "sha256" {
        return Err(unsupported(
            "predicate.serialization.hash_type",
            "sha256",
            &serialization.hash_type,
        ));
    }
    if st.predicate.resources.is_empty() {
        return Err(unsupported(
            "predicate.resources",
            "at least one file",
            "none",
        ));
    }
    let claimed = sha256_hex("statement.subject[0].digest.sha256", &subject.digest.sha256)?;
    let mut root = Context::new(&SHA256);
    let mut files = BTreeMap::new();
    for r in &st.predicate.resources {
        if r.algorithm != "sha256" {
            return Err(unsupported(
                "predicate.resources[].algorithm",
                "sha256",
                &r.algorithm,
            ));
        }
        let d = sha256_hex("predicate.resources[].digest", &r.digest)?;
        root.update(&d);
        if files.insert(r.name.clone(), d).is_some() {
            return Err(unsupported(
                "predicate.resources[].name",
                "unique file names",
                &r.name,
            ));
        }
    }
    let computed = root.finish();
    if computed.as_ref() != claimed {
        return Err(Error::RootDigestMismatch {
            claimed: subject.digest.sha256.clone(),
            computed: hex::encode(computed),
        });
    }
    Ok(VerifiedManifest {
        signer,
        identity: None,
        root_digest: claimed,
        model_name: subject.name.clone(),
        files,
    })
}
