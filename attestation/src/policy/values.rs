//! The value types policies are written in: hex bytes, model digests, firmware versions, durations, product
//! names. Each parses strictly (a malformed value is an error naming it) and writes back the way it is read.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::snp::Product;

/// Fixed-size bytes written as hex in TOML (an optional `0x` prefix is accepted).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> From<HexBytes<N>> for String {
    fn from(h: HexBytes<N>) -> String {
        hex::encode(h.0)
    }
}
impl<const N: usize> fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl<const N: usize> std::str::FromStr for HexBytes<N> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let s = s.strip_prefix("0x").unwrap_or(s);
        let v = hex::decode(s).map_err(|e| format!("invalid hex {s:?}: {e}"))?;
        let arr: [u8; N] = v
            .try_into()
            .map_err(|v: Vec<u8>| format!("expected {N} bytes of hex, found {}", v.len()))?;
        Ok(HexBytes(arr))
    }
}
impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A SHA-384 model digest as written in policies: `sha384:<96 hex digits>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelDigestPin(pub [u8; 48]);

impl fmt::Debug for ModelDigestPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha384:{}", hex::encode(self.0))
    }
}
impl fmt::Display for ModelDigestPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha384:{}", hex::encode(self.0))
    }
}
impl std::str::FromStr for ModelDigestPin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hexpart = s
            .strip_prefix("sha384:")
            .ok_or_else(|| format!("digest {s:?} must start with \"sha384:\""))?;
        Ok(ModelDigestPin(hexpart.parse::<HexBytes<48>>()?.0))
    }
}
impl<'de> Deserialize<'de> for ModelDigestPin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
impl serde::Serialize for ModelDigestPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A model producer's key as written in policies: `sha256:<64 hex digits>`, SHA-256 of the producer's DER
/// SubjectPublicKeyInfo (what `cloister seal --signature` prints as the signer, and
/// `cloister_provenance::SignerId`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignerPin(pub [u8; 32]);

impl fmt::Debug for SignerPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}
impl fmt::Display for SignerPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}
impl std::str::FromStr for SignerPin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hexpart = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("signer {s:?} must start with \"sha256:\""))?;
        Ok(SignerPin(hexpart.parse::<HexBytes<32>>()?.0))
    }
}
impl<'de> Deserialize<'de> for SignerPin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
impl serde::Serialize for SignerPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A firmware version written `major.minor` or `major.minor.build`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct VersionPin {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build (0 when omitted).
    pub build: u8,
}
impl<'de> Deserialize<'de> for VersionPin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parts: Vec<&str> = s.split('.').collect();
        let parse = |p: &str| {
            p.parse::<u8>()
                .map_err(|e| serde::de::Error::custom(format!("version {s:?}: {e}")))
        };
        match parts.as_slice() {
            [maj, min] => Ok(VersionPin {
                major: parse(maj)?,
                minor: parse(min)?,
                build: 0,
            }),
            [maj, min, b] => Ok(VersionPin {
                major: parse(maj)?,
                minor: parse(min)?,
                build: parse(b)?,
            }),
            _ => Err(serde::de::Error::custom(format!(
                "version {s:?}: expected MAJOR.MINOR or MAJOR.MINOR.BUILD"
            ))),
        }
    }
}
impl serde::Serialize for VersionPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!(
            "{}.{}.{}",
            self.major, self.minor, self.build
        ))
    }
}

/// A duration written `"30s"`, `"15m"`, `"12h"` or `"7d"` (seconds, minutes, hours, days).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct DurationText(pub i64);

impl From<DurationText> for String {
    fn from(d: DurationText) -> String {
        format!("{}s", d.0)
    }
}

impl std::str::FromStr for DurationText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: i64 = n
            .parse()
            .map_err(|_| format!("duration {s:?}: expected a number then s, m, h or d"))?;
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("duration {s:?}: expected a unit s, m, h or d")),
        };
        n.checked_mul(factor)
            .map(DurationText)
            .ok_or_else(|| format!("duration {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A product name in a policy, validated at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductName(pub Product);

impl<'de> Deserialize<'de> for ProductName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Product::from_name(&s).map(ProductName).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown product {s:?}: expected Milan, Genoa or Turin"
            ))
        })
    }
}
impl serde::Serialize for ProductName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}
