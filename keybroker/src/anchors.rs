//! Durable-state anchors and the key-release rate limit: the broker's side of issue 21, item 4.
//!
//! An enclave's governance state (client budgets, the audit chain's head) is sealed inside the enclave and
//! stored by the untrusted host. On its own the host could hand a restarted enclave an older blob (budgets
//! spent again) or none (budgets reset). The broker is the one party the enclave must talk to at every
//! start, so it keeps the rollback counter: per **state id** — the attested identity (MEASUREMENT,
//! HOST_DATA, configuration digest) and the instance label — the version and SHA-384 of the latest blob the
//! enclave committed. A restarted enclave learns the anchor with its key and accepts only that blob.
//!
//! ```text
//! state id = SHA-384("cloister-state-id-v1" ‖ MEASUREMENT ‖ HOST_DATA ‖ config_digest ‖ label)
//! file     = { "<hex state id>": { "version": N, "digest": "sha384:<hex>", "label": "…" }, … }
//! ```
//!
//! A commit advances an anchor by exactly one version and is written to disk (temporary file, fsync,
//! rename) before it is acknowledged: an acknowledged commit survives a broker crash. A host can still start
//! an instance under a new label with empty state; every such start is a key release, which
//! [`ReleaseLimiter`] bounds per model.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cloister_attestation::evidence::{Sha384, VerifiedEvidence};
use cloister_proto::key_release::StateAnchor;
use serde::{Deserialize, Serialize};

use crate::Error;

const STATE_ID_DOMAIN: &[u8] = b"cloister-state-id-v1";
/// Largest anchors file read at start (about 100,000 anchors).
const MAX_ANCHORS_FILE: u64 = 16 * 1024 * 1024;

/// The state id of `label` for the enclave `verified` attests.
pub(crate) fn state_id(verified: &VerifiedEvidence, label: &str) -> [u8; 48] {
    let report = verified.report().report();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA384);
    ctx.update(STATE_ID_DOMAIN);
    ctx.update(&report.measurement);
    ctx.update(&report.host_data);
    ctx.update(&verified.claims().config_digest.0);
    ctx.update(label.as_bytes());
    let mut out = [0u8; 48];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u64,
    digest: String,
    label: String,
}

/// A commit that is not the anchor's next version.
#[derive(Debug)]
pub(crate) struct Conflict {
    /// The anchor's version now.
    pub(crate) current: u64,
}

/// The anchors, in memory and in their file.
#[derive(Debug)]
pub(crate) struct Anchors {
    path: PathBuf,
    records: Mutex<BTreeMap<String, Record>>,
}

