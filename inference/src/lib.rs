//! Cloister's inference engine: ONNX models run with tract, loaded from bytes only.
//!
//! Who runs it: the enclave (to serve a decrypted model) and `cloister seal` (to check a model before sealing
//! it). Secrets it may hold: plaintext model weights, only while the caller holds a [`DecodedModel`] or a
//! [`LoadedModel`], and the client's tensors while a request runs. It holds and links no key and no sealing
//! code, does no I/O, and takes its tensor types from `cloister-kserve`.
//!
//! One loader for two users: the enclave (`cloister_enclave::inference` re-exports this crate), which loads the
//! decrypted model and serves it, and `cloister seal`, which checks a model before it is sealed with this same
//! code ([`DecodedModel`], [`LoadedModel::from_decoded`]), so that a model that seals is a model the enclave
//! loads. No I/O (models and tensors are buffers), no keys; plaintext weights are held only while the caller
//! holds a [`DecodedModel`] or a [`LoadedModel`].
//!
//! Trust assumptions (DESIGN §1, STYLE conventions 12–13):
//! - The ONNX bytes given to [`LoadedModel::load`] are the plaintext of a sealed model whose digest the caller
//!   has already checked against policy. They are still **untrusted input**: a model owner is not trusted by
//!   the clients nor by the operator, and tract is a large parser. So the bytes are parsed here and nowhere else,
//!   external data is refused (nothing outside the buffer is ever read, nothing is mmapped), and a tract panic
//!   while loading or running becomes an error instead of taking the enclave down.
//! - The tensors given to [`LoadedModel::run`] come from an attested client through the HTTP layer: untrusted
//!   input. Names, datatypes, ranks, fixed dimensions, symbolic dimensions shared between inputs and element
//!   counts are checked before tract sees them.
//! - Inputs and outputs are confidential: [`TensorData`]'s `Debug` prints the datatype and the length, never
//!   the values.
//!
//! Symbolic dimensions (batch, sequence, height, width…): the model is typed and optimized **once**, with its
//! symbols, at load time, and tract binds each symbol per request from the shapes of that request's inputs
//! (`SimpleState::set_input` resolves them) — [`Planning::Symbolic`]; MiniLM-class transformers and plain
//! MLP/CNN graphs take this path. Input dimensions that the ONNX file leaves unnamed (`dim_param` "?", a
//! negative `dim_value`, or no value at all) first get a fresh symbol of their own. tract 0.23 cannot type every
//! graph symbolically: when a shape is computed from the input shape through an op it does not follow (Magika:
//! `Shape → Cast(int32) → Concat → Cast(int64) → Expand`; PaddleOCR: `Shape → … → Reshape`), loading falls back to
//! [`Planning::PerShape`]: one plan per distinct set of input shapes, optimized on first use and kept in a small
//! LRU ([`PLAN_CACHE_CAPACITY`]); the plan for "every symbol = 1" is built at load time, so that a model tract
//! cannot run at all is refused at load.
#![forbid(unsafe_code)]

mod convert;
mod decoded;
mod error;
mod footprint;
pub mod llm;
mod model;
mod planning;
mod tensors;

pub use decoded::DecodedModel;
pub use error::{Error, Stage};
pub use footprint::{Footprint, OutputSize, SCRATCH_FACTOR};
pub use model::{
    LoadedModel, Planning, PreparedRun, RunLimits, FOOTPRINT_CACHE_CAPACITY, PLAN_CACHE_CAPACITY,
};
pub use tensors::{ModelMetadata, NamedTensor, TensorRole, TensorSpec};

/// The engine speaks the protocol's tensor types (`cloister_kserve`); re-exported for its users.
pub use cloister_kserve::{Datatype, TensorData};

/// The `platform` string of the Open Inference Protocol v2 model metadata.
pub const PLATFORM: &str = "onnx";

#[cfg(test)]
mod tests;
