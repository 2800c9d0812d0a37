//! The enclave's record-signing key: ECDSA P-384 with SHA-384 (COSE ES384), made at start with ring, never
//! leaving the enclave process. Its public half (SEC1 uncompressed, 97 bytes) goes into the attested claims
//! (`receipt_key`), so a verifier that accepts the evidence knows which key speaks for the enclave.

use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use zeroize::Zeroizing;

use crate::Error;

/// Length of an uncompressed P-384 public key.
pub const PUBLIC_KEY_LEN: usize = 97;

/// The signing key. `Debug` shows the public key only.
pub struct RecordSigner {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
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
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .map_err(|_| Error::Key("cannot generate"))?
                .as_ref()
                .to_vec(),
        );
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| Error::Key("cannot load"))?;
        Ok(RecordSigner { pair, rng })
    }

    /// The public key (SEC1 uncompressed).
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs `message` (r ‖ s, 96 bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.pair
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Key("cannot sign"))
    }
}

/// Verifies an ES384 signature (r ‖ s) by `public_key` over `message`.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key.len() == PUBLIC_KEY_LEN
        && UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, public_key)
            .verify(message, signature)
            .is_ok()
}
