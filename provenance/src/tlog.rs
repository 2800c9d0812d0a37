//! Transparency-log primitives: RFC 6962 / RFC 9162 Merkle trees (leaf and node hashes, inclusion and
//! consistency proofs) and C2SP signed checkpoints (`tlog-checkpoint` in a `signed-note`, Ed25519).
//!
//! These are the formats Rekor v2, the Go checksum database and the C2SP witness network speak, so a
//! release log kept with them can be witnessed by existing tools, and the same inclusion-proof check
//! serves a Sigstore bundle's Rekor entry (docs/provenance.md). Both sides live here: the proof makers
//! ([`root`], [`inclusion_proof`], [`consistency_proof`], run by the log's writer over its leaf hashes)
//! and the checks clients run offline ([`verify_inclusion`], [`verify_consistency`],
//! [`Checkpoint::verify`]). No I/O, no private key: a checkpoint is signed by the caller.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest::{digest, Context, SHA256};
use ring::signature::{UnparsedPublicKey, ED25519};

use crate::Error;

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// Largest signed note accepted (a checkpoint is three lines and a few signatures).
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// Longest proof path accepted: a tree of 2^63 leaves needs 63 hashes (one more for a consistency proof
/// whose old size is a power of two, which the verifier adds itself).
const MAX_PATH: usize = 64;
/// The signed-note algorithm byte of Ed25519 (C2SP signed-note).
const ALG_ED25519: u8 = 0x01;

/// RFC 6962 §2.1: the hash of a leaf, `SHA-256(0x00 || data)`. The prefix keeps a leaf from being
/// passed off as an interior node (second-preimage resistance).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0x00]);
    c.update(data);
    to_hash(c.finish().as_ref())
}

/// RFC 6962 §2.1: an interior node, `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0x01]);
    c.update(left);
    c.update(right);
    to_hash(c.finish().as_ref())
}

fn to_hash(b: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(b);
    h
}

/// Largest power of two strictly below `n` (n ≥ 2): where RFC 6962 splits a tree.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of `leaves` (leaf hashes, in log order); the empty tree hashes to SHA-256("").
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => to_hash(digest(&SHA256, b"").as_ref()),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// RFC 6962 §2.1.1 `PATH(m, D[n])`: the audit path of leaf `index`, or `None` when out of range.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    (index < leaves.len()).then(|| path(index, leaves))
}

fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    let (mut p, other) = if m < k {
        (path(m, &leaves[..k]), root(&leaves[k..]))
    } else {
        (path(m - k, &leaves[k..]), root(&leaves[..k]))
    };
    p.push(other);
    p
}

/// RFC 6962 §2.1.2 `PROOF(m, D[n])`: that the first `old_size` leaves are a prefix of `leaves`. `None`
/// unless `0 < old_size <= leaves.len()`.
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    (old_size > 0 && old_size <= leaves.len()).then(|| subproof(old_size, leaves, true))
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n);
    let (mut p, other) = if m <= k {
        (subproof(m, &leaves[..k], whole), root(&leaves[k..]))
    } else {
        (subproof(m - k, &leaves[k..], false), root(&leaves[..k]))
    };
    p.push(other);
    p
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of `size` leaves whose hash is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    let fail = |why: &str| {
        Error::Log(format!(
            "inclusion proof of leaf {index} in a tree of {size}: {why}"
        ))
    };
    if index >= size {
        return Err(fail("the index is not below the tree size"));
    }
    if proof.len() > MAX_PATH {
        return Err(fail("the path is longer than any tree has"));
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return Err(fail("the path is longer than the tree is deep"));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(fail("the path is shorter than the tree is deep"));
    }
    if r != *root {
        return Err(fail("the path leads to another root"));
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `old_size` leaves hashing to `old_root` is a prefix of the
/// tree of `new_size` leaves hashing to `new_root`: the log only appended.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), Error> {
    let fail = |why: &str| {
        Error::Log(format!(
            "consistency proof from size {old_size} to {new_size}: {why}"
        ))
    };
    if old_size > new_size {
        return Err(fail("the log shrank"));
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(fail("same size, but different roots or a non-empty proof"))
        };
    }
    if old_size == 0 {
        // Every tree extends the empty one; RFC 9162 gives no proof for it.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(fail("a proof from the empty tree must be empty"))
        };
    }
    if proof.len() > MAX_PATH {
        return Err(fail("the path is longer than any tree has"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(fail("the proof is empty"));
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(fail("the path is longer than the tree is deep"));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(fail("the path is shorter than the tree is deep"));
    }
    if fr != *old_root {
        return Err(fail("the path does not lead to the old root"));
    }
    if sr != *new_root {
        return Err(fail("the path does not lead to the new root"));
    }
    Ok(())
}

/// A signed-note verifier key (C2SP signed-note, the Go `note` format):
/// `<name>+<key hash, 8 hex digits>+<base64(0x01 || Ed25519 public key)>`. The key hash is the first four
/// bytes of SHA-256(name || "\n" || 0x01 || key), which a signature line repeats.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_hash: [u8; 4],
    public_key: [u8; 32],
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_hash),
            STANDARD.encode(key)
        )
    }
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '+')
}

