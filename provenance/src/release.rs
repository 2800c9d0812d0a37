//! The release log: an append-only record of what an operator released, that clients can require what
//! they attest to appear in, offline.
//!
//! Each leaf is one entry, a line of JSON ([`ReleaseEntry`]): an enclave build (its launch measurement),
//! a model (its sealed digest and, if it was signed, the signer), or a key-broker policy (its SHA-256).
//! The log's writer (`cloister log`, crate `cloister-publisher`) appends entries and signs a checkpoint
//! over the tree; clients get a [`ReleaseProofs`] file (the checkpoint and an inclusion proof per entry)
//! and check it against the log's pinned verifier key ([`tlog::NoteVerifier`]). A deployment that
//! released a measurement or model without logging it cannot pass a client that requires the log, and a
//! log that rewrote history is caught by anyone holding an older checkpoint (consistency proofs).
//!
//! Proof file (JSON; hashes in lowercase hex, like Rekor's `inclusionProof`):
//!
//! ```text
//! {"checkpoint": "<signed note>",
//!  "entries": [{"index": 0, "entry": "<the leaf, a JSON line>", "proof": ["<hex>", ...]}, ...]}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tlog::{self, Checkpoint, Hash, NoteVerifier};
use crate::{Error, SignerId};

/// Largest proof file accepted.
pub const MAX_PROOFS_LEN: usize = 16 * 1024 * 1024;

/// One released thing. Serialized as one line of JSON, tagged by `kind`; that line is the leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReleaseEntry {
    /// An enclave build: its SEV-SNP launch measurement (48 bytes, lowercase hex).
    Enclave {
        /// `MEASUREMENT` of the attestation report.
        measurement: String,
        /// A free-form label (a version, a commit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A sealed model: `sha384:<hex>` as policies and claims write it, and its signer if signed.
    Model {
        /// The sealed model's digest.
        digest: String,
        /// `sha256:<hex>` of the producer's key, when the model is signed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signer: Option<String>,
        /// A free-form label (the model's name, a version).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A key-broker policy: `sha256:<hex>` of the policy file as deployed.
    BrokerPolicy {
        /// The policy file's digest.
        digest: String,
        /// A free-form label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
}

impl fmt::Display for ReleaseEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseEntry::Enclave { measurement, .. } => write!(f, "enclave {measurement}"),
            ReleaseEntry::Model {
                digest,
                signer: Some(s),
                ..
            } => write!(f, "model {digest} signed by {s}"),
            ReleaseEntry::Model { digest, .. } => write!(f, "model {digest}"),
            ReleaseEntry::BrokerPolicy { digest, .. } => write!(f, "broker policy {digest}"),
        }
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ReleaseEntry {
    /// Checks the values' forms (so two spellings of one digest cannot both be logged) and returns the
    /// leaf bytes: the entry's JSON line.
    pub fn to_leaf(&self) -> Result<Vec<u8>, Error> {
        self.check()?;
        serde_json::to_vec(self).map_err(|e| Error::Log(format!("entry: {e}")))
    }

    /// Parses a leaf and checks its values' forms.
    pub fn from_leaf(leaf: &[u8]) -> Result<Self, Error> {
        let entry: Self = serde_json::from_slice(leaf)
            .map_err(|e| Error::Log(format!("entry {:?}: {e}", String::from_utf8_lossy(leaf))))?;
        entry.check()?;
        Ok(entry)
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |field: &str, expected: &str, found: &str| {
            Err(Error::Log(format!(
                "entry {field} is {found:?}, expected {expected}"
            )))
        };
        let label_ok = |l: &Option<String>| {
            l.as_ref()
                .is_none_or(|l| l.len() <= 256 && !l.chars().any(char::is_control))
        };
        match self {
            ReleaseEntry::Enclave { measurement, label } => {
                if !lower_hex(measurement, 96) {
                    return bad("measurement", "96 lowercase hex digits", measurement);
                }
                if !label_ok(label) {
                    return bad("label", "at most 256 characters, no control characters", "");
                }
            }
            ReleaseEntry::Model {
                digest,
                signer,
                label,
            } => {
                if !digest
                    .strip_prefix("sha384:")
                    .is_some_and(|h| lower_hex(h, 96))
                {
                    return bad("digest", "sha384:<96 lowercase hex digits>", digest);
                }
                if let Some(s) = signer {
                    if SignerId::parse(s).is_none() {
                        return bad("signer", "sha256:<64 lowercase hex digits>", s);
                    }
                }
                if !label_ok(label) {
                    return bad("label", "at most 256 characters, no control characters", "");
                }
            }
            ReleaseEntry::BrokerPolicy { digest, label } => {
                if !digest
                    .strip_prefix("sha256:")
                    .is_some_and(|h| lower_hex(h, 64))
                {
                    return bad("digest", "sha256:<64 lowercase hex digits>", digest);
                }
                if !label_ok(label) {
                    return bad("label", "at most 256 characters, no control characters", "");
                }
            }
        }
        Ok(())
    }
}

/// The proof file as written and read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseProofs {
    /// The signed checkpoint the proofs lead to.
    pub checkpoint: String,
    /// The proven entries.
    pub entries: Vec<ProvenEntry>,
}

