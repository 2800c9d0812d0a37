//! Durable governance state (issue 21, item 4): the client budgets and the audit chain's head survive a
//! restart of the enclave, and a host cannot roll them back.
//!
//! ```text
//! state key = HKDF-SHA384(salt = "cloister-enclave-state-v1", ikm = the first model's key,
//!                         info = config_digest ‖ label)                         // inside the enclave only
//! blob      = "CLSTATE1" ‖ version (u64 LE) ‖ nonce (12) ‖ AES-256-GCM(state key, nonce,
//!             aad = "cloister-enclave-state-v1" ‖ label ‖ version (u64 LE), JSON(SavedState))
//! start:    broker Open{label} → key + anchor {version, digest};  version 0: empty state; else
//!           GET {host}/state/{label}/{version} → SHA-384(blob) must equal the anchor's digest → open → restore
//! commit:   every commit_every_secs when spending moved, and at shutdown:
//!           seal version+1 → PUT {host}/state/{label}/{version+1} → broker Commit{label, version+1, digest}
//! ```
//!
//! The host stores the blobs but cannot read or forge one (AEAD under a key only enclaves the owner's policy
//! accepts can derive), nor hand back an older one (the broker's anchor names the latest digest), nor skip
//! one (a commit advances the anchor by exactly one version). A blob stored but not yet anchored (a crash
//! between the two steps) is simply not used: the anchor still names the previous one, which the host keeps.
//! What a crash can forget is the spending since the last commit (at most `commit_every_secs`); what a host
//! can buy by restarting the enclave under a new label (empty state) is bounded by the broker's
//! `releases_per_model_per_hour`. While commits fail, budgeted requests are refused (503): spending that a
//! restart would forget is spending without a budget.

use std::time::Duration;

use bytes::Bytes;
use cloister_attestation::evidence::Sha384;
use cloister_models::{ModelDigest, ModelKey};
use cloister_proto::key_release::{StateAnchor, StateRequest};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::blobs::{BlobError, BlobService};
use crate::firmware::Attester;
use crate::governance::BudgetsState;
use crate::governance::Governance;
use crate::key_release::{Answer, BrokerClient, KeyReleaseError};

/// Largest state blob (the host store's limit too).
pub const MAX_STATE_BLOB: usize = 4 * 1024 * 1024;
const MAGIC: &[u8; 8] = b"CLSTATE1";
const DOMAIN: &[u8] = b"cloister-enclave-state-v1";
/// Consecutive failed commits before budgeted requests are refused (a passing hiccup is not an outage).
const FAILURES_BEFORE_REFUSING: u32 = 2;

/// Why the durable state could not be resumed or committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The system RNG or the AEAD failed.
    #[error("state sealing failed ({0})")]
    Crypto(&'static str),
    /// The blob does not open under this enclave's state key (altered, another instance's, or not ours).
    #[error("the state blob v{version} does not open: altered, or not this instance's")]
    Unauthentic {
        /// The version asked for.
        version: u64,
    },
    /// The host's blob is not the one the broker anchored.
    #[error(
        "the host's state blob v{version} is not the one the key broker anchored (SHA-384 {found}, anchored \
         {expected}): an older or altered state"
    )]
    NotAnchored {
        /// The version.
        version: u64,
        /// The anchor's digest.
        expected: String,
        /// The blob's digest.
        found: String,
    },
    /// The host does not have the anchored blob.
    #[error("the host has no state blob v{version} (the key broker anchored it): state lost or withheld")]
    Missing {
        /// The version.
        version: u64,
    },
    /// The host answered the store request with another status.
    #[error("the host's state store answered HTTP {status} to {what}")]
    HostStatus {
        /// What was asked.
        what: &'static str,
        /// The status.
        status: u16,
    },
    /// Talking to the host failed.
    #[error("the host's state store")]
    Host(#[source] BlobError),
    /// The broker did not record the commit.
    #[error("the key broker did not record the state commit")]
    Broker(#[source] KeyReleaseError),
    /// The saved state does not decode.
    #[error("the saved state does not decode")]
    Encoding(#[source] serde_json::Error),
}

/// What is sealed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// The version this blob is.
    pub version: u64,
    /// Every budget account.
    pub budgets: BudgetsState,
    /// The audit chain's last line when saved: its sequence number and SHA-256 (hex).
    pub audit_head: Option<(u64, String)>,
}

/// The key that seals the state: derived from a model key, so only enclaves the owner's policy accepts
/// (the ones the broker releases that key to) can read or write it.
pub struct StateKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateKey").finish_non_exhaustive()
    }
}

struct Len32;

