//! Tensor element types.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A tensor element type, named as in the Open Inference Protocol v2. (`FP16`, `BF16` and `BYTES` are not
/// supported by the enclave's engine and are refused when decoding.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Datatype {
    /// `BOOL`
    Bool,
    /// `UINT8`
    Uint8,
    /// `UINT16`
    Uint16,
    /// `UINT32`
    Uint32,
    /// `UINT64`
    Uint64,
    /// `INT8`
    Int8,
    /// `INT16`
    Int16,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
}

impl Datatype {
    /// Every supported datatype.
    pub const ALL: [Datatype; 11] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp32,
        Self::Fp64,
    ];

    /// The v2 name (`"FP32"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
        }
    }

    /// Parses a v2 name; `None` for unknown or unsupported names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The longest JSON text of one element, with its separating comma: what a response of this datatype
    /// can cost per element at most (`-2147483648,`, `-1.1754944e-38,` and so on; non-finite floats are
    /// quoted names, shorter than the longest number).
    pub const fn max_json_element_len(self) -> usize {
        match self {
            Self::Bool => 6,
            Self::Uint8 => 4,
            Self::Int8 => 5,
            Self::Uint16 => 6,
            Self::Int16 => 7,
            Self::Uint32 => 11,
            Self::Int32 => 12,
            Self::Uint64 | Self::Int64 => 21,
            Self::Fp32 => 16,
            Self::Fp64 => 25,
        }
    }

    /// Bytes per element in the binary extension (BOOL: one byte).
    pub const fn element_size(self) -> usize {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Datatype {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Datatype {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Datatype::from_name(&name).ok_or_else(|| D::Error::custom(unsupported_datatype(&name)))
    }
}

fn unsupported_datatype(name: &str) -> String {
    let known: Vec<&str> = Datatype::ALL.iter().map(|d| d.name()).collect();
    // The name comes from the peer: echo it only if it is short and printable.
    if name.len() <= 16 && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!(
            "datatype `{name}` is not supported (supported: {})",
            known.join(", ")
        )
    } else {
        format!(
            "datatype is not supported (supported: {})",
            known.join(", ")
        )
    }
}
