//! `cloister log`: the release log's writer. A directory holds it:
//!
//! ```text
//! origin      the log's name (one line): the checkpoint origin and the verifier key's name
//! log.vkey    the verifier key clients pin (C2SP signed-note form, public)
//! entries     one release entry per line (the leaves, in order; only ever appended to)
//! checkpoint  the signed checkpoint over all entries (replaced atomically after each append)
//! ```
//!
//! The signing key (PKCS#8 Ed25519 PEM) lives elsewhere, where the operator keeps secrets; `append`
//! takes it as an argument. Every open re-verifies the checkpoint against `log.vkey` and the entries,
//! so a log edited by hand (an entry changed or dropped) is refused rather than re-signed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cloister_provenance::release::{ProvenEntry, ReleaseEntry, ReleaseProofs};
use cloister_provenance::tlog::{self, Checkpoint, Hash, NoteVerifier};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::error::{io, read_pkcs8_pem};
use crate::Error;

const ORIGIN: &str = "origin";
const VKEY: &str = "log.vkey";
const ENTRIES: &str = "entries";
const CHECKPOINT: &str = "checkpoint";

/// The log's Ed25519 signing key, with the verifier it answers to.
pub struct LogKey {
    pair: Ed25519KeyPair,
    verifier: NoteVerifier,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl LogKey {
    /// Reads the PKCS#8 PEM key for the log named `origin`.
    pub fn from_pem_file(path: &Path, origin: &str) -> Result<Self, Error> {
        let der = read_pkcs8_pem(path, "")?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| Error::Key {
            path: path.to_owned(),
            reason: format!("not an Ed25519 PKCS#8 key: {e}"),
        })?;
        Self::from_pair(pair, origin)
    }

    fn from_pair(pair: Ed25519KeyPair, origin: &str) -> Result<Self, Error> {
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| Error::Key {
                path: PathBuf::from("(log key)"),
                reason: "Ed25519 public key is not 32 bytes".into(),
            })?;
        let verifier = NoteVerifier::new(origin, public)?;
        Ok(Self { pair, verifier })
    }

    /// The public verifier key.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    fn sign(&self, cp: &Checkpoint) -> String {
        let body = cp.body();
        let sig = self.pair.sign(body.as_bytes());
        format!("{body}\n{}", self.verifier.signature_line(sig.as_ref()))
    }
}

/// An open, verified release log.
pub struct ReleaseLog {
    dir: PathBuf,
    verifier: NoteVerifier,
    leaves: Vec<String>,
    hashes: Vec<Hash>,
    note: String,
    checkpoint: Checkpoint,
}

