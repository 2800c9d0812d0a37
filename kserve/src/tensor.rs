//! Tensor elements: typed vectors, their little-endian bytes and their JSON text.

use std::fmt;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::scalars::{parse_bool, parse_float, parse_int, JsonScalars};
use crate::{Datatype, TensorProblem};

/// The elements of a tensor, row-major, one variant per [`Datatype`].
///
/// `Debug` prints the datatype and the length, never the values: tensors are confidential.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    Uint8(Vec<u8>),
    /// `UINT16`
    Uint16(Vec<u16>),
    /// `UINT32`
    Uint32(Vec<u32>),
    /// `UINT64`
    Uint64(Vec<u64>),
    /// `INT8`
    Int8(Vec<i8>),
    /// `INT16`
    Int16(Vec<i16>),
    /// `INT32`
    Int32(Vec<i32>),
    /// `INT64`
    Int64(Vec<i64>),
    /// `FP32`
    Fp32(Vec<f32>),
    /// `FP64`
    Fp64(Vec<f64>),
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TensorData::{}(len = {})", self.datatype(), self.len())
    }
}

/// Little-endian encoding of the numeric types.
macro_rules! le_bytes {
    ($v:expr) => {{
        let mut out = Vec::with_capacity(std::mem::size_of_val(&$v[..]));
        for x in $v.iter() {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }};
}

/// Little-endian decoding of the numeric types; `bytes.len()` is a multiple of the element size.
macro_rules! from_le {
    ($bytes:expr, $t:ty) => {{
        const N: usize = std::mem::size_of::<$t>();
        $bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    }};
}

impl TensorData {
    /// The datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Bool(_) => Datatype::Bool,
            Self::Uint8(_) => Datatype::Uint8,
            Self::Uint16(_) => Datatype::Uint16,
            Self::Uint32(_) => Datatype::Uint32,
            Self::Uint64(_) => Datatype::Uint64,
            Self::Int8(_) => Datatype::Int8,
            Self::Int16(_) => Datatype::Int16,
            Self::Int32(_) => Datatype::Int32,
            Self::Int64(_) => Datatype::Int64,
            Self::Fp32(_) => Datatype::Fp32,
            Self::Fp64(_) => Datatype::Fp64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Bool(v) => v.len(),
            Self::Uint8(v) => v.len(),
            Self::Uint16(v) => v.len(),
            Self::Uint32(v) => v.len(),
            Self::Uint64(v) => v.len(),
            Self::Int8(v) => v.len(),
            Self::Int16(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::Fp32(v) => v.len(),
            Self::Fp64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The binary-extension encoding: little-endian elements, BOOL as one byte 0 or 1.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
            Self::Uint8(v) => v.clone(),
            Self::Uint16(v) => le_bytes!(v),
            Self::Uint32(v) => le_bytes!(v),
            Self::Uint64(v) => le_bytes!(v),
            Self::Int8(v) => le_bytes!(v),
            Self::Int16(v) => le_bytes!(v),
            Self::Int32(v) => le_bytes!(v),
            Self::Int64(v) => le_bytes!(v),
            Self::Fp32(v) => le_bytes!(v),
            Self::Fp64(v) => le_bytes!(v),
        }
    }

    /// Decodes the binary-extension encoding of `datatype` elements.
    pub fn from_le_bytes(datatype: Datatype, bytes: &[u8]) -> Result<Self, TensorProblem> {
        let size = datatype.element_size();
        if !bytes.chunks_exact(size).remainder().is_empty() {
            return Err(TensorProblem::BinarySizeNotMultiple {
                size: bytes.len() as u64,
                element_size: size,
            });
        }
        Ok(match datatype {
            Datatype::Bool => Self::Bool(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(index, b)| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(TensorProblem::BadBinaryBool { index }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Datatype::Uint8 => Self::Uint8(bytes.to_vec()),
            Datatype::Uint16 => Self::Uint16(from_le!(bytes, u16)),
            Datatype::Uint32 => Self::Uint32(from_le!(bytes, u32)),
            Datatype::Uint64 => Self::Uint64(from_le!(bytes, u64)),
            Datatype::Int8 => Self::Int8(from_le!(bytes, i8)),
            Datatype::Int16 => Self::Int16(from_le!(bytes, i16)),
            Datatype::Int32 => Self::Int32(from_le!(bytes, i32)),
            Datatype::Int64 => Self::Int64(from_le!(bytes, i64)),
            Datatype::Fp32 => Self::Fp32(from_le!(bytes, f32)),
            Datatype::Fp64 => Self::Fp64(from_le!(bytes, f64)),
        })
    }

    /// Parses the text of a JSON `data` value as elements of `datatype`. Nested arrays are flattened
    /// (row-major, as KServe allows); the caller compares the count with the shape.
    ///
    /// `json` must be valid JSON (serde_json checked it as a [`RawValue`]); this walks its tokens.
    pub fn from_json_text(datatype: Datatype, json: &str) -> Result<Self, TensorProblem> {
        Self::from_json_text_at_most(datatype, json, usize::MAX)
    }

    /// [`TensorData::from_json_text`] that stops at the first element beyond `max` (an error): a request's
    /// element limit applies while its `data` is parsed, not after the whole array is in memory.
    pub fn from_json_text_at_most(
        datatype: Datatype,
        json: &str,
        max: usize,
    ) -> Result<Self, TensorProblem> {
        let mut tokens = JsonScalars::new(json)?;
        // Never reserve more than the text can hold (one element needs at least two bytes): `max` comes from
        // a shape the client chose.
        let reserve = max.min(json.len() / 2 + 1);
        macro_rules! collect {
            ($variant:ident, $parse:expr) => {{
                let mut out = Vec::with_capacity(reserve);
                while let Some((index, token)) = tokens.next_scalar()? {
                    if index >= max {
                        return Err(TensorProblem::TooManyElements { limit: max });
                    }
                    out.push($parse(index, token)?);
                }
                Self::$variant(out)
            }};
        }
        Ok(match datatype {
            Datatype::Bool => collect!(Bool, parse_bool),
            Datatype::Uint8 => collect!(Uint8, parse_int::<u8>),
            Datatype::Uint16 => collect!(Uint16, parse_int::<u16>),
            Datatype::Uint32 => collect!(Uint32, parse_int::<u32>),
            Datatype::Uint64 => collect!(Uint64, parse_int::<u64>),
            Datatype::Int8 => collect!(Int8, parse_int::<i8>),
            Datatype::Int16 => collect!(Int16, parse_int::<i16>),
            Datatype::Int32 => collect!(Int32, parse_int::<i32>),
            Datatype::Int64 => collect!(Int64, parse_int::<i64>),
            Datatype::Fp32 => collect!(Fp32, parse_float::<f32>),
            Datatype::Fp64 => collect!(Fp64, parse_float::<f64>),
        })
    }
}

/// Serializes as a flat JSON array. `FP32` elements are written as `f32` (shortest round-trip form),
/// never widened to `f64`; non-finite floats as `"NaN"`, `"Infinity"`, `"-Infinity"`.
impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        macro_rules! seq {
            ($v:expr, $elem:expr) => {{
                let mut seq = s.serialize_seq(Some($v.len()))?;
                for x in $v.iter() {
                    $elem(&mut seq, *x)?;
                }
                seq.end()
            }};
        }
        fn plain<Q: SerializeSeq, T: Serialize>(seq: &mut Q, x: T) -> Result<(), Q::Error> {
            seq.serialize_element(&x)
        }
        fn f32_elem<Q: SerializeSeq>(seq: &mut Q, x: f32) -> Result<(), Q::Error> {
            match non_finite_name(x.is_nan(), x.is_infinite(), x.is_sign_negative()) {
                Some(name) => seq.serialize_element(name),
                None => seq.serialize_element(&x),
            }
        }
        fn f64_elem<Q: SerializeSeq>(seq: &mut Q, x: f64) -> Result<(), Q::Error> {
            match non_finite_name(x.is_nan(), x.is_infinite(), x.is_sign_negative()) {
                Some(name) => seq.serialize_element(name),
                None => seq.serialize_element(&x),
            }
        }
        match self {
            Self::Bool(v) => seq!(v, plain),
            Self::Uint8(v) => seq!(v, plain),
            Self::Uint16(v) => seq!(v, plain),
            Self::Uint32(v) => seq!(v, plain),
            Self::Uint64(v) => seq!(v, plain),
            Self::Int8(v) => seq!(v, plain),
            Self::Int16(v) => seq!(v, plain),
            Self::Int32(v) => seq!(v, plain),
            Self::Int64(v) => seq!(v, plain),
            Self::Fp32(v) => seq!(v, f32_elem),
            Self::Fp64(v) => seq!(v, f64_elem),
        }
    }
}

fn non_finite_name(nan: bool, infinite: bool, negative: bool) -> Option<&'static str> {
    match (nan, infinite, negative) {
        (true, _, _) => Some("NaN"),
        (false, true, false) => Some("Infinity"),
        (false, true, true) => Some("-Infinity"),
        _ => None,
    }
}
