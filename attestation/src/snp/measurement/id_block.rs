//! ID blocks: the author's signed statement of the expected launch digest, checked by the AMD-SP at
//! SNP_LAUNCH_FINISH (SNP ABI §8.18, ID_BLOCK and ID_AUTH_INFO).

use ring::rand::SecureRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

use super::{sha384, LD_LEN};

/// Size of ID_BLOCK.
pub const ID_BLOCK_LEN: usize = 0x60;
/// Size of ID_AUTH_INFO.
pub const ID_AUTH_LEN: usize = 0x1000;
/// Size of an SNP ECDSA public key structure (curve u32, QX[72], QY[72], reserved).
pub const PUBKEY_LEN: usize = 0x404;
/// Size of an SNP ECDSA signature structure (R[72], S[72], reserved).
pub const SIG_LEN: usize = 0x200;
/// ID_BLOCK.VERSION this code writes.
pub const ID_BLOCK_VERSION: u32 = 1;
/// ALGO value of ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// CURVE value of P-384.
pub const CURVE_P384: u32 = 2;

/// Offsets inside ID_AUTH_INFO.
pub mod offsets {
    /// ID_KEY_ALGO.
    pub const ID_KEY_ALGO: usize = 0x00;
    /// AUTH_KEY_ALGO.
    pub const AUTH_KEY_ALGO: usize = 0x04;
    /// ID_BLOCK_SIG.
    pub const ID_BLOCK_SIG: usize = 0x40;
    /// ID_KEY.
    pub const ID_KEY: usize = 0x240;
    /// ID_KEY_SIG.
    pub const ID_KEY_SIG: usize = 0x680;
    /// AUTHOR_KEY.
    pub const AUTHOR_KEY: usize = 0x880;
}

/// Why an ID block cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdBlockError {
    /// The key is not a P-384 private key in a form we read.
    #[error("{which} key: {detail}")]
    Key {
        /// "ID" or "author".
        which: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Signing failed (RNG failure).
    #[error("signing with the {0} key failed")]
    Signing(&'static str),
}

/// The ID block's fields other than the launch digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdBlockFields {
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY: must equal the guest policy the VMM launches with, or SNP_LAUNCH_FINISH fails.
    pub policy: u64,
}

impl Default for IdBlockFields {
    /// Zero IDs and SVN; policy 0x30000 (SMT allowed, reserved bit 17), as sev-snp-measure's
    /// snp-create-id-block and QEMU's default.
    fn default() -> Self {
        IdBlockFields {
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            policy: 0x30000,
        }
    }
}

/// ID_BLOCK: LD[48] FAMILY_ID[16] IMAGE_ID[16] VERSION u32 GUEST_SVN u32 POLICY u64.
pub fn id_block(ld: &[u8; LD_LEN], f: &IdBlockFields) -> [u8; ID_BLOCK_LEN] {
    let mut b = [0u8; ID_BLOCK_LEN];
    b[..48].copy_from_slice(ld);
    b[0x30..0x40].copy_from_slice(&f.family_id);
    b[0x40..0x50].copy_from_slice(&f.image_id);
    b[0x50..0x54].copy_from_slice(&ID_BLOCK_VERSION.to_le_bytes());
    b[0x54..0x58].copy_from_slice(&f.guest_svn.to_le_bytes());
    b[0x58..0x60].copy_from_slice(&f.policy.to_le_bytes());
    b
}

