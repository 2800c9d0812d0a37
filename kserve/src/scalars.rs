//! The scalar walker for `data`: numbers are parsed from their JSON text straight into the element type.

use crate::TensorProblem;

/// Walks the scalars of a JSON value (valid JSON, checked by serde_json), flattening arrays.
pub(crate) struct JsonScalars<'a> {
    text: &'a str,
    pos: usize,
    index: usize,
}

/// One scalar token.
pub(crate) enum Scalar<'a> {
    Number(&'a str),
    True,
    False,
    Null,
    /// The contents between the quotes, escapes not processed.
    String(&'a str),
    Object,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Number(_) => "a number",
            Scalar::True | Scalar::False => "a boolean",
            Scalar::Null => "null",
            Scalar::String(_) => "a string",
            Scalar::Object => "an object",
        }
    }
}

impl<'a> JsonScalars<'a> {
    pub(crate) fn new(text: &'a str) -> Result<Self, TensorProblem> {
        let trimmed = text.trim_start();
        if !trimmed.starts_with('[') {
            return Err(TensorProblem::NotAnArray);
        }
        Ok(JsonScalars {
            text,
            pos: 0,
            index: 0,
        })
    }

    /// The next scalar and its flat index, or `None` at the end.
    pub(crate) fn next_scalar(&mut self) -> Result<Option<(usize, Scalar<'a>)>, TensorProblem> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            match b {
                b'[' | b']' | b',' | b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                b'"' => {
                    let start = self.pos + 1;
                    let mut i = start;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    let end = i.min(bytes.len());
                    self.pos = (end + 1).min(bytes.len());
                    let s = self.text.get(start..end).unwrap_or("");
                    return Ok(Some(self.bump(Scalar::String(s))));
                }
                b'{' => {
                    // Valid JSON: an object has no scalar we want; report it as such (callers stop here).
                    self.pos += 1;
                    return Ok(Some(self.bump(Scalar::Object)));
                }
                _ => {
                    let start = self.pos;
                    while self.pos < bytes.len()
                        && !matches!(bytes[self.pos], b',' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                    {
                        self.pos += 1;
                    }
                    let token = self.text.get(start..self.pos).unwrap_or("");
                    let scalar = match token {
                        "true" => Scalar::True,
                        "false" => Scalar::False,
                        "null" => Scalar::Null,
                        _ => Scalar::Number(token),
                    };
                    return Ok(Some(self.bump(scalar)));
                }
            }
        }
        Ok(None)
    }

    fn bump(&mut self, s: Scalar<'a>) -> (usize, Scalar<'a>) {
        let i = self.index;
        self.index += 1;
        (i, s)
    }
}

pub(crate) fn parse_bool(index: usize, s: Scalar<'_>) -> Result<bool, TensorProblem> {
    match s {
        Scalar::True => Ok(true),
        Scalar::False => Ok(false),
        other => Err(TensorProblem::WrongKind {
            index,
            expected: "a boolean",
            found: other.kind(),
        }),
    }
}

/// An integer type of the protocol.
pub(crate) trait IntElement: Sized + TryFrom<i64> + TryFrom<u64> {
    const NAME: &'static str;
}

macro_rules! int_element {
    ($($t:ty => $name:literal),*) => {$(
        impl IntElement for $t {
            const NAME: &'static str = $name;
        }
    )*};
}
int_element!(u8 => "UINT8", u16 => "UINT16", u32 => "UINT32", u64 => "UINT64",
             i8 => "INT8", i16 => "INT16", i32 => "INT32", i64 => "INT64");

pub(crate) fn parse_int<T: IntElement>(index: usize, s: Scalar<'_>) -> Result<T, TensorProblem> {
    let Scalar::Number(text) = s else {
        return Err(TensorProblem::WrongKind {
            index,
            expected: "an integer",
            found: s.kind(),
        });
    };
    let out_of_range = TensorProblem::OutOfRange {
        index,
        datatype: T::NAME,
    };
    let is_integer = text
        .strip_prefix('-')
        .unwrap_or(text)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if !is_integer {
        return Err(TensorProblem::WrongKind {
            index,
            expected: "an integer",
            found: "a non-integer number",
        });
    }
    if text.starts_with('-') {
        let v: i64 = text.parse().map_err(|_| out_of_range.clone())?;
        T::try_from(v).map_err(|_| out_of_range)
    } else {
        let v: u64 = text.parse().map_err(|_| out_of_range.clone())?;
        T::try_from(v).map_err(|_| out_of_range)
    }
}

/// A float type of the protocol.
pub(crate) trait FloatElement: Sized + std::str::FromStr {
    const NAME: &'static str;
    const NAN: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    fn finite(&self) -> bool;
}

impl FloatElement for f32 {
    const NAME: &'static str = "FP32";
    const NAN: Self = f32::NAN;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

impl FloatElement for f64 {
    const NAME: &'static str = "FP64";
    const NAN: Self = f64::NAN;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

/// Parses a JSON number straight into `T` (correctly rounded once; an `f32` is never read through `f64`).
pub(crate) fn parse_float<T: FloatElement>(
    index: usize,
    s: Scalar<'_>,
) -> Result<T, TensorProblem> {
    match s {
        Scalar::Number(text) => {
            let v: T = text.parse().map_err(|_| TensorProblem::WrongKind {
                index,
                expected: "a number",
                found: "a malformed number",
            })?;
            if v.finite() {
                Ok(v)
            } else {
                Err(TensorProblem::OutOfRange {
                    index,
                    datatype: T::NAME,
                })
            }
        }
        Scalar::String("NaN") => Ok(T::NAN),
        Scalar::String("Infinity") => Ok(T::INFINITY),
        Scalar::String("-Infinity") => Ok(T::NEG_INFINITY),
        other => Err(TensorProblem::WrongKind {
            index,
            expected: "a number (or \"NaN\", \"Infinity\", \"-Infinity\")",
            found: other.kind(),
        }),
    }
}