impl Anchors {
    /// Loads `path` (absent: no anchors yet). A file that does not parse is an error: starting over would
    /// reset every instance's rollback counter.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let records = match std::fs::File::open(path) {
            Ok(file) => {
                let mut text = String::new();
                file.take(MAX_ANCHORS_FILE + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| bad(format!("cannot read the state anchors: {e}")))?;
                if text.len() as u64 > MAX_ANCHORS_FILE {
                    return Err(bad(format!(
                        "the state anchors file is larger than {MAX_ANCHORS_FILE} bytes"
                    )));
                }
                serde_json::from_str(&text)
                    .map_err(|e| bad(format!("the state anchors do not parse: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(bad(format!("cannot open the state anchors: {e}"))),
        };
        Ok(Anchors {
            path: path.to_path_buf(),
            records: Mutex::new(records),
        })
    }

    /// The anchor of `id` (version 0 and no digest when nothing was committed).
    pub(crate) fn get(&self, id: &[u8; 48]) -> StateAnchor {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records
            .get(&hex::encode(id))
            .map_or_else(StateAnchor::default, |r| StateAnchor {
                version: r.version,
                digest: parse_digest(&r.digest),
            })
    }

    /// Advances `id` to `version` (which must be the current one plus one) with `digest`, on disk first.
    pub(crate) fn commit(
        &self,
        id: &[u8; 48],
        label: &str,
        version: u64,
        digest: Sha384,
    ) -> Result<Result<StateAnchor, Conflict>, std::io::Error> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let key = hex::encode(id);
        let current = records.get(&key).map_or(0, |r| r.version);
        if current.checked_add(1) != Some(version) {
            return Ok(Err(Conflict { current }));
        }
        let previous = records.insert(
            key.clone(),
            Record {
                version,
                digest: format!("sha384:{}", hex::encode(digest.0)),
                label: label.to_owned(),
            },
        );
        if let Err(e) = self.persist(&records) {
            // Not on disk: not committed.
            match previous {
                Some(p) => records.insert(key, p),
                None => records.remove(&key),
            };
            return Err(e);
        }
        Ok(Ok(StateAnchor {
            version,
            digest: Some(digest),
        }))
    }

    fn persist(&self, records: &BTreeMap<String, Record>) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let text = serde_json::to_vec_pretty(records).map_err(std::io::Error::other)?;
        let mut name = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut name)
            .map_err(|_| std::io::Error::other("the system RNG failed"))?;
        let tmp = dir.join(format!(".state-anchors-{}", hex::encode(name)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let written = f.write_all(&text).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::File::open(dir).and_then(|d| d.sync_all())
    }
}

fn parse_digest(text: &str) -> Option<Sha384> {
    let mut out = [0u8; 48];
    hex::decode_to_slice(text.strip_prefix("sha384:")?, &mut out).ok()?;
    Some(Sha384(out))
}

/// Key releases per model in a sliding hour (`limits.releases_per_model_per_hour`): each enclave start is
/// one release, so this bounds how often a host can restart an enclave (or start one under a new state
/// label, with empty budgets). State commits release no key and are not counted.
#[derive(Debug)]
pub(crate) struct ReleaseLimiter {
    per_hour: u32,
    releases: Mutex<HashMap<[u8; 48], VecDeque<i64>>>,
}

impl ReleaseLimiter {
    pub(crate) fn new(per_hour: u32) -> Self {
        ReleaseLimiter {
            per_hour,
            releases: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a release of `model` at `now`, or says how many there were in the last hour.
    pub(crate) fn admit(&self, model: &[u8; 48], now: i64) -> Result<(), u32> {
        let mut releases = self.releases.lock().unwrap_or_else(PoisonError::into_inner);
        let times = releases.entry(*model).or_default();
        while times.front().is_some_and(|&t| t <= now - 3600) {
            times.pop_front();
        }
        if times.len() >= self.per_hour as usize {
            return Err(self.per_hour);
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn anchors_advance_by_one_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-anchors.json");
        let anchors = Anchors::open(&path).unwrap();
        let id = [1u8; 48];
        assert_eq!(anchors.get(&id), StateAnchor::default());
        let d1 = Sha384([7; 48]);
        anchors.commit(&id, "a", 1, d1).unwrap().unwrap();
        // Not the next version: a conflict, nothing changes.
        assert_eq!(
            anchors
                .commit(&id, "a", 1, Sha384([8; 48]))
                .unwrap()
                .unwrap_err()
                .current,
            1
        );
        assert!(anchors.commit(&id, "a", 3, d1).unwrap().is_err());
        let reopened = Anchors::open(&path).unwrap();
        assert_eq!(
            reopened.get(&id),
            StateAnchor {
                version: 1,
                digest: Some(d1)
            }
        );
        // A damaged file is an error, never a fresh start.
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(Anchors::open(&path).is_err());
    }

    #[test]
    fn releases_are_limited_per_model_in_a_sliding_hour() {
        let limiter = ReleaseLimiter::new(2);
        let (a, b) = ([1u8; 48], [2u8; 48]);
        limiter.admit(&a, 1000).unwrap();
        limiter.admit(&a, 1001).unwrap();
        assert_eq!(limiter.admit(&a, 1002), Err(2));
        limiter.admit(&b, 1002).unwrap();
        limiter.admit(&a, 1000 + 3600).unwrap();
    }
}