/// A P-384 signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a P-384 private key: PEM "PRIVATE KEY" (PKCS#8) or "EC PRIVATE KEY" (SEC1, what
    /// `openssl ecparam -genkey` writes), or DER PKCS#8. The SEC1 form must include the public key
    /// (OpenSSL always writes it).
    pub fn from_pem_or_der(
        bytes: &[u8],
        which: &'static str,
        rng: &dyn SecureRandom,
    ) -> Result<Self, IdBlockError> {
        let err = |detail: String| IdBlockError::Key { which, detail };
        let pkcs8: Vec<u8> =
            if bytes.starts_with(b"-----") || bytes.iter().take(64).any(|b| *b == b'-') {
                let (label, der) = pem_rfc7468::decode_vec(bytes)
                    .map_err(|e| err(format!("not a PEM block ({e})")))?;
                match label {
                    "PRIVATE KEY" => der,
                    "EC PRIVATE KEY" => sec1_to_pkcs8(&der),
                    "ENCRYPTED PRIVATE KEY" => {
                        return Err(err(
                            "encrypted keys are not supported: decrypt it first".into()
                        ))
                    }
                    other => return Err(err(format!("PEM label {other:?} is not a private key"))),
                }
            } else {
                bytes.to_vec()
            };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, rng)
            .map_err(|e| err(format!("not an ECDSA P-384 private key ({e})")))?;
        Ok(SigningKey { pair })
    }

    /// The public key in the SNP ABI layout (curve 2, QX and QY little-endian in 72-byte fields).
    pub fn public_snp(&self) -> [u8; PUBKEY_LEN] {
        // ring: 0x04 || X (48 bytes, big-endian) || Y (48 bytes, big-endian).
        let point = self.pair.public_key().as_ref();
        let mut out = [0u8; PUBKEY_LEN];
        out[..4].copy_from_slice(&CURVE_P384.to_le_bytes());
        for (i, b) in point[1..49].iter().rev().enumerate() {
            out[4 + i] = *b;
        }
        for (i, b) in point[49..97].iter().rev().enumerate() {
            out[4 + 72 + i] = *b;
        }
        out
    }

    /// SHA-384 of [`SigningKey::public_snp`]: what reports carry as ID_KEY_DIGEST or AUTHOR_KEY_DIGEST.
    pub fn digest(&self) -> [u8; LD_LEN] {
        sha384(&self.public_snp())
    }

    /// An ECDSA P-384/SHA-384 signature of `msg` in the SNP ABI layout (R and S little-endian in
    /// 72-byte fields).
    pub fn sign_snp(
        &self,
        msg: &[u8],
        which: &'static str,
        rng: &dyn SecureRandom,
    ) -> Result<[u8; SIG_LEN], IdBlockError> {
        let sig = self
            .pair
            .sign(rng, msg)
            .map_err(|_| IdBlockError::Signing(which))?;
        let rs = sig.as_ref(); // r || s, 48 bytes each, big-endian
        let mut out = [0u8; SIG_LEN];
        for (i, b) in rs[..48].iter().rev().enumerate() {
            out[i] = *b;
        }
        for (i, b) in rs[48..96].iter().rev().enumerate() {
            out[72 + i] = *b;
        }
        Ok(out)
    }
}

/// ID_AUTH_INFO for `block`: signed by the ID key, whose public key the author key signs (when
/// given; without an author key AUTHOR_KEY_EN must be off at launch and those fields stay zero).
pub fn id_auth(
    block: &[u8; ID_BLOCK_LEN],
    id_key: &SigningKey,
    author_key: Option<&SigningKey>,
    rng: &dyn SecureRandom,
) -> Result<[u8; ID_AUTH_LEN], IdBlockError> {
    use offsets::*;
    let mut a = [0u8; ID_AUTH_LEN];
    a[ID_KEY_ALGO..ID_KEY_ALGO + 4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
    a[ID_BLOCK_SIG..ID_BLOCK_SIG + SIG_LEN].copy_from_slice(&id_key.sign_snp(block, "ID", rng)?);
    let id_pub = id_key.public_snp();
    a[ID_KEY..ID_KEY + PUBKEY_LEN].copy_from_slice(&id_pub);
    if let Some(author) = author_key {
        a[AUTH_KEY_ALGO..AUTH_KEY_ALGO + 4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
        a[ID_KEY_SIG..ID_KEY_SIG + SIG_LEN]
            .copy_from_slice(&author.sign_snp(&id_pub, "author", rng)?);
        a[AUTHOR_KEY..AUTHOR_KEY + PUBKEY_LEN].copy_from_slice(&author.public_snp());
    }
    Ok(a)
}

/// Wraps a SEC1 ECPrivateKey (RFC 5915) into PKCS#8 (RFC 5208) with the P-384 algorithm identifier.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey (1.2.840.10045.2.1), secp384r1 (1.3.132.0.34) }
    const ALG: &[u8] = &[
        0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
        0x04, 0x00, 0x22,
    ];
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(ALG);
    body.push(0x04);
    der_len(&mut body, sec1.len());
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}
