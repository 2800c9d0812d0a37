#!/usr/bin/env python3
"""Checks the SmolLM2 export of scripts/llm/export-smollm2.py with onnxruntime, and prints greedy references.

Default mode (checks; exits non-zero on a failure):
  * model.onnx: one self-contained file, default-domain ops only, opset <= 17; every past_key_values input feeds
    exactly one node, a Concat; the output layer is the Concat of MatMuls with pre-transposed [hidden, columns]
    initializers, each small enough for tract to pack once (4 MiB).
  * tokenizer.json: exact encode/decode round trips of varied text (unicode, digits, whitespace, code) and the
    chat template's special tokens, each of which must be one token.
  * KV cache, causal mask and positions: logits of the chat-templated prompt computed at once (prefill),
    token by token (decode with past), and in two chunks (prefill, then several tokens with a past) agree within
    1e-3; a left-padded batch of two prompts gives each prompt's own logits.
  * with --gguf: the ONNX logits agree with an independent numpy forward pass over the GGUF weights in their
    original llama.cpp layout (interleaved RoPE), which checks the Q/K un-permutation.
  * greedy generation (KV cache, 64 tokens) for "What is the capital of France?" must mention Paris; prints the
    text and onnxruntime's decode ms/token at --threads intra-op threads (default 1).

--greedy-json PROMPTS_FILE: prints JSON {prompt: [token ids]} of greedy completions and nothing else on stdout.
  PROMPTS_FILE is a JSON list of strings, or text with one prompt per line. Each prompt is one user message,
  rendered with chat_template.jinja (jinja2, trim_blocks and lstrip_blocks as in transformers,
  add_generation_prompt=True) and encoded without added special tokens. The completion is generated greedily
  (argmax, lowest id on ties) with the KV cache, up to --max-tokens ids; it stops after the EOS id, which is
  then the list's last element.

Usage: check-export.py --dir DIR [--gguf FILE] [--threads N]
       check-export.py --dir DIR --greedy-json PROMPTS_FILE [--max-tokens 64]
Needs: numpy, onnxruntime, tokenizers, jinja2 (+ gguf for --gguf). Tested: numpy==2.4.6 onnxruntime==1.32.0
tokenizers==0.23.3 jinja2==3.1.6 onnx==1.23.2 gguf==0.19.0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import numpy as np
    import onnxruntime as ort
    import jinja2
    from tokenizers import Tokenizer
except ImportError as e:  # pragma: no cover
    sys.exit(
        f"check-export: {e}\n"
        "  needs: pip install numpy==2.4.6 onnxruntime==1.32.0 tokenizers==0.23.3 jinja2==3.1.6 (tested versions)"
    )

FRANCE = "What is the capital of France?"
TOL = 1e-3


class Failure(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Llm:
    def __init__(self, d: Path, threads: int):
        self.dir = d
        self.gen = json.loads((d / "generation.json").read_text())
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
        self.template = env.from_string((d / "chat_template.jinja").read_text())
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.n_layer = self.gen["n_layer"]
        self.n_kv = self.gen["n_kv_heads"]
        self.hd = self.gen["head_dim"]
        self.eos = self.gen["eos_token_id"]
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def chat_ids(self, prompt: str) -> list[int]:
        text = self.template.render(messages=[{"role": "user", "content": prompt}], add_generation_prompt=True)
        return self.tok.encode(text, add_special_tokens=False).ids

    def empty_past(self, batch: int = 1) -> list[np.ndarray]:
        z = np.zeros((batch, self.n_kv, 0, self.hd), np.float32)
        return [z] * (2 * self.n_layer)

    def run(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, past: list[np.ndarray]):
        feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                "position_ids": pos.astype(np.int64)}
        for n in range(self.n_layer):
            feed[f"past_key_values.{n}.key"] = past[2 * n]
            feed[f"past_key_values.{n}.value"] = past[2 * n + 1]
        outs = self.sess.run(self.out_names, feed)
        return outs[0], outs[1:]

    def greedy(self, prompt_ids: list[int], max_tokens: int, timings: list[float] | None = None) -> list[int]:
        ids = np.array([prompt_ids], np.int64)
        t = ids.shape[1]
        logits, past = self.run(ids, np.ones((1, t), np.int64), np.arange(t)[None], self.empty_past())
        out: list[int] = []
        while len(out) < max_tokens:
            nxt = int(np.argmax(logits[0, -1]))
            out.append(nxt)
            if nxt == self.eos or len(out) == max_tokens:
                break
            t0 = time.perf_counter()
            logits, past = self.run(np.array([[nxt]]), np.ones((1, t + 1), np.int64), np.array([[t]]), past)
            if timings is not None:
                timings.append(time.perf_counter() - t0)
            t += 1
        return out


# ----------------------------------------------------------------------------------------------------------------


def check_graph(d: Path, gen: dict) -> None:
    import onnx  # only for the graph check

    m = onnx.load(str(d / "model.onnx"), load_external_data=False)
    for init in m.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL or init.external_data:
            raise Failure(f"initializer {init.name} uses external data")
    for imp in m.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            raise Failure(f"non-standard opset domain {imp.domain}")
        if imp.version > 17:
            raise Failure(f"opset {imp.version} > 17")
    consumers: dict[str, list] = {}
    for node in m.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise Failure(f"node {node.name} is in domain {node.domain}")
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for n in range(gen["n_layer"]):
        for kv in ("key", "value"):
            name = f"past_key_values.{n}.{kv}"
            c = consumers.get(name, [])
            if len(c) != 1 or c[0].op_type != "Concat" or list(c[0].output) != [f"present.{n}.{kv}"]:
                raise Failure(f"{name} must feed exactly one Concat producing present.{n}.{kv}, feeds {c}")
    inits = {i.name: i for i in m.graph.initializer}
    producers = {o: node for node in m.graph.node for o in node.output}
    lm = producers.get("logits")
    if lm is None or lm.op_type != "Concat":
        raise Failure("logits must be the Concat of the output layer's column blocks")
    hidden, columns = gen["hidden_size"], 0
    for part in lm.input:
        mm = producers.get(part)
        if mm is None or mm.op_type != "MatMul" or mm.input[1] not in inits:
            raise Failure(f"logits block {part} must come from a MatMul with an initializer")
        w = inits[mm.input[1]]
        if len(w.dims) != 2 or w.dims[0] != hidden:
            raise Failure(f"output block {w.name} has dims {list(w.dims)}, expected [hidden, columns]")
        # tract packs a constant operand once only when its packed copy ((hidden + 1) rows) fits 4 MiB.
        if (hidden + 1) * w.dims[1] * 4 > 4 << 20:
            raise Failure(f"output block {w.name} {list(w.dims)} packs to more than tract's 4 MiB folding budget")
        columns += w.dims[1]
    if columns != gen["vocab_size"]:
        raise Failure(f"output blocks cover {columns} columns, expected the vocabulary's {gen['vocab_size']}")
    ops = sorted({node.op_type for node in m.graph.node})
    log(f"graph: {len(m.graph.node)} nodes, ops {', '.join(ops)}; past inputs feed only their Concat; "
        f"lm_head {len(lm.input)} blocks [{hidden}, <=block] MatMul, Concat")


def check_tokenizer(llm: Llm) -> None:
    tok = llm.tok
    texts = [
        "Hello, world!",
        "What is the capital of France?",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n\n\nand more",
        "numbers 1234567890 3.14159 -42 1e-3 0x1F",
        "unicode: héllo wörld ñandú — “quotes” ‘single’ … ¿Qué? ¡Sí!",
        "CJK: 日本語のテキスト 中文 한국어",
        "emoji: 😀👍🏽🇫🇷 and ZWJ 👨‍👩‍👧",
        "math: ∑_{i=0}^{n} x² ≤ ∞, ∂f/∂x, √2",
        "code: fn main() { println!(\"{}\", x.len()); } // ok",
        "def f(x):\n    return x ** 2  # squared\n",
        "mixed scripts: Ελληνικά Русский عربى עברית हिन्दी",
        "",
        " ",
        "<not a special token> <|im_sep|> <|im_start",
        "\u0000\u0001\u007f control chars and \ufeff BOM",
    ]
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        if back != t:
            raise Failure(f"tokenizer round trip of {t!r} gave {back!r}")
    specials = {"<|im_start|>": 1, "<|im_end|>": 2, "<|endoftext|>": 0}
    for s, want in specials.items():
        ids = tok.encode(s, add_special_tokens=False).ids
        if ids != [want]:
            raise Failure(f"{s} encodes to {ids}, expected [{want}]")
    if tok.token_to_id(llm.gen["bos_token"]) != llm.gen["bos_token_id"] or \
            tok.token_to_id(llm.gen["eos_token"]) != llm.gen["eos_token_id"]:
        raise Failure("generation.json bos/eos disagree with tokenizer.json")
    text = llm.template.render(messages=[{"role": "user", "content": FRANCE}], add_generation_prompt=True)
    enc = tok.encode(text, add_special_tokens=False)
    if tok.decode(enc.ids, skip_special_tokens=False) != text:
        raise Failure("chat-templated prompt does not round-trip")
    if enc.ids.count(1) != 3 or enc.ids.count(2) != 2 or enc.ids[0] != 1:
        raise Failure(f"chat-templated prompt has unexpected special tokens: {enc.ids}")
    if tok.decode(enc.ids, skip_special_tokens=True) != text.replace("<|im_start|>", "").replace("<|im_end|>", ""):
        raise Failure("skip_special_tokens decode is wrong")
    # With the default (add_special_tokens=True) nothing is added: the template carries the markers.
    if tok.encode(text).ids != enc.ids:
        raise Failure("encode adds special tokens, but the GGUF says add_bos_token=false")
    log(f"tokenizer: {len(texts)} texts round-trip exactly; chat prompt = {len(enc.ids)} tokens: {enc.ids}")


def check_cache(llm: Llm) -> None:
    ids = llm.chat_ids(FRANCE)
    n = len(ids)
    a = np.array([ids])
    full, _ = llm.run(a, np.ones((1, n)), np.arange(n)[None], llm.empty_past())

    # token by token
    past = llm.empty_past()
    steps = []
    for i in range(n):
        lg, past = llm.run(a[:, i:i + 1], np.ones((1, i + 1)), np.array([[i]]), past)
        steps.append(lg[0, 0])
    d_step = float(np.max(np.abs(np.stack(steps) - full[0])))

    # two chunks: prefill k tokens, then the rest (seq > 1 with past > 0)
    k = n // 2
    lg1, past = llm.run(a[:, :k], np.ones((1, k)), np.arange(k)[None], llm.empty_past())
    lg2, _ = llm.run(a[:, k:], np.ones((1, n)), np.arange(k, n)[None], past)
    d_chunk = float(np.max(np.abs(np.concatenate([lg1[0], lg2[0]]) - full[0])))

    # left-padded batch of two prompts of different lengths
    ids2 = llm.chat_ids("Name three primary colors.")
    m = len(ids2)
    full2, _ = llm.run(np.array([ids2]), np.ones((1, m)), np.arange(m)[None], llm.empty_past())
    t = max(n, m)
    batch_ids = np.full((2, t), llm.gen["pad_token_id"], np.int64)
    mask = np.zeros((2, t), np.int64)
    pos = np.zeros((2, t), np.int64)
    for r, seq in enumerate((ids, ids2)):
        batch_ids[r, t - len(seq):] = seq
        mask[r, t - len(seq):] = 1
        pos[r, t - len(seq):] = np.arange(len(seq))
    lgb, pastb = llm.run(batch_ids, mask, pos, llm.empty_past(2))
    d_batch = max(float(np.max(np.abs(lgb[0, t - n:] - full[0]))), float(np.max(np.abs(lgb[1, t - m:] - full2[0]))))
    # one batched decode step after the padded prefill
    nxt = np.array([[int(np.argmax(full[0, -1]))], [int(np.argmax(full2[0, -1]))]])
    lgd, _ = llm.run(nxt, np.concatenate([mask, np.ones((2, 1), np.int64)], 1), np.array([[n], [m]]), pastb)
    single0, _ = llm.run(np.concatenate([a, nxt[:1]], 1), np.ones((1, n + 1)), np.arange(n + 1)[None],
                         llm.empty_past())
    d_batch_step = float(np.max(np.abs(lgd[0, 0] - single0[0, -1])))

    log(f"kv cache: max |logit diff| token-by-token {d_step:.2e}, two chunks {d_chunk:.2e}, "
        f"left-padded batch {d_batch:.2e}, batched decode step {d_batch_step:.2e} (tolerance {TOL})")
    for what, d in (("token-by-token", d_step), ("chunked", d_chunk), ("padded batch", d_batch),
                    ("batched decode", d_batch_step)):
        if not d < TOL:
            raise Failure(f"{what} logits differ from prefill by {d}")


def reference_logits(gguf_path: Path, gen: dict, ids: list[int]) -> np.ndarray:
    """Independent numpy forward pass in llama.cpp's layout: GGUF Q/K rows as stored, interleaved-pair RoPE."""
    import gguf
    import gguf.quants

    r = gguf.GGUFReader(str(gguf_path))
    tensors = {t.name: t for t in r.tensors}

    def w(name):
        t = tensors[name]
        a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        return a.reshape(tuple(int(d) for d in reversed(t.shape.tolist())))

    H, KV, hd, eps = gen["n_heads"], gen["n_kv_heads"], gen["head_dim"], gen["rms_norm_eps"]
    n = len(ids)
    emb = w("token_embd.weight")
    x = emb[ids].astype(np.float64)
    inv = 1.0 / (gen["rope_theta"] ** (np.arange(0, hd, 2) / hd))
    ang = np.arange(n)[:, None] * inv[None]  # [n, hd/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope_interleaved(t):  # t [heads, n, hd]; pairs (2i, 2i+1) rotate by angle i
        a, b = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def norm(v, g):
        return v / np.sqrt(np.mean(v * v, -1, keepdims=True) + eps) * g

    causal = np.triu(np.full((n, n), -np.inf), 1)
    for L in range(gen["n_layer"]):
        h = norm(x, w(f"blk.{L}.attn_norm.weight"))
        q = (h @ w(f"blk.{L}.attn_q.weight").T).reshape(n, H, hd).transpose(1, 0, 2)
        k = (h @ w(f"blk.{L}.attn_k.weight").T).reshape(n, KV, hd).transpose(1, 0, 2)
        v = (h @ w(f"blk.{L}.attn_v.weight").T).reshape(n, KV, hd).transpose(1, 0, 2)
        q, k = rope_interleaved(q), rope_interleaved(k)
        k = np.repeat(k, H // KV, 0)
        v = np.repeat(v, H // KV, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, H * hd)
        x = x + o @ w(f"blk.{L}.attn_output.weight").T
        h = norm(x, w(f"blk.{L}.ffn_norm.weight"))
        gt = h @ w(f"blk.{L}.ffn_gate.weight").T
        up = h @ w(f"blk.{L}.ffn_up.weight").T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ w(f"blk.{L}.ffn_down.weight").T
    x = norm(x, w("output_norm.weight"))
    out_w = w("output.weight") if "output.weight" in tensors else emb
    return x @ out_w.T


def check_reference(llm: Llm, gguf_path: Path) -> None:
    ids = llm.chat_ids(FRANCE)
    n = len(ids)
    got, _ = llm.run(np.array([ids]), np.ones((1, n)), np.arange(n)[None], llm.empty_past())
    ref = reference_logits(gguf_path, llm.gen, ids)
    d = float(np.max(np.abs(got[0] - ref)))
    same_argmax = bool(np.all(np.argmax(got[0], -1) == np.argmax(ref, -1)))
    log(f"numpy reference (GGUF layout, interleaved RoPE, float64): max |logit diff| {d:.2e}, "
        f"argmax equal at all {n} positions: {same_argmax}")
    if not d < TOL or not same_argmax:
        raise Failure(f"ONNX logits differ from the numpy reference by {d}")


def check_generation(llm: Llm, threads: int) -> None:
    for prompt in (FRANCE, "Name three primary colors.", "Write a haiku about the sea."):
        ids = llm.chat_ids(prompt)
        timings: list[float] = []
        t0 = time.perf_counter()
        out = llm.greedy(ids, 64, timings)
        total = time.perf_counter() - t0
        text = llm.tok.decode(out, skip_special_tokens=True)
        log(f"greedy [{prompt}] ({len(ids)} prompt tokens, {len(out)} generated, {total:.2f} s; "
            f"decode {1000 * np.mean(timings):.1f} ms/token at {threads} thread(s)):\n  {text!r}")
        if prompt == FRANCE and "Paris" not in text:
            raise Failure(f"the answer to {FRANCE!r} does not mention Paris: {text!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, type=Path, help="directory written by export-smollm2.py")
    ap.add_argument("--gguf", type=Path, help="also compare with a numpy forward pass over this GGUF")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--greedy-json", type=Path, metavar="PROMPTS_FILE", help="print greedy completions as JSON")
    ap.add_argument("--max-tokens", type=int, default=64, help="completion length limit for --greedy-json")
    args = ap.parse_args()

    for f in ("model.onnx", "tokenizer.json", "chat_template.jinja", "generation.json"):
        if not (args.dir / f).is_file():
            sys.exit(f"check-export: {args.dir / f} is missing (run scripts/fetch-llm.sh)")
    llm = Llm(args.dir, args.threads)

    if args.greedy_json:
        raw = args.greedy_json.read_text()
        try:
            prompts = json.loads(raw)
            if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                raise ValueError
        except ValueError:
            prompts = [line for line in raw.splitlines() if line.strip()]
        result = {p: llm.greedy(llm.chat_ids(p), args.max_tokens) for p in prompts}
        print(json.dumps(result, ensure_ascii=False, indent=1))
        return

    try:
        check_graph(args.dir, llm.gen)
        check_tokenizer(llm)
        check_cache(llm)
        if args.gguf:
            check_reference(llm, args.gguf)
        check_generation(llm, args.threads)
    except Failure as e:
        sys.exit(f"check-export: FAILED: {e}")
    log("check-export: all checks passed")


if __name__ == "__main__":
    main()