/// One entry and its inclusion proof.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEntry {
    /// Leaf index.
    pub index: u64,
    /// The leaf: the entry's JSON line, as logged.
    pub entry: String,
    /// The audit path, leaf to root, hex.
    pub proof: Vec<String>,
}

/// Entries proven to be in a log whose checkpoint the pinned key signed.
#[derive(Clone, Debug)]
pub struct VerifiedReleases {
    checkpoint: Checkpoint,
    entries: Vec<(u64, ReleaseEntry)>,
}

impl ReleaseProofs {
    /// Parses a proof file and checks all of it against the log's pinned key: the checkpoint's
    /// signature, then every entry's inclusion proof against the checkpoint's root. One bad proof fails
    /// the file: a proof file is produced by the log's writer, and a broken one is not silently thinned.
    pub fn verify(bytes: &[u8], log_key: &NoteVerifier) -> Result<VerifiedReleases, Error> {
        if bytes.len() > MAX_PROOFS_LEN {
            return Err(Error::Log(format!(
                "proof file: {} bytes, over {MAX_PROOFS_LEN}",
                bytes.len()
            )));
        }
        let file: ReleaseProofs =
            serde_json::from_slice(bytes).map_err(|e| Error::Log(format!("proof file: {e}")))?;
        let checkpoint = Checkpoint::verify(&file.checkpoint, log_key)?;
        let mut entries = Vec::with_capacity(file.entries.len());
        for e in &file.entries {
            let path = e
                .proof
                .iter()
                .map(|h| {
                    let mut out: Hash = [0; 32];
                    hex::decode_to_slice(h, &mut out)
                        .map(|()| out)
                        .map_err(|_| {
                            Error::Log(format!(
                                "entry {}: proof hash {h:?} is not 32 bytes of hex",
                                e.index
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tlog::verify_inclusion(
                e.index,
                checkpoint.size,
                &tlog::leaf_hash(e.entry.as_bytes()),
                &path,
                &checkpoint.root,
            )?;
            entries.push((e.index, ReleaseEntry::from_leaf(e.entry.as_bytes())?));
        }
        Ok(VerifiedReleases {
            checkpoint,
            entries,
        })
    }
}

impl VerifiedReleases {
    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The proven entries, with their leaf indices.
    pub fn entries(&self) -> &[(u64, ReleaseEntry)] {
        &self.entries
    }

    /// Requires the enclave measurement to be logged; returns its leaf index.
    pub fn require_enclave(&self, measurement: &[u8; 48]) -> Result<u64, Error> {
        let want = hex::encode(measurement);
        self.entries
            .iter()
            .find_map(|(i, e)| {
                matches!(e, ReleaseEntry::Enclave { measurement, .. } if *measurement == want)
                    .then_some(*i)
            })
            .ok_or(Error::NotLogged {
                what: "enclave measurement",
                value: want,
                size: self.checkpoint.size,
            })
    }

    /// Requires the model to be logged, and, when its entry names a signer, the attested signer to be
    /// that one (a model logged as signed by X and attested as unsigned, or signed by Y, was not released
    /// as it is served). Returns the leaf index.
    pub fn require_model(
        &self,
        digest: &[u8; 48],
        signer: Option<&[u8; 32]>,
    ) -> Result<u64, Error> {
        let want = format!("sha384:{}", hex::encode(digest));
        let attested_signer = signer.map(|s| SignerId(*s).to_string());
        let mut logged_signers = Vec::new();
        for (i, e) in &self.entries {
            let ReleaseEntry::Model {
                digest, signer: s, ..
            } = e
            else {
                continue;
            };
            if *digest != want {
                continue;
            }
            match s {
                None => return Ok(*i),
                Some(s) if Some(s) == attested_signer.as_ref() => return Ok(*i),
                Some(s) => logged_signers.push(s.clone()),
            }
        }
        if !logged_signers.is_empty() {
            return Err(Error::Log(format!(
                "model {want} is logged as signed by {}, but the enclave attests {}",
                logged_signers.join(", "),
                attested_signer.as_deref().unwrap_or("no verified signer")
            )));
        }
        Err(Error::NotLogged {
            what: "model",
            value: want,
            size: self.checkpoint.size,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn log_of(entries: &[ReleaseEntry]) -> (String, NoteVerifier, Vec<Vec<u8>>) {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[3u8; 32]).unwrap();
        let v = NoteVerifier::new(
            "test/releases",
            pair.public_key().as_ref().try_into().unwrap(),
        )
        .unwrap();
        let leaves: Vec<Vec<u8>> = entries.iter().map(|e| e.to_leaf().unwrap()).collect();
        let hashes: Vec<Hash> = leaves.iter().map(|l| tlog::leaf_hash(l)).collect();
        let cp = Checkpoint {
            origin: "test/releases".into(),
            size: leaves.len() as u64,
            root: tlog::root(&hashes),
        };
        let body = cp.body();
        let proofs = ReleaseProofs {
            checkpoint: format!(
                "{body}\n{}",
                v.signature_line(pair.sign(body.as_bytes()).as_ref())
            ),
            entries: leaves
                .iter()
                .enumerate()
                .map(|(i, l)| ProvenEntry {
                    index: i as u64,
                    entry: String::from_utf8(l.clone()).unwrap(),
                    proof: tlog::inclusion_proof(i, &hashes)
                        .unwrap()
                        .iter()
                        .map(hex::encode)
                        .collect(),
                })
                .collect(),
        };
        (serde_json::to_string(&proofs).unwrap(), v, leaves)
    }

    #[test]
    fn logged_measurements_and_models_are_found_and_others_are_not() {
        let signer = [5u8; 32];
        let entries = [
            ReleaseEntry::Enclave {
                measurement: hex::encode([1u8; 48]),
                label: Some("v1".into()),
            },
            ReleaseEntry::Model {
                digest: format!("sha384:{}", hex::encode([2u8; 48])),
                signer: Some(SignerId(signer).to_string()),
                label: None,
            },
            ReleaseEntry::Model {
                digest: format!("sha384:{}", hex::encode([3u8; 48])),
                signer: None,
                label: None,
            },
            ReleaseEntry::BrokerPolicy {
                digest: format!("sha256:{}", hex::encode([4u8; 32])),
                label: None,
            },
        ];
        let (file, v, _) = log_of(&entries);
        let r = ReleaseProofs::verify(file.as_bytes(), &v).unwrap();
        assert_eq!(r.require_enclave(&[1u8; 48]).unwrap(), 0);
        let err = r.require_enclave(&[9u8; 48]).unwrap_err().to_string();
        assert!(err.contains("is not in the log"), "{err}");
        assert_eq!(r.require_model(&[2u8; 48], Some(&signer)).unwrap(), 1);
        let err = r
            .require_model(&[2u8; 48], Some(&[6u8; 32]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("logged as signed by"), "{err}");
        assert!(r.require_model(&[2u8; 48], None).is_err());
        assert_eq!(r.require_model(&[3u8; 48], Some(&signer)).unwrap(), 2);
        assert!(r.require_model(&[8u8; 48], None).is_err());

        // An entry swapped for another one breaks its proof; another log's key is refused.
        let forged = file.replace(&hex::encode([1u8; 48]), &hex::encode([9u8; 48]));
        let err = ReleaseProofs::verify(forged.as_bytes(), &v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("inclusion proof of leaf 0"), "{err}");
        let other = NoteVerifier::new("test/releases", [1u8; 32]).unwrap();
        assert!(ReleaseProofs::verify(file.as_bytes(), &other).is_err());
        assert!(ReleaseProofs::verify(b"{}", &v).is_err());
        assert!(ReleaseProofs::verify(b"\xff", &v).is_err());
    }

    #[test]
    fn entries_are_written_in_one_spelling() {
        assert!(ReleaseEntry::Enclave {
            measurement: hex::encode([0xab; 48]).to_uppercase(),
            label: None
        }
        .to_leaf()
        .is_err());
        assert!(ReleaseEntry::Model {
            digest: hex::encode([1u8; 48]),
            signer: None,
            label: None
        }
        .to_leaf()
        .is_err());
        assert!(
            ReleaseEntry::from_leaf(br#"{"kind":"enclave","measurement":"00","x":1}"#).is_err()
        );
        assert!(ReleaseEntry::from_leaf(br#"{"kind":"rootkit"}"#).is_err());
        let e = ReleaseEntry::BrokerPolicy {
            digest: format!("sha256:{}", hex::encode([4u8; 32])),
            label: Some("prod".into()),
        };
        assert_eq!(ReleaseEntry::from_leaf(&e.to_leaf().unwrap()).unwrap(), e);
    }
}