fn log_err(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Log {
        dir: dir.to_owned(),
        reason: reason.into(),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old or the new
/// content, never a torn one.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

impl ReleaseLog {
    /// Creates a log named `origin` in `dir` (which must not exist or be empty) and its signing key at
    /// `key_out` (created, never overwritten, mode 0600). Returns the verifier key clients pin.
    pub fn init(dir: &Path, origin: &str, key_out: &Path) -> Result<NoteVerifier, Error> {
        if dir.exists() && fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
            return Err(log_err(
                dir,
                "exists and is not empty; a log is created once",
            ));
        }
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| log_err(dir, "the system RNG failed"))?;
        let pem = Zeroizing::new(
            pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8.as_ref())
                .map_err(|e| log_err(dir, e.to_string()))?,
        );
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| log_err(dir, format!("ring refused its own key: {e}")))?;
        let key = LogKey::from_pair(pair, origin)?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(key_out)
                .map_err(io(key_out))?;
            f.write_all(pem.as_bytes()).map_err(io(key_out))?;
            f.sync_all().map_err(io(key_out))?;
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        replace(&dir.join(ORIGIN), format!("{origin}\n").as_bytes())?;
        replace(&dir.join(VKEY), format!("{}\n", key.verifier).as_bytes())?;
        replace(&dir.join(ENTRIES), b"")?;
        let empty = Checkpoint {
            origin: origin.to_owned(),
            size: 0,
            root: tlog::root(&[]),
        };
        replace(&dir.join(CHECKPOINT), key.sign(&empty).as_bytes())?;
        Ok(key.verifier)
    }

    /// Opens a log and checks it: the checkpoint verifies under `log.vkey` and commits to exactly the
    /// entries on disk, each of which parses.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let p = dir.join(name);
            fs::read_to_string(&p).map_err(io(&p))
        };
        let origin = read(ORIGIN)?.trim().to_owned();
        let verifier = NoteVerifier::parse(&read(VKEY)?)?;
        if verifier.name() != origin {
            return Err(log_err(
                dir,
                format!(
                    "log.vkey names {:?}, the origin is {origin:?}",
                    verifier.name()
                ),
            ));
        }
        let note = read(CHECKPOINT)?;
        let checkpoint = Checkpoint::verify(&note, &verifier)?;
        let text = read(ENTRIES)?;
        let leaves: Vec<String> = text.lines().map(str::to_owned).collect();
        for (i, leaf) in leaves.iter().enumerate() {
            ReleaseEntry::from_leaf(leaf.as_bytes())
                .map_err(|e| log_err(dir, format!("entry {i}: {e}")))?;
        }
        let hashes: Vec<Hash> = leaves
            .iter()
            .map(|l| tlog::leaf_hash(l.as_bytes()))
            .collect();
        if checkpoint.size != leaves.len() as u64 || checkpoint.root != tlog::root(&hashes) {
            return Err(log_err(
                dir,
                format!(
                    "the checkpoint covers {} entries with root {}, the entries file holds {} with root {}: \
                     it was edited outside `cloister log`, or an append was interrupted",
                    checkpoint.size,
                    hex::encode(checkpoint.root),
                    leaves.len(),
                    hex::encode(tlog::root(&hashes))
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
            verifier,
            leaves,
            hashes,
            note,
            checkpoint,
        })
    }

    /// The verifier key clients pin.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The current checkpoint and its signed note.
    pub fn checkpoint(&self) -> (&Checkpoint, &str) {
        (&self.checkpoint, &self.note)
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.leaves.iter().map(String::as_str)
    }

    /// Appends an entry and signs the new checkpoint with `key` (which must be the log's). An entry
    /// already in the log is not appended twice; its index is returned.
    pub fn append(&mut self, entry: &ReleaseEntry, key: &LogKey) -> Result<u64, Error> {
        if key.verifier != self.verifier {
            return Err(log_err(
                &self.dir,
                format!(
                    "the key answers to {}, the log to {}",
                    key.verifier, self.verifier
                ),
            ));
        }
        let leaf = String::from_utf8(entry.to_leaf()?)
            .map_err(|_| log_err(&self.dir, "an entry is not UTF-8"))?;
        if let Some(i) = self.leaves.iter().position(|l| *l == leaf) {
            return Ok(i as u64);
        }
        let mut hashes = self.hashes.clone();
        hashes.push(tlog::leaf_hash(leaf.as_bytes()));
        let checkpoint = Checkpoint {
            origin: self.verifier.name().to_owned(),
            size: hashes.len() as u64,
            root: tlog::root(&hashes),
        };
        let note = key.sign(&checkpoint);
        let path = self.dir.join(ENTRIES);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(format!("{leaf}\n").as_bytes())
            .map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        replace(&self.dir.join(CHECKPOINT), note.as_bytes())?;
        self.leaves.push(leaf);
        self.hashes = hashes;
        self.note = note;
        self.checkpoint = checkpoint;
        Ok(self.checkpoint.size - 1)
    }

    /// Inclusion proofs, against the current checkpoint, for the entries `select` keeps.
    pub fn proofs(&self, select: impl Fn(&ReleaseEntry) -> bool) -> ReleaseProofs {
        let entries = self
            .leaves
            .iter()
            .enumerate()
            .filter(|(_, l)| ReleaseEntry::from_leaf(l.as_bytes()).is_ok_and(|e| select(&e)))
            .map(|(i, l)| ProvenEntry {
                index: i as u64,
                entry: l.clone(),
                proof: tlog::inclusion_proof(i, &self.hashes)
                    .unwrap_or_default()
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
            .collect();
        ReleaseProofs {
            checkpoint: self.note.clone(),
            entries,
        }
    }

    /// Checks that `old_note`, a checkpoint of this log someone kept, is a prefix of the current one,
    /// through a consistency proof (what a witness without the entries checks). Returns the old size.
    pub fn check_consistency(&self, old_note: &str) -> Result<u64, Error> {
        let old = Checkpoint::verify(old_note, &self.verifier)?;
        let size =
            usize::try_from(old.size).map_err(|_| log_err(&self.dir, "old size overflows"))?;
        if size > self.hashes.len() {
            return Err(log_err(
                &self.dir,
                format!(
                    "the old checkpoint has {} entries, the log only {}: the log was truncated",
                    old.size,
                    self.hashes.len()
                ),
            ));
        }
        let proof = if size == 0 {
            Vec::new()
        } else {
            tlog::consistency_proof(size, &self.hashes).unwrap_or_default()
        };
        tlog::verify_consistency(
            old.size,
            self.checkpoint.size,
            &old.root,
            &self.checkpoint.root,
            &proof,
        )?;
        Ok(old.size)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn model(n: u8) -> ReleaseEntry {
        ReleaseEntry::Model {
            digest: format!("sha384:{}", hex::encode([n; 48])),
            signer: None,
            label: None,
        }
    }

    #[test]
    fn appends_prove_and_stay_consistent_and_edits_are_caught() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let key_path = tmp.path().join("log.key");
        let v = ReleaseLog::init(&dir, "example.org/releases", &key_path).unwrap();
        assert!(ReleaseLog::init(&dir, "again", &tmp.path().join("k2")).is_err());
        let key = LogKey::from_pem_file(&key_path, "example.org/releases").unwrap();
        let mut log = ReleaseLog::open(&dir).unwrap();
        let empty_note = log.checkpoint().1.to_owned();
        assert_eq!(log.append(&model(1), &key).unwrap(), 0);
        let old_note = log.checkpoint().1.to_owned();
        assert_eq!(log.append(&model(2), &key).unwrap(), 1);
        assert_eq!(log.append(&model(1), &key).unwrap(), 0, "no duplicate");
        assert_eq!(log.append(&model(3), &key).unwrap(), 2);

        let log = ReleaseLog::open(&dir).unwrap();
        assert_eq!(log.check_consistency(&old_note).unwrap(), 1);
        assert_eq!(log.check_consistency(&empty_note).unwrap(), 0);
        let proofs = serde_json::to_vec(&log.proofs(|_| true)).unwrap();
        let verified = ReleaseProofs::verify(&proofs, &v).unwrap();
        assert_eq!(verified.entries().len(), 3);
        assert_eq!(verified.require_model(&[2; 48], None).unwrap(), 1);

        // Another log's key cannot append.
        let other = tmp.path().join("other");
        ReleaseLog::init(
            &other,
            "example.org/releases",
            &tmp.path().join("other.key"),
        )
        .unwrap();
        let other_key =
            LogKey::from_pem_file(&tmp.path().join("other.key"), "example.org/releases").unwrap();
        let mut log = ReleaseLog::open(&dir).unwrap();
        assert!(log.append(&model(4), &other_key).is_err());

        // An entry rewritten by hand: refused at open.
        let entries = fs::read_to_string(dir.join(ENTRIES)).unwrap();
        fs::write(
            dir.join(ENTRIES),
            entries.replace(&hex::encode([2u8; 48]), &hex::encode([9u8; 48])),
        )
        .unwrap();
        let err = ReleaseLog::open(&dir).err().unwrap().to_string();
        assert!(err.contains("edited outside"), "{err}");
        // A log rewritten and re-signed from scratch is caught by an old checkpoint's holder.
        fs::write(dir.join(ENTRIES), entries).unwrap();
        let forged = tmp.path().join("forged");
        fs::create_dir(&forged).unwrap();
        for f in [ORIGIN, VKEY, ENTRIES, CHECKPOINT] {
            fs::copy(dir.join(f), forged.join(f)).unwrap();
        }
        let mut forged_log = ReleaseLog::open(&forged).unwrap();
        fs::write(
            forged.join(ENTRIES),
            format!(
                "{}\n",
                String::from_utf8(model(7).to_leaf().unwrap()).unwrap()
            ),
        )
        .unwrap();
        let single = vec![tlog::leaf_hash(&model(7).to_leaf().unwrap())];
        let cp = Checkpoint {
            origin: "example.org/releases".into(),
            size: 1,
            root: tlog::root(&single),
        };
        replace(&forged.join(CHECKPOINT), key.sign(&cp).as_bytes()).unwrap();
        forged_log = ReleaseLog::open(&forged).unwrap_or(forged_log);
        forged_log.append(&model(8), &key).unwrap();
        let log = ReleaseLog::open(&forged).unwrap();
        let err = log.check_consistency(&old_note).unwrap_err().to_string();
        assert!(err.contains("consistency proof"), "{err}");
    }
}
