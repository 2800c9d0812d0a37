//! The canonical bytes of a set of tensors, which receipts hash (so that anyone holding the request or the
//! response, as JSON or binary, can recompute the digest):
//!
//! ```text
//! SHA-256( "cloister-tensors-v1" 0x00 | kind ("request" | "response") 0x00 | count u32 |
//!          per tensor, in the order of the body: name_len u32 | name (UTF-8) | datatype_len u32 | datatype |
//!                                                rank u32 | dims u64 × rank | data_len u64 | data )
//! integers little-endian; datatype as in the protocol ("FP32"); data = the binary-extension bytes
//! (little-endian elements, BOOL one byte 0 or 1)
//! ```
//!
//! The same tensor in JSON or in binary has the same digest; parameters, `id` and the order of JSON members
//! do not count.

use cloister_kserve::InferTensor;

/// Which side of an inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request's inputs.
    Request,
    /// The response's outputs.
    Response,
}

/// The canonical digest of `tensors` (see the module documentation).
pub fn tensors_digest(side: Side, tensors: &[InferTensor]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"cloister-tensors-v1\0");
    ctx.update(match side {
        Side::Request => b"request\0".as_slice(),
        Side::Response => b"response\0".as_slice(),
    });
    ctx.update(&(tensors.len() as u32).to_le_bytes());
    for t in tensors {
        ctx.update(&(t.name.len() as u32).to_le_bytes());
        ctx.update(t.name.as_bytes());
        let datatype = t.datatype.name();
        ctx.update(&(datatype.len() as u32).to_le_bytes());
        ctx.update(datatype.as_bytes());
        ctx.update(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            ctx.update(&d.to_le_bytes());
        }
        let data = t.data.as_ref().map(|d| d.to_le_bytes()).unwrap_or_default();
        ctx.update(&(data.len() as u64).to_le_bytes());
        ctx.update(&data);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
