//! Key release between an enclave and the model owner's key broker (see `docs/architecture.md`).
//!
//! ```text
//! enclave → broker  KeyRequest { version, model_digest }
//! broker  → enclave Challenge  { nonce }                      fresh, single use
//! enclave → broker  Attest     { evidence }                   claims: nonce, exporter, X25519 key, [digest]
//! broker  → enclave Granted    { broker_public, wrapped_key } | Refused { code }
//! ```
//!
//! Wrapping (both directions use ring only):
//! ```text
//! shared      = X25519(broker_ephemeral, enclave_public)
//! prk         = HKDF-SHA384-Extract(salt = nonce, ikm = shared)
//! kek         = HKDF-SHA384-Expand(prk, "cloister-key-wrap-v1" || model_digest || enclave_public
//!                                        || broker_public, 32)
//! wrapped_key = AES-256-GCM(kek, nonce = 0^12, aad = model_digest, model_key)   // 32 + 16 bytes
//! ```
//! The all-zero AEAD nonce is safe because each KEK is used exactly once: both X25519 keys are ephemeral
//! and the broker's nonce is fresh. Binding the digest and both public keys into the KEK means a wrapped
//! key cannot be replayed for another model or another enclave key.

use cloister_attestation::evidence::{Evidence, Sha384};
use cloister_models::ModelKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{Salt, HKDF_SHA384};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;

/// Protocol version carried in [`EnclaveToBroker::KeyRequest`].
pub const PROTOCOL_VERSION: u16 = 1;
/// HKDF info prefix for the key-encryption key.
pub const KEY_WRAP_INFO: &[u8] = b"cloister-key-wrap-v1";
/// Length of a wrapped model key: 32-byte key + 16-byte GCM tag.
pub const WRAPPED_KEY_LEN: usize = 32 + 16;

/// Messages from the enclave to the key broker.
// One message lives at a time, briefly; boxing the evidence would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnclaveToBroker {
    /// Opens the exchange: which model's key is wanted.
    KeyRequest {
        /// [`PROTOCOL_VERSION`].
        version: u16,
        /// SHA-384 of the plaintext model.
        model_digest: Sha384,
    },
    /// Evidence answering the challenge.
    Attest {
        /// The evidence; its claims carry the nonce, exporter, X25519 key and digest.
        evidence: Evidence,
    },
}

/// Why the broker refused. Deliberately coarse: the detailed reason is written to the broker's audit
/// log, not sent to a party that may be an attacker probing the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The request was malformed or of an unsupported version.
    BadRequest,
    /// The broker holds no key for this model.
    UnknownModel,
    /// The evidence failed verification (chain, signature, binding).
    EvidenceRejected,
    /// The evidence is genuine but the model owner's policy does not allow this enclave.
    PolicyRejected,
    /// The nonce was already used or never issued.
    Replay,
    /// The broker failed internally.
    Internal,
}

/// Messages from the key broker to the enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerToEnclave {
    /// A fresh nonce the evidence must carry.
    Challenge {
        /// 32 random bytes.
        nonce: [u8; 32],
    },
    /// The model key, wrapped to the enclave's X25519 key.
    Granted {
        /// The broker's ephemeral X25519 public key.
        broker_public: [u8; 32],
        /// AES-256-GCM of the model key under the derived KEK.
        wrapped_key: Vec<u8>,
    },
    /// No key.
    Refused {
        /// Why, coarsely.
        code: RefusalCode,
    },
}

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

/// Broker side: wraps `key` to `enclave_public`. Returns `(broker_public, wrapped_key)`.
pub fn wrap_model_key(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn wrap_unwrap_round_trip_and_every_binding_matters() {
        let rng = SystemRandom::new();
        let key = ModelKey::from_bytes(&[9u8; 32]);
        let digest = Sha384([1; 48]);
        let nonce = [2u8; 32];

        let pair = EnclaveKeyPair::generate(&rng).unwrap();
        let (bp, wrapped) = wrap_model_key(&key, &pair.public(), &nonce, &digest, &rng).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        let got = pair.unwrap(&nonce, &digest, &bp, &wrapped).unwrap();
        assert_eq!(got.expose_secret(), key.expose_secret());

        // Another nonce, digest, broker key, enclave key, or a flipped byte: no key.
        type Mutation = Box<dyn Fn(&mut [u8; 32], &mut Sha384, &mut [u8; 32], &mut Vec<u8>)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|n, _, _, _| n[0] ^= 1),
            Box::new(|_, d, _, _| d.0[0] ^= 1),
            Box::new(|_, _, b, _| b[0] ^= 1),
            Box::new(|_, _, _, w| w[0] ^= 1),
            Box::new(|_, _, _, w| w.truncate(47)),
        ];
        for mutate in cases {
            let pair = EnclaveKeyPair::generate(&rng).unwrap();
            let (mut bp, mut wrapped) =
                wrap_model_key(&key, &pair.public(), &nonce, &digest, &rng).unwrap();
            let (mut n, mut d) = (nonce, digest);
            mutate(&mut n, &mut d, &mut bp, &mut wrapped);
            assert!(pair.unwrap(&n, &d, &bp, &wrapped).is_err());
        }
        // Wrapped to one enclave key, opened by another.
        let a = EnclaveKeyPair::generate(&rng).unwrap();
        let b = EnclaveKeyPair::generate(&rng).unwrap();
        let (bp, wrapped) = wrap_model_key(&key, &a.public(), &nonce, &digest, &rng).unwrap();
        assert!(b.unwrap(&nonce, &digest, &bp, &wrapped).is_err());
        // An invalid (all-zero, low-order) enclave public key is refused by the broker.
        assert!(wrap_model_key(&key, &[0u8; 32], &nonce, &digest, &rng).is_err());
    }
}
