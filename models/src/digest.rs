//! [`ModelDigest`]: the identity of a model, SHA-384 of its plaintext ONNX bytes.

use std::fmt;
use std::str::FromStr;

use ring::digest::{Context, SHA384};
use subtle::ConstantTimeEq;

use crate::Error;

/// Length of a SHA-384 digest in bytes.
pub const DIGEST_LEN: usize = 48;

/// Textual prefix of a model digest.
const PREFIX: &str = "sha384:";

/// SHA-384 of a model's plaintext ONNX bytes.
///
/// This is the identity of a model everywhere in Cloister: the key broker releases keys per
/// digest, the enclave reports the digests it serves, the keystore files keys under it.
///
/// Text form (Display, FromStr, serde): `sha384:` followed by 96 lowercase hex digits.
/// Equality is constant time.
#[derive(Clone, Copy)]
pub struct ModelDigest([u8; DIGEST_LEN]);

impl ModelDigest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; DIGEST_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// SHA-384 of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(data);
        hasher.finish()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &ModelDigest) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// The 96 lowercase hex digits, without the `sha384:` prefix (used for keystore file names).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 96 lowercase hex digits without prefix.
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let bytes = s.as_bytes();
        // Canonical form only: exactly 96 lowercase hex digits, so that one digest has one name.
        if bytes.len() != 2 * DIGEST_LEN
            || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::InvalidDigest);
        }
        let mut out = [0u8; DIGEST_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidDigest)?;
        Ok(Self(out))
    }
}

impl PartialEq for ModelDigest {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for ModelDigest {}

// Manual because `PartialEq` is manual (constant time); consistent with it: equal values hash equally.
impl std::hash::Hash for ModelDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Display for ModelDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ModelDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelDigest({self})")
    }
}

impl FromStr for ModelDigest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(PREFIX).ok_or(Error::InvalidDigest)?;
        Self::from_hex(hex)
    }
}

impl serde::Serialize for ModelDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ModelDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ModelDigest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model digest `sha384:<96 lowercase hex digits>`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModelDigest, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Incremental SHA-384 that produces a [`ModelDigest`].
pub(crate) struct Hasher(Context);

impl Hasher {
    pub(crate) fn new() -> Self {
        Self(Context::new(&SHA384))
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub(crate) fn finish(self) -> ModelDigest {
        let mut out = [0u8; DIGEST_LEN];
        out.copy_from_slice(self.0.finish().as_ref());
        ModelDigest(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_known_value() {
        let d = ModelDigest::of(b"abc");
        // FIPS 180-2 SHA-384("abc").
        let expected = "sha384:cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
                        8086072ba1e7cc2358baeca134c825a7";
        assert_eq!(d.to_string(), expected);
        assert_eq!(expected.parse::<ModelDigest>().unwrap(), d);
        assert_eq!(format!("{d:?}"), format!("ModelDigest({expected})"));
    }

    #[test]
    fn rejects_non_canonical_text() {
        let good = ModelDigest::of(b"x").to_string();
        assert!(good.parse::<ModelDigest>().is_ok());
        for bad in [
            good.to_uppercase(),
            good.replacen("sha384:", "", 1),
            good.replacen("sha384:", "sha256:", 1),
            format!("{good}0"),
            good[..good.len() - 1].to_string(),
            format!(" {good}"),
            good.replacen('a', "g", 1),
            String::new(),
        ] {
            assert!(
                matches!(bad.parse::<ModelDigest>(), Err(Error::InvalidDigest)),
                "{bad}"
            );
        }
    }

    #[test]
    fn serde_as_string() {
        let d = ModelDigest::of(b"model");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<ModelDigest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<ModelDigest>("\"sha384:00\"").is_err());
        assert!(serde_json::from_str::<ModelDigest>("42").is_err());
    }

    #[test]
    fn equality() {
        let a = ModelDigest::of(b"a");
        let mut bytes = *a.as_bytes();
        assert!(a.ct_eq(&ModelDigest::from_bytes(bytes)));
        bytes[47] ^= 1;
        assert!(!a.ct_eq(&ModelDigest::from_bytes(bytes)));
        assert_ne!(a, ModelDigest::from_bytes(bytes));
    }
}
