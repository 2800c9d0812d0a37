//! The signed-model container: a model's plaintext with its signature bundle in front, sealed as one.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CSIGNED1"
//! 8       4     bundle_len, u32 little-endian, 1..=MAX_BUNDLE_LEN
//! 12      n     the model-signing bundle (JSON, as model_signing wrote it)
//! 12+n    rest  the model: an ONNX file, or an LLM bundle (CLLMBND1)
//! ```
//!
//! The container is what `cloister seal --signature` seals, so the sealed digest covers the signature
//! too, and the signature travels encrypted (its per-file digests are digests of plaintext weights).

use crate::{Error, MAX_BUNDLE_LEN};

/// First bytes of a signed-model plaintext.
pub const SIGNED_MODEL_MAGIC: [u8; 8] = *b"CSIGNED1";

const BUNDLE_LEN_OFFSET: usize = SIGNED_MODEL_MAGIC.len();
const BUNDLE_OFFSET: usize = BUNDLE_LEN_OFFSET + 4;
const _: () = assert!(BUNDLE_OFFSET == 12);
const _: () = assert!(MAX_BUNDLE_LEN <= u32::MAX as usize);

/// A parsed signed-model container, borrowing from the plaintext.
#[derive(Clone, Copy, Debug)]
pub struct SignedModel<'a> {
    /// The model-signing bundle.
    pub bundle: &'a [u8],
    /// The model the bundle signs.
    pub model: &'a [u8],
}

impl<'a> SignedModel<'a> {
    /// Whether `plaintext` is a signed-model container (starts with the magic).
    pub fn is_signed(plaintext: &[u8]) -> bool {
        plaintext.starts_with(&SIGNED_MODEL_MAGIC)
    }

    /// Splits a container; every length is checked against the bytes present.
    pub fn parse(plaintext: &'a [u8]) -> Result<Self, Error> {
        if !Self::is_signed(plaintext) {
            return Err(Error::Container("bad magic (not CSIGNED1)"));
        }
        let len_bytes: [u8; 4] = plaintext
            .get(BUNDLE_LEN_OFFSET..BUNDLE_OFFSET)
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Container("truncated before bundle_len"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 || len > MAX_BUNDLE_LEN {
            return Err(Error::Container("bundle_len is 0 or over the limit"));
        }
        let end = BUNDLE_OFFSET + len;
        let bundle = plaintext
            .get(BUNDLE_OFFSET..end)
            .ok_or(Error::Container("truncated bundle"))?;
        let model = &plaintext[end..];
        if model.is_empty() {
            return Err(Error::Container("no model after the bundle"));
        }
        Ok(Self { bundle, model })
    }

    /// Builds a container (the model owner's side; no check of the signature here).
    pub fn build(bundle: &[u8], model: &[u8]) -> Result<Vec<u8>, Error> {
        if bundle.is_empty() || bundle.len() > MAX_BUNDLE_LEN {
            return Err(Error::BundleTooLarge {
                len: bundle.len(),
                max: MAX_BUNDLE_LEN,
            });
        }
        let mut out = Vec::with_capacity(BUNDLE_OFFSET + bundle.len() + model.len());
        out.extend_from_slice(&SIGNED_MODEL_MAGIC);
        out.extend_from_slice(&(bundle.len() as u32).to_le_bytes());
        out.extend_from_slice(bundle);
        out.extend_from_slice(model);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn containers_round_trip_and_every_truncation_is_an_error() {
        let c = SignedModel::build(b"{\"b\":1}", b"model bytes").unwrap();
        let p = SignedModel::parse(&c).unwrap();
        assert_eq!(
            (p.bundle, p.model),
            (&b"{\"b\":1}"[..], &b"model bytes"[..])
        );
        for cut in 0..BUNDLE_OFFSET + 7 + 1 {
            assert!(SignedModel::parse(&c[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = c.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SignedModel::parse(&huge).is_err());
    }
}