impl NoteVerifier {
    /// A verifier for `name`'s Ed25519 `public_key`.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, Error> {
        if !valid_key_name(name) {
            return Err(Error::Log(format!(
                "note key name {name:?}: must be 1-256 characters, no spaces and no '+'"
            )));
        }
        let mut c = Context::new(&SHA256);
        c.update(name.as_bytes());
        c.update(&[b'\n', ALG_ED25519]);
        c.update(&public_key);
        let mut key_hash = [0u8; 4];
        key_hash.copy_from_slice(&c.finish().as_ref()[..4]);
        Ok(Self {
            name: name.to_owned(),
            key_hash,
            public_key,
        })
    }

    /// Parses the `name+hash+key` text; the hash must be the one the name and key give.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Log(format!("note verifier key {text:?}: {why}"));
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<hash>+<key>"));
        };
        let key = STANDARD
            .decode(key)
            .map_err(|e| bad(&format!("key is not base64: {e}")))?;
        let Some((&ALG_ED25519, public_key)) = key.split_first() else {
            return Err(bad("only Ed25519 keys (algorithm byte 0x01) are accepted"));
        };
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let verifier = Self::new(name, public_key)?;
        if hash != hex::encode(verifier.key_hash) {
            return Err(bad(&format!(
                "key hash is {hash}, but the name and key give {}",
                hex::encode(verifier.key_hash)
            )));
        }
        Ok(verifier)
    }

    /// The key's name (the log's origin, by this crate's convention).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signature line for `signature` by this key over a note body.
    pub fn signature_line(&self, signature: &[u8]) -> String {
        let mut sig = self.key_hash.to_vec();
        sig.extend_from_slice(signature);
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(sig))
    }
}

/// A checkpoint (C2SP tlog-checkpoint): the log's origin, its size and root hash, as a signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, unique per log (a schemeless URL by convention).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Merkle tree hash of those leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body that is signed: `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Verifies a signed checkpoint note against `verifier` and parses it. The note must carry a
    /// signature line of the pinned key that verifies over the body; other signature lines (cosigners,
    /// witnesses) are allowed and not checked. The origin must be the verifier's name, so a checkpoint
    /// of one log cannot be replayed as another's.
    pub fn verify(note: &str, verifier: &NoteVerifier) -> Result<Self, Error> {
        let cp = Self::verify_signature(
            note,
            &verifier.name,
            Some(&verifier.name),
            &verifier.key_hash,
            |body, sig| {
                UnparsedPublicKey::new(&ED25519, verifier.public_key)
                    .verify(body, sig)
                    .is_ok()
            },
        )?;
        if cp.origin != verifier.name {
            return Err(Error::Log(format!(
                "checkpoint: origin is {:?}, expected {:?} (the pinned key's name)",
                cp.origin, verifier.name
            )));
        }
        Ok(cp)
    }

    /// Verifies a checkpoint signed by a key known by its 4-byte key hash only (a Sigstore log: Rekor
    /// names its signature lines after the log, and its key hash is the first four bytes of the log id,
    /// SHA-256 of the key's DER), with `verify(body, signature)`. The origin is not checked: a Rekor
    /// origin carries the tree's id, and the key is what is pinned.
    pub fn verify_with(
        note: &str,
        key_hash: &[u8; 4],
        verify: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<Self, Error> {
        Self::verify_signature(note, "the log's key", None, key_hash, verify)
    }

    fn verify_signature(
        note: &str,
        key_label: &str,
        name_filter: Option<&str>,
        key_hash: &[u8; 4],
        verify: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<Self, Error> {
        let bad = |why: String| Error::Log(format!("checkpoint: {why}"));
        if note.len() > MAX_NOTE_LEN {
            return Err(bad(format!("{} bytes, over {MAX_NOTE_LEN}", note.len())));
        }
        let split_at = note
            .find("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures".into()))?;
        let (body, signatures) = (&note[..split_at + 1], &note[split_at + 2..]);
        if !signatures.ends_with('\n') {
            return Err(bad("the signature block does not end with a newline".into()));
        }
        let mut verified = false;
        for line in signatures.lines() {
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
                bad(format!(
                    "signature line {line:?} does not start with \"— \""
                ))
            })?;
            let (name, sig) = rest
                .rsplit_once(' ')
                .ok_or_else(|| bad(format!("signature line {line:?} has no signature")))?;
            let sig = STANDARD
                .decode(sig)
                .map_err(|e| bad(format!("signature of {name:?} is not base64: {e}")))?;
            let line_name = name;
            if name_filter.is_some_and(|n| n != line_name)
                || sig.len() < 4
                || sig[..4] != key_hash[..]
            {
                continue;
            }
            if !verify(body.as_bytes(), &sig[4..]) {
                return Err(bad(format!("the signature of {line_name} does not verify")));
            }
            verified = true;
        }
        if !verified {
            return Err(bad(format!("no signature by the pinned key {key_label}")));
        }
        let mut lines = body.lines();
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("the body has fewer than three lines".into()));
        };
        if size.is_empty() || size.starts_with('0') && size != "0" {
            return Err(bad(format!("size {size:?} is not a canonical decimal")));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad(format!("size {size:?} is not a number")))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad(format!("root {root:?} is not 32 bytes of base64")))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
