//! The enclave's record-signing key: Ed25519 (COSE `EdDSA`), made at start with ring, never leaving the
//! enclave process. Its public half (32 bytes) goes into the attested claims (`receipt_key`), so a verifier
//! that accepts the evidence knows which key speaks for the enclave.
//!
//! Why Ed25519 and not ECDSA P-384 (the curve of the AMD report): every inference response carries a
//! signed receipt, so the signature is on the request path. On this machine ring signs with P-384 in
//! 266 µs and with Ed25519 in 16 µs; P-384 was half of the enclave's CPU per request on a small model
//! (`docs/performance.md`). Ed25519 signatures are deterministic, so no RNG is needed per signature, and
//! 128-bit security matches the SHA-256 digests a receipt names.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

use crate::Error;

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The signing key. `Debug` shows the public key only.
pub struct RecordSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for RecordSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSigner")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl RecordSigner {
    /// A fresh key.
    pub fn generate() -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = Zeroizing::new(
            Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| Error::Key("cannot generate"))?
                .as_ref()
                .to_vec(),
        );
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| Error::Key("cannot load"))?;
        Ok(RecordSigner { pair })
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }
}

/// Verifies an Ed25519 signature by `public_key` over `message`.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key.len() == PUBLIC_KEY_LEN
        && signature.len() == SIGNATURE_LEN
        && UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok()
}
