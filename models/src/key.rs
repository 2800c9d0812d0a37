//! [`ModelKey`], the secret that seals one model, and its public [`KeyId`].

use std::fmt;

#[cfg(feature = "sealing")]
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::digest::{Context, SHA384};
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of a model key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 16;

/// Domain-separation label of the key-id derivation.
const KEY_ID_LABEL: &[u8] = b"cloister-key-id-v1";

/// A 256-bit AES-256-GCM key that seals one model.
///
/// Secret: zeroized on drop, no `Clone`, no `Serialize`, `Debug` prints no bytes. The bytes live in
/// one heap allocation so that moving a `ModelKey` does not leave copies on the stack.
pub struct ModelKey {
    bytes: Box<[u8; KEY_LEN]>,
    id: KeyId,
}

impl ModelKey {
    /// Draws a fresh key from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, Error> {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        if rng.fill(&mut bytes[..]).is_err() {
            bytes.zeroize();
            return Err(Error::Rng);
        }
        Ok(Self::from_box(bytes))
    }

    /// Copies a key from `bytes` (the caller remains responsible for zeroizing its own copy).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut boxed = Box::new([0u8; KEY_LEN]);
        boxed.copy_from_slice(bytes);
        Self::from_box(boxed)
    }

    fn from_box(bytes: Box<[u8; KEY_LEN]>) -> Self {
        let id = KeyId::derive(&bytes);
        Self { bytes, id }
    }

    /// The raw key bytes.
    ///
    /// Secret: every call site must justify why it needs the bytes (wrapping the key for release
    /// to an attested enclave, writing it to the owner's keystore).
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The public identifier of this key (see [`KeyId`]).
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The ring AES-256-GCM key.
    ///
    /// ring does not zeroize its expanded key schedule on drop; keep the returned value short-lived.
    #[cfg(feature = "sealing")]
    pub(crate) fn aead_key(&self) -> Result<LessSafeKey, Error> {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.bytes[..]).map_err(|_| Error::Crypto)?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl Drop for ModelKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for ModelKey {}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelKey").finish_non_exhaustive()
    }
}

/// A public, non-secret identifier of a [`ModelKey`]:
/// the first 16 bytes of SHA-384(`"cloister-key-id-v1"` || key).
///
/// SHA-384 is one-way, so the id reveals nothing usable about the 256-bit key; it lets a reader
/// report "wrong key" before any decryption. It is not a security check on its own (the header is
/// untrusted and may carry any id); authentication of every chunk is.
#[derive(Clone, Copy)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    fn derive(key: &[u8; KEY_LEN]) -> Self {
        let mut ctx = Context::new(&SHA384);
        ctx.update(KEY_ID_LABEL);
        ctx.update(key);
        let digest = ctx.finish();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        Self(id)
    }

    /// Wraps raw key-id bytes (as found in a header).
    pub const fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key-id bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for KeyId {}

// Manual because `PartialEq` is manual (constant time); consistent with it: equal values hash equally.
impl std::hash::Hash for KeyId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn debug_prints_no_bytes() {
        let key = ModelKey::from_bytes(&[0xAB; KEY_LEN]);
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "ModelKey { .. }");
        assert!(!dbg.to_lowercase().contains("ab"));
    }

    #[test]
    fn key_id_is_derived_and_distinct() {
        let a = ModelKey::from_bytes(&[1; KEY_LEN]);
        let b = ModelKey::from_bytes(&[2; KEY_LEN]);
        assert_ne!(a.key_id(), b.key_id());
        assert_eq!(a.key_id(), ModelKey::from_bytes(&[1; KEY_LEN]).key_id());
        // Known answer: first 16 bytes of SHA-384("cloister-key-id-v1" || 0x01 * 32).
        let mut input = KEY_ID_LABEL.to_vec();
        input.extend_from_slice(&[1; KEY_LEN]);
        let full = ring::digest::digest(&SHA384, &input);
        assert_eq!(a.key_id().as_bytes(), &full.as_ref()[..KEY_ID_LEN]);
        // The id is not a prefix of the key.
        assert_ne!(&a.key_id().as_bytes()[..], &a.expose_secret()[..KEY_ID_LEN]);
    }

    #[test]
    fn generate_draws_fresh_keys() {
        let rng = SystemRandom::new();
        let a = ModelKey::generate(&rng).unwrap();
        let b = ModelKey::generate(&rng).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.key_id(), b.key_id());
    }
}
