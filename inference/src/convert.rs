//! Tensors between the protocol's types and tract's.

use tract_onnx::prelude::{DatumType, Tensor, TractError, TractResult};

use crate::{Datatype, TensorData};

/// Maps tract's datum type. `TDim` (tract's symbolic integers, which ONNX declares as int64) is `INT64`.
pub(crate) fn datatype_of(dt: DatumType) -> Option<Datatype> {
    Some(match dt {
        DatumType::Bool => Datatype::Bool,
        DatumType::U8 => Datatype::Uint8,
        DatumType::U16 => Datatype::Uint16,
        DatumType::U32 => Datatype::Uint32,
        DatumType::U64 => Datatype::Uint64,
        DatumType::I8 => Datatype::Int8,
        DatumType::I16 => Datatype::Int16,
        DatumType::I32 => Datatype::Int32,
        DatumType::I64 | DatumType::TDim => Datatype::Int64,
        DatumType::F32 => Datatype::Fp32,
        DatumType::F64 => Datatype::Fp64,
        _ => return None,
    })
}

/// Builds a tract tensor of `shape`; the caller has checked that the element count matches.
pub(crate) fn to_tensor(data: &TensorData, shape: &[usize]) -> TractResult<Tensor> {
    match data {
        TensorData::Bool(v) => Tensor::from_shape(shape, v),
        TensorData::Uint8(v) => Tensor::from_shape(shape, v),
        TensorData::Uint16(v) => Tensor::from_shape(shape, v),
        TensorData::Uint32(v) => Tensor::from_shape(shape, v),
        TensorData::Uint64(v) => Tensor::from_shape(shape, v),
        TensorData::Int8(v) => Tensor::from_shape(shape, v),
        TensorData::Int16(v) => Tensor::from_shape(shape, v),
        TensorData::Int32(v) => Tensor::from_shape(shape, v),
        TensorData::Int64(v) => Tensor::from_shape(shape, v),
        TensorData::Fp32(v) => Tensor::from_shape(shape, v),
        TensorData::Fp64(v) => Tensor::from_shape(shape, v),
        // Unreachable: the datatype was checked against the model's, which `datatype_of` produced.
        other => Err(unsupported(other.datatype())),
    }
}

/// Copies the elements out of a tract tensor, as `datatype`.
pub(crate) fn from_tensor(tensor: &Tensor, datatype: Datatype) -> TractResult<TensorData> {
    // tract represents some int64 values (shapes) as TDim; they leave the enclave as INT64.
    let tensor = if tensor.datum_type() == DatumType::TDim {
        std::borrow::Cow::Owned(tensor.cast_to::<i64>()?.into_owned())
    } else {
        std::borrow::Cow::Borrowed(tensor)
    };
    let plain = tensor.try_as_plain_ram()?;
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(plain.as_slice::<bool>()?.to_vec()),
        Datatype::Uint8 => TensorData::Uint8(plain.as_slice::<u8>()?.to_vec()),
        Datatype::Uint16 => TensorData::Uint16(plain.as_slice::<u16>()?.to_vec()),
        Datatype::Uint32 => TensorData::Uint32(plain.as_slice::<u32>()?.to_vec()),
        Datatype::Uint64 => TensorData::Uint64(plain.as_slice::<u64>()?.to_vec()),
        Datatype::Int8 => TensorData::Int8(plain.as_slice::<i8>()?.to_vec()),
        Datatype::Int16 => TensorData::Int16(plain.as_slice::<i16>()?.to_vec()),
        Datatype::Int32 => TensorData::Int32(plain.as_slice::<i32>()?.to_vec()),
        Datatype::Int64 => TensorData::Int64(plain.as_slice::<i64>()?.to_vec()),
        Datatype::Fp32 => TensorData::Fp32(plain.as_slice::<f32>()?.to_vec()),
        Datatype::Fp64 => TensorData::Fp64(plain.as_slice::<f64>()?.to_vec()),
        // Unreachable: output datatypes come from `datatype_of`.
        other => return Err(unsupported(other)),
    })
}

/// A datatype of the protocol that has no tract counterpart here (a variant added to the protocol later).
fn unsupported(datatype: Datatype) -> TractError {
    TractError::msg(format!(
        "datatype {datatype} is not supported by the engine"
    ))
}