impl ring::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl StateKey {
    /// The state key of `label` under this configuration.
    pub fn derive(
        model_key: &ModelKey,
        config_digest: &Sha384,
        label: &str,
    ) -> Result<Self, StateError> {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA384, DOMAIN);
        let prk = salt.extract(model_key.expose_secret());
        let info = [&config_digest.0[..], label.as_bytes()];
        let okm = prk
            .expand(&info, Len32)
            .map_err(|_| StateError::Crypto("HKDF"))?;
        let mut out = Zeroizing::new([0u8; 32]);
        okm.fill(&mut out[..])
            .map_err(|_| StateError::Crypto("HKDF"))?;
        Ok(StateKey(out))
    }

    fn aead(&self) -> Result<LessSafeKey, StateError> {
        UnboundKey::new(&AES_256_GCM, &self.0[..])
            .map(LessSafeKey::new)
            .map_err(|_| StateError::Crypto("AES-256-GCM key"))
    }

    fn aad(label: &str, version: u64) -> Vec<u8> {
        let mut aad = DOMAIN.to_vec();
        aad.extend_from_slice(label.as_bytes());
        aad.extend_from_slice(&version.to_le_bytes());
        aad
    }

    /// Seals `plaintext` as `version` of `label`'s state.
    pub fn seal(&self, label: &str, version: u64, plaintext: &[u8]) -> Result<Vec<u8>, StateError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StateError::Crypto("RNG"))?;
        let mut body = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(label, version)),
                &mut body,
            )
            .map_err(|_| StateError::Crypto("seal"))?;
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&version.to_le_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&body);
        Ok(blob)
    }

    /// Opens `blob` as `version` of `label`'s state.
    pub fn open(
        &self,
        label: &str,
        version: u64,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let bad = StateError::Unauthentic { version };
        let rest = blob
            .strip_prefix(&MAGIC[..])
            .ok_or(StateError::Unauthentic { version })?;
        if rest.len() < 8 + NONCE_LEN || rest[..8] != version.to_le_bytes() {
            return Err(bad);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&rest[8..8 + NONCE_LEN]);
        let mut body = Zeroizing::new(rest[8 + NONCE_LEN..].to_vec());
        let len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(label, version)),
                &mut body,
            )
            .map_err(|_| StateError::Unauthentic { version })?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// `error: cause: cause…`, for the log and the 503 that budgeted requests get while commits fail.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn sha384(bytes: &[u8]) -> Sha384 {
    let mut out = [0u8; 48];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, bytes).as_ref());
    Sha384(out)
}

struct Progress {
    anchor: StateAnchor,
    /// `Budgets::changes` at the last commit.
    committed_changes: u64,
    failures: u32,
}

/// What a commit needs of the enclave: its governance (budgets, audit head), its attester and its
/// configuration's digest. Borrowed parts rather than the whole enclave, so that this module does not depend
/// on the runtime that owns it.
#[derive(Clone, Copy, Debug)]
pub struct EnclaveParts<'a> {
    /// Budgets and the audit log.
    pub governance: &'a Governance,
    /// Makes the evidence of commits.
    pub attester: &'a Attester,
    /// The measured configuration's digest (in the claims, and in the state key's derivation).
    pub config_digest: Sha384,
}

/// This instance's durable state: its label, key and anchor.
pub struct Durable {
    label: String,
    key: StateKey,
    /// The model whose key derived the state key; commits are attested under its policy.
    model: ModelDigest,
    every: Duration,
    progress: tokio::sync::Mutex<Progress>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Resumes `label`'s state at the broker's `anchor` (from the key release of `model`): the anchored blob
    /// from the host, checked against the anchor, opened and restored into the enclave's governance.
    pub async fn resume(
        enclave: EnclaveParts<'_>,
        blobs: &BlobService,
        label: String,
        model: ModelDigest,
        key: &ModelKey,
        anchor: StateAnchor,
        every: Duration,
    ) -> Result<Self, StateError> {
        let state_key = StateKey::derive(key, &enclave.config_digest, &label)?;
        if let (v, Some(expected)) = (anchor.version, anchor.digest) {
            let (status, blob) = blobs
                .small_request(
                    hyper::Method::GET,
                    &format!("/state/{label}/{v}"),
                    Bytes::new(),
                    MAX_STATE_BLOB,
                )
                .await
                .map_err(StateError::Host)?;
            match status.as_u16() {
                200 => {}
                404 => return Err(StateError::Missing { version: v }),
                s => {
                    return Err(StateError::HostStatus {
                        what: "GET",
                        status: s,
                    })
                }
            }
            // This blob and no other: the anchor is the broker's word on which one is the latest.
            let found = sha384(&blob);
            if !cloister_attestation::ct_eq(&found.0, &expected.0) {
                return Err(StateError::NotAnchored {
                    version: v,
                    expected: hex::encode(expected.0),
                    found: hex::encode(found.0),
                });
            }
            let plaintext = state_key.open(&label, v, &blob)?;
            let saved: SavedState =
                serde_json::from_slice(&plaintext).map_err(StateError::Encoding)?;
            if saved.version != v {
                return Err(StateError::Unauthentic { version: v });
            }
            enclave.governance.budgets().restore(&saved.budgets);
            enclave.governance.resumed(v, saved.audit_head.as_ref());
        }
        enclave.governance.budgets().set_not_durable(None);
        Ok(Durable {
            label,
            key: state_key,
            model,
            every,
            progress: tokio::sync::Mutex::new(Progress {
                anchor,
                committed_changes: 0,
                failures: 0,
            }),
        })
    }

