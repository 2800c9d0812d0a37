//! Wrapping a model key to the enclave's ephemeral X25519 key (see the module documentation for the
//! derivation).

use cloister_attestation::evidence::{EnclaveKey, Sha384, VerifiedEvidence};
use cloister_models::ModelKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{Salt, HKDF_SHA384};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::{KEY_WRAP_INFO, WRAPPED_KEY_LEN};
use crate::Error;

/// The enclave's ephemeral X25519 key pair for one key release. The private half never leaves this
/// value and is consumed by [`EnclaveKeyPair::unwrap`].
pub struct EnclaveKeyPair {
    private: EphemeralPrivateKey,
    public: [u8; 32],
}

impl core::fmt::Debug for EnclaveKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnclaveKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl EnclaveKeyPair {
    /// Generates a fresh key pair.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, Error> {
        let private = EphemeralPrivateKey::generate(&X25519, rng)
            .map_err(|_| Error::KeyWrap("cannot generate an X25519 key"))?;
        let public_key = private
            .compute_public_key()
            .map_err(|_| Error::KeyWrap("cannot compute the X25519 public key"))?;
        let public: [u8; 32] = public_key
            .as_ref()
            .try_into()
            .map_err(|_| Error::KeyWrap("X25519 public key is not 32 bytes"))?;
        Ok(EnclaveKeyPair { private, public })
    }

    /// The public key to put in the claims.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Unwraps a granted key. Consumes the private key (it is single use).
    pub fn unwrap(
        self,
        nonce: &[u8; 32],
        model_digest: &Sha384,
        broker_public: &[u8; 32],
        wrapped_key: &[u8],
    ) -> Result<ModelKey, Error> {
        let enclave_public = self.public;
        let peer = UnparsedPublicKey::new(&X25519, broker_public);
        let kek = agree_ephemeral(self.private, &peer, |shared| {
            derive_kek(shared, nonce, model_digest, &enclave_public, broker_public)
        })
        .map_err(|_| Error::KeyWrap("X25519 agreement failed"))??;
        if wrapped_key.len() != WRAPPED_KEY_LEN {
            return Err(Error::KeyWrap("wrapped key has the wrong length"));
        }
        let mut buf = Zeroizing::new(wrapped_key.to_vec());
        let plain = kek
            .open_in_place(zero_nonce(), Aad::from(&model_digest.0), buf.as_mut_slice())
            .map_err(|_| Error::KeyWrap("wrapped key does not authenticate"))?;
        let bytes: &[u8; 32] = (&*plain)
            .try_into()
            .map_err(|_| Error::KeyWrap("unwrapped key is not 32 bytes"))?;
        Ok(ModelKey::from_bytes(bytes))
    }
}

fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; 12])
}

fn derive_kek(
    shared: &[u8],
    nonce: &[u8; 32],
    model_digest: &Sha384,
    enclave_public: &[u8; 32],
    broker_public: &[u8; 32],
) -> Result<LessSafeKey, Error> {
    let prk = Salt::new(HKDF_SHA384, nonce).extract(shared);
    let info = [
        KEY_WRAP_INFO,
        &model_digest.0[..],
        &enclave_public[..],
        &broker_public[..],
    ];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| Error::KeyWrap("HKDF expand failed"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Broker side: wraps `key` to the X25519 key of the enclave whose evidence verified. Returns
/// `(broker_public, wrapped_key)`.
///
/// Takes the [`VerifiedEvidence`] (which only verification constructs), not raw key material: the enclave
/// key and the nonce the KEK is bound to are read from its verified claims, and `model_digest` must be among
/// them. A key can therefore only be wrapped to an enclave that attested, for a model it asked for.
pub fn wrap_model_key(
    key: &ModelKey,
    evidence: &VerifiedEvidence,
    model_digest: &Sha384,
    rng: &dyn SecureRandom,
) -> Result<([u8; 32], Vec<u8>), Error> {
    let claims = evidence.claims();
    let Some(EnclaveKey::X25519(enclave_public)) = &claims.enclave_key else {
        return Err(Error::KeyWrap(
            "the verified claims carry no X25519 key to wrap to",
        ));
    };
    if !claims
        .model_digests
        .iter()
        .any(|d| cloister_attestation::ct_eq(&d.0, &model_digest.0))
    {
        return Err(Error::KeyWrap(
            "the verified claims do not name the model whose key would be wrapped",
        ));
    }
    wrap_to(key, enclave_public, &claims.nonce, model_digest, rng)
}

/// The wrapping itself. Private: the only way in is [`wrap_model_key`] (or the tests).
pub(super) fn wrap_to(
    key: &ModelKey,
    enclave_public: &[u8; 32],
    nonce: &[u8; 32],
    model_digest: &Sha384,
    rng: &dyn SecureRandom,
) -> Result<([u8; 32], Vec<u8>), Error> {
    let private = EphemeralPrivateKey::generate(&X25519, rng)
        .map_err(|_| Error::KeyWrap("cannot generate an X25519 key"))?;
    let broker_public: [u8; 32] = private
        .compute_public_key()
        .map_err(|_| Error::KeyWrap("cannot compute the X25519 public key"))?
        .as_ref()
        .try_into()
        .map_err(|_| Error::KeyWrap("X25519 public key is not 32 bytes"))?;
    let peer = UnparsedPublicKey::new(&X25519, enclave_public);
    let kek = agree_ephemeral(private, &peer, |shared| {
        derive_kek(shared, nonce, model_digest, enclave_public, &broker_public)
    })
    .map_err(|_| Error::KeyWrap("X25519 agreement failed (invalid enclave public key)"))??;
    let mut buf = key.expose_secret().to_vec();
    let sealed = kek.seal_in_place_append_tag(zero_nonce(), Aad::from(&model_digest.0), &mut buf);
    match sealed {
        Ok(()) => Ok((broker_public, buf)),
        Err(_) => {
            zeroize::Zeroize::zeroize(&mut buf);
            Err(Error::KeyWrap("AES-GCM seal failed"))
        }
    }
}
