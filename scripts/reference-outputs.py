#!/usr/bin/env python3
"""Writes onnxruntime's outputs for the sample models to models/sample/reference/*.json.

tests/it/models.rs (`tract_matches_onnxruntime_reference_outputs`) runs the same inputs through the enclave's
tract engine and compares: floats within |tract - ort| <= 1e-4 + 1e-4 * |ort|, integers and booleans exactly.

Models: the Magika model (inputs: the features the magika 1.0.3 package computes for files of
models/sample/magika/testdata), the synthetic MLP and mixed-input models, and, if scripts/fetch-models.sh has
fetched it, PaddleOCR's text-direction classifier (its reference is marked optional: the test skips it when
the model is absent). The bigger benchmark models get no committed reference.

Inputs are deterministic: explicit values, or a `fill` formula both sides evaluate in float32,
x[i] = f32((i * mul) % modulus) * scale + offset.

Usage:
    python3 -m venv /tmp/ort-venv && /tmp/ort-venv/bin/pip install onnxruntime numpy
    /tmp/ort-venv/bin/python scripts/reference-outputs.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover
    sys.exit(f"reference-outputs: {e}; run it with a venv that has onnxruntime and numpy (see --help)")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "sample" / "reference"

V2 = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
}


def fill(shape, mul, modulus, scale, offset):
    n = int(np.prod(shape, dtype=np.int64))
    idx = np.arange(n, dtype=np.int64)
    x = ((idx * mul) % modulus).astype(np.float32) * np.float32(scale) + np.float32(offset)
    return x.reshape(shape)


def data_json(a: np.ndarray):
    flat = a.reshape(-1)
    if a.dtype == np.float32:
        # Shortest text that parses back to the same float32.
        return [float(str(v)) for v in flat]
    if a.dtype == np.bool_:
        return [bool(v) for v in flat]
    return [v.item() for v in flat]


def tensor_json(name: str, a: np.ndarray, fill_spec=None):
    t = {"name": name, "datatype": V2[a.dtype], "shape": list(a.shape)}
    if fill_spec is not None:
        t["fill"] = fill_spec
    else:
        t["data"] = data_json(a)
    return t


def run_cases(model_path: Path, cases):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    result = []
    for name, inputs in cases:
        feeds = {k: v[0] for k, v in inputs.items()}
        outputs = sess.run(out_names, feeds)
        result.append(
            {
                "name": name,
                "inputs": [tensor_json(k, a, spec) for k, (a, spec) in inputs.items()],
                "outputs": [tensor_json(n, np.asarray(o)) for n, o in zip(out_names, outputs)],
            }
        )
    return result


def write(model: str, rel_path: str, cases, optional=False):
    path = ROOT / rel_path
    doc = {
        "model": model,
        "path": rel_path,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "optional": optional,
        "generator": "scripts/reference-outputs.py",
        "onnxruntime": ort.__version__,
        "tolerance": {"abs": 1e-4, "rel": 1e-4},
        "cases": run_cases(path, cases),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    # One tensor per line keeps diffs readable without a line per number.
    lines = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=1)[:-2] + ',\n "cases": [\n'
    case_texts = []
    for case in doc["cases"]:
        parts = ['  {"name": ' + json.dumps(case["name"])]
        for key in ("inputs", "outputs"):
            tensors = ",\n".join("    " + json.dumps(t, separators=(",", ":")) for t in case[key])
            parts.append(f'   "{key}": [\n{tensors}\n   ]')
        case_texts.append(",\n".join(parts) + "}")
    text = lines + ",\n".join(case_texts) + "\n ]\n}\n"
    (OUT / f"{model}.json").write_text(text)
    print(f"wrote {OUT / (model + '.json')} ({len(cases)} cases)")


def magika():
    vectors = json.loads((ROOT / "models/sample/magika/testdata/vectors.json").read_text())["vectors"]
    feats = {v["file"]: v["features"] for v in vectors}
    two = np.array([feats["python.py"], feats["image.png"]], dtype=np.int32)
    one = np.array([feats["elf.bin"]], dtype=np.int32)
    write(
        "magika",
        "models/sample/magika/model.onnx",
        [
            ("python.py+image.png", {"bytes": (two, None)}),
            ("elf.bin", {"bytes": (one, None)}),
        ],
    )


def mlp():
    x1 = (np.arange(16, dtype=np.float32) / np.float32(64) - np.float32(0.125)).reshape(1, 16)
    x3 = (((np.arange(48, dtype=np.int64) * 29) % 37).astype(np.float32) / np.float32(16) - np.float32(1)).reshape(3, 16)
    write(
        "mlp",
        "models/sample/mlp/model.onnx",
        [("batch1", {"x": (x1, None)}), ("batch3", {"x": (x3, None)})],
    )


def mixed():
    x2 = (np.arange(16, dtype=np.float32) / np.float32(4) - np.float32(2)).reshape(2, 8)
    x1 = (np.arange(8, dtype=np.float32)[::-1] / np.float32(8)).reshape(1, 8).copy()
    write(
        "mixed",
        "models/sample/mixed/model.onnx",
        [
            (
                "batch2_k3",
                {
                    "x": (x2, None),
                    "k": (np.array(3, dtype=np.int64), None),
                    "offsets": (np.arange(-4, 4, dtype=np.int32), None),
                },
            ),
            (
                "batch1_k-2",
                {
                    "x": (x1, None),
                    "k": (np.array(-2, dtype=np.int64), None),
                    "offsets": (np.arange(8, dtype=np.int32)[::-1].copy(), None),
                },
            ),
        ],
    )


def ppocr_cls():
    rel = ".cache/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not (ROOT / rel).exists():
        print(f"SKIP ppocr_cls: {rel} not fetched (scripts/fetch-models.sh); keeping the committed reference")
        return
    spec = {"mul": 37, "modulus": 101, "scale": 0.015625, "offset": -0.75}
    cases = []
    for shape in [(1, 3, 48, 192), (2, 3, 48, 100)]:
        x = fill(shape, **spec)
        cases.append(("x" + "x".join(map(str, shape)), {"x": (x, spec)}))
    write("ppocr_cls", rel, cases, optional=True)


def main() -> int:
    if len(sys.argv) > 1:
        print(__doc__)
        return 0
    magika()
    mlp()
    mixed()
    ppocr_cls()
    return 0


if __name__ == "__main__":
    sys.exit(main())