    /// Commits the state if spending moved since the last commit: sealed, stored at the host, anchored at
    /// the broker. Returns whether a commit was made.
    pub async fn commit(
        &self,
        enclave: EnclaveParts<'_>,
        broker: &BrokerClient,
        blobs: &BlobService,
    ) -> Result<bool, StateError> {
        let mut progress = self.progress.lock().await;
        let budgets = enclave.governance.budgets();
        let changes = budgets.changes();
        if changes == progress.committed_changes {
            return Ok(false);
        }
        let version = progress.anchor.version.saturating_add(1);
        let saved = SavedState {
            version,
            budgets: budgets.snapshot(),
            audit_head: Some(enclave.governance.audit_head()),
        };
        let plaintext = Zeroizing::new(serde_json::to_vec(&saved).map_err(StateError::Encoding)?);
        let blob = self.key.seal(&self.label, version, &plaintext)?;
        let digest = sha384(&blob);
        // Stored first, anchored second: a crash in between leaves the anchor on the previous blob, which
        // the host still keeps.
        let (status, _) = blobs
            .small_request(
                hyper::Method::PUT,
                &format!("/state/{}/{version}", self.label),
                Bytes::from(blob),
                4096,
            )
            .await
            .map_err(StateError::Host)?;
        if status.as_u16() != 204 {
            return Err(StateError::HostStatus {
                what: "PUT",
                status: status.as_u16(),
            });
        }
        let answer = broker
            .exchange(
                enclave.attester.clone(),
                &self.model,
                enclave.config_digest,
                Some(StateRequest::Commit {
                    label: self.label.clone(),
                    version,
                    digest,
                }),
            )
            .await
            .map_err(StateError::Broker)?;
        let Answer::Committed(anchor) = answer else {
            return Err(StateError::Broker(KeyReleaseError::Unexpected {
                expected: "Committed",
            }));
        };
        progress.anchor = anchor;
        progress.committed_changes = changes;
        Ok(true)
    }

    /// How often to commit (`[state] commit_every_secs`).
    pub fn every(&self) -> Duration {
        self.every
    }

    /// One commit, its outcome logged and reflected in whether budgeted requests are admitted.
    pub async fn commit_logged(
        &self,
        enclave: EnclaveParts<'_>,
        broker: &BrokerClient,
        blobs: &BlobService,
    ) {
        let result = self.commit(enclave, broker, blobs).await;
        let mut progress = self.progress.lock().await;
        match result {
            Ok(committed) => {
                progress.failures = 0;
                enclave.governance.budgets().set_not_durable(None);
                if committed {
                    tracing::debug!(label = %self.label, version = progress.anchor.version, "state committed");
                }
            }
            Err(e) => {
                progress.failures = progress.failures.saturating_add(1);
                let why = error_chain(&e);
                tracing::warn!(label = %self.label, failures = progress.failures, "state commit failed: {why}");
                if progress.failures >= FAILURES_BEFORE_REFUSING {
                    enclave.governance.budgets().set_not_durable(Some(why));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_opens_only_as_its_label_and_version_under_its_key() {
        let key = ModelKey::from_bytes(&[7; 32]);
        let config = Sha384([1; 48]);
        let k = StateKey::derive(&key, &config, "pod-0").unwrap();
        let blob = k.seal("pod-0", 3, b"{\"x\":1}").unwrap();
        assert_eq!(&k.open("pod-0", 3, &blob).unwrap()[..], b"{\"x\":1}");
        // Another version, label, configuration or model key: nothing opens.
        assert!(k.open("pod-0", 2, &blob).is_err());
        assert!(k.open("pod-1", 3, &blob).is_err());
        let other_config = StateKey::derive(&key, &Sha384([2; 48]), "pod-0").unwrap();
        assert!(other_config.open("pod-0", 3, &blob).is_err());
        let other_key =
            StateKey::derive(&ModelKey::from_bytes(&[8; 32]), &config, "pod-0").unwrap();
        assert!(other_key.open("pod-0", 3, &blob).is_err());
        // A flipped byte anywhere, or a truncation.
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(k.open("pod-0", 3, &bad).is_err(), "byte {i}");
        }
        assert!(k.open("pod-0", 3, &blob[..blob.len() - 1]).is_err());
        assert!(format!("{k:?}").contains("StateKey"));
    }
}
