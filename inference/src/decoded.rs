//! A decoded ONNX model before tract sees it: external data refused, weights wiped on drop.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use prost::Message;
use tract_onnx::data_resolver::ModelDataResolver;
use tract_onnx::pb;
use tract_onnx::prelude::{TractError, TractResult};
use zeroize::Zeroize;

use crate::Error;

/// A decoded ONNX `ModelProto`, not yet given to tract: the first step of [`LoadedModel::load`], and what
/// `cloister seal` inspects before it loads the model the same way ([`LoadedModel::from_decoded`]).
///
/// It holds a plaintext copy of every weight, wiped when it is dropped, on every path.
pub struct DecodedModel(pub(crate) pb::ModelProto);

impl fmt::Debug for DecodedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedModel").finish_non_exhaustive()
    }
}

impl Drop for DecodedModel {
    fn drop(&mut self) {
        wipe_weights(&mut self.0);
    }
}

impl DecodedModel {
    /// Decodes the protobuf. `onnx` is untrusted: the decoder is bounded by the buffer and by prost's
    /// recursion limit, and does not panic.
    pub fn decode(onnx: &[u8]) -> Result<Self, Error> {
        pb::ModelProto::decode(onnx)
            .map(Self)
            .map_err(Error::ModelDecode)
    }

    /// The decoded protobuf.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.0
    }

    /// Refuses a model whose tensors point at external files (ONNX `data_location = EXTERNAL` or any
    /// `external_data` entry), wherever a tensor can sit: initializers, sparse initializers, node attributes,
    /// subgraphs (If/Loop/Scan bodies), functions and training info. Names the first such tensor.
    ///
    /// The model comes from the untrusted model owner; an external reference would make tract read a host
    /// file (by default through mmap), outside the sealed and attested bytes.
    pub fn reject_external_data(&self) -> Result<(), Error> {
        let mut found = None;
        visit_tensors(&self.0, &mut |t| {
            let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
                || !t.external_data.is_empty();
            if external && found.is_none() {
                found = Some(t);
            }
        });
        match found {
            Some(t) => Err(Error::ExternalData {
                tensor: t.name.clone(),
                location: t
                    .external_data
                    .iter()
                    .find(|kv| kv.key == "location")
                    .map(|kv| kv.value.clone()),
            }),
            None => Ok(()),
        }
    }

    /// The operators of the main graph and of its subgraphs (`If`, `Loop`, `Scan` bodies) that tract's ONNX
    /// front end has no builder for, each once, sorted: `op_type`, prefixed `domain:` outside the default
    /// domain. Loading such a model fails later, with a less direct message (tract inserts a placeholder).
    pub fn unsupported_operators(&self) -> Vec<String> {
        /// Recursion follows subgraphs, whose depth prost bounds while decoding.
        fn collect(graph: &pb::GraphProto, onnx: &tract_onnx::Onnx, out: &mut BTreeSet<String>) {
            for node in &graph.node {
                if !onnx.op_register.0.contains_key(&node.op_type) {
                    out.insert(if node.domain.is_empty() || node.domain == "ai.onnx" {
                        node.op_type.clone()
                    } else {
                        format!("{}:{}", node.domain, node.op_type)
                    });
                }
                for attr in &node.attribute {
                    for g in attr.g.iter().chain(&attr.graphs) {
                        collect(g, onnx, out);
                    }
                }
            }
        }
        let onnx = tract_onnx::onnx();
        let mut out = BTreeSet::new();
        if let Some(graph) = &self.0.graph {
            collect(graph, &onnx, &mut out);
        }
        out.into_iter().collect()
    }
}

/// Calls `f` on every tensor of the model. Recursion follows subgraphs, whose depth prost bounds while
/// decoding (its recursion limit), so a hostile nesting cannot overflow the stack here.
pub(crate) fn visit_tensors<'a>(
    model: &'a pb::ModelProto,
    f: &mut impl FnMut(&'a pb::TensorProto),
) {
    fn graph<'a>(g: &'a pb::GraphProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
        g.initializer.iter().for_each(&mut *f);
        for s in &g.sparse_initializer {
            sparse(s, f);
        }
        for n in &g.node {
            node(n, f);
        }
    }
    fn sparse<'a>(s: &'a pb::SparseTensorProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
        s.values.iter().for_each(&mut *f);
        s.indices.iter().for_each(&mut *f);
    }
    fn node<'a>(n: &'a pb::NodeProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
        for a in &n.attribute {
            a.t.iter().for_each(&mut *f);
            a.tensors.iter().for_each(&mut *f);
            for s in a.sparse_tensor.iter().chain(&a.sparse_tensors) {
                sparse(s, f);
            }
            for g in a.g.iter().chain(&a.graphs) {
                graph(g, f);
            }
        }
    }
    model.graph.iter().for_each(|g| graph(g, f));
    for func in &model.functions {
        for n in &func.node {
            node(n, f);
        }
    }
    for info in &model.training_info {
        for g in info.initialization.iter().chain(&info.algorithm) {
            graph(g, f);
        }
    }
}

/// Mutable twin of [`visit_tensors`], used to wipe the decoded weights.
fn visit_tensors_mut(model: &mut pb::ModelProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
    fn graph(g: &mut pb::GraphProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
        g.initializer.iter_mut().for_each(&mut *f);
        for s in &mut g.sparse_initializer {
            sparse(s, f);
        }
        for n in &mut g.node {
            node(n, f);
        }
    }
    fn sparse(s: &mut pb::SparseTensorProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
        s.values.iter_mut().for_each(&mut *f);
        s.indices.iter_mut().for_each(&mut *f);
    }
    fn node(n: &mut pb::NodeProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
        for a in &mut n.attribute {
            a.t.iter_mut().for_each(&mut *f);
            a.tensors.iter_mut().for_each(&mut *f);
            for s in a.sparse_tensor.iter_mut().chain(&mut a.sparse_tensors) {
                sparse(s, f);
            }
            for g in a.g.iter_mut().chain(&mut a.graphs) {
                graph(g, f);
            }
        }
    }
    model.graph.iter_mut().for_each(|g| graph(g, f));
    for func in &mut model.functions {
        for n in &mut func.node {
            node(n, f);
        }
    }
    for info in &mut model.training_info {
        for g in info.initialization.iter_mut().chain(&mut info.algorithm) {
            graph(g, f);
        }
    }
}

/// Zeroizes (then empties) the data of every tensor of the model.
pub(crate) fn wipe_weights(model: &mut pb::ModelProto) {
    visit_tensors_mut(model, &mut |t| {
        t.raw_data.zeroize();
        t.float_data.zeroize();
        t.int32_data.zeroize();
        t.int64_data.zeroize();
        t.double_data.zeroize();
        t.uint64_data.zeroize();
        t.string_data.zeroize();
    });
}

/// The data resolver tract would use for external data: it refuses. [`DecodedModel::reject_external_data`]
/// already refused such models before tract saw them; this is the second lock (STYLE convention 13), so that
/// no code path in tract can open or mmap a host file on the model's behalf.
pub(crate) struct RefuseExternalData;

impl ModelDataResolver for RefuseExternalData {
    fn read_bytes_from_path(
        &self,
        _buf: &mut Vec<u8>,
        p: &Path,
        _offset: usize,
        _length: Option<usize>,
    ) -> TractResult<()> {
        Err(TractError::msg(format!(
            "external data is not supported (model asked for {p:?})"
        )))
    }
}
