#!/usr/bin/env python3
"""Regenerates the Magika test vectors used by `client/src/magika.rs`.

Writes deterministic input files into `files/` and, for each, what the real
`magika==1.0.3` Python package does with it into `vectors.json`:

- `features`: the model input row (beg ints followed by end ints, exactly what
  `Magika._get_raw_predictions` hands to onnxruntime), computed by
  `Magika._extract_features_from_seekable` even where the package would not run
  the model (empty and tiny files), because the Rust `features()` is total;
- `path`: "empty", "few_bytes" or "model": which branch of
  `Magika._get_result_or_features_from_seekable` decided;
- `scores` (model branch only): the 214 raw onnxruntime scores;
- `dl_label`, `output_label`, `score`, `overwrite_reason`: the package's
  `MagikaResult` in the default HIGH_CONFIDENCE mode.

Usage (needs network only for pip, once):

    python3 -m venv /tmp/magika-venv
    /tmp/magika-venv/bin/pip install magika==1.0.3 onnxruntime
    /tmp/magika-venv/bin/python models/sample/magika/testdata/generate.py

The inputs are generated without randomness from the environment: "random"
bytes come from SHA-256 in counter mode.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import magika
import numpy as np
from magika import Magika
from magika.types import Seekable

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
SAMPLE = HERE.parent

EXPECTED_VERSION = "1.0.3"


def det_bytes(label: str, n: int) -> bytes:
    """n pseudo-random bytes: SHA-256(label || counter_be32) concatenated."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(label.encode() + struct.pack(">I", counter)).digest()
        counter += 1
    return bytes(out[:n])


def png_bytes() -> bytes:
    """A valid 16x16 RGB PNG (zlib level 0, so independent of zlib's tuning)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    w = h = 16
    raw = b"".join(
        b"\x00" + b"".join(bytes((x * 16, y * 16, (x + y) * 8)) for x in range(w))
        for y in range(h)
    )
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )


def elf_bytes() -> bytes:
    """An ELF64 x86-64 executable header, one PT_LOAD header and a tiny body."""
    e_ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\x00" * 8
    ehdr = e_ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # e_type: ET_EXEC
        0x3E,  # e_machine: x86-64
        1,  # e_version
        0x401000,  # e_entry
        64,  # e_phoff
        0,  # e_shoff
        0,  # e_flags
        64,  # e_ehsize
        56,  # e_phentsize
        1,  # e_phnum
        64,  # e_shentsize
        0,  # e_shnum
        0,  # e_shstrndx
    )
    body = bytes.fromhex("b83c0000004831ff0f05")  # mov eax,60; xor rdi,rdi; syscall
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 0x1000, 0x1000, 0x1000)
    out = ehdr + phdr
    out += b"\x00" * (256 - len(out))
    return out + body + b"\x00" * 54


PYTHON_SRC = b'''#!/usr/bin/env python3
"""A small command-line tool that counts words in files."""

import argparse
import collections
import sys
from pathlib import Path


def count_words(path: Path) -> collections.Counter:
    counter = collections.Counter()
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            counter.update(word.lower() for word in line.split())
    return counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    total = collections.Counter()
    for p in args.paths:
        total += count_words(p)
    for word, n in total.most_common(args.top):
        print(f"{n:8d} {word}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

JSON_DOC = (
    json.dumps(
        {
            "name": "cloister",
            "version": "0.1.0",
            "models": [
                {"name": "magika", "inputs": [{"name": "bytes", "shape": [-1, 2048]}]},
                {"name": "mlp", "inputs": [{"name": "x", "shape": [-1, 16]}]},
            ],
            "limits": {"max_body_bytes": 16777216, "max_concurrency": 4},
            "enabled": True,
        },
        indent=2,
        sort_keys=True,
    ).encode()
    + b"\n"
)


def large_text() -> bytes:
    words = (
        "the enclave attests its launch measurement before any client sends an input "
        "and the host only ever relays ciphertext between the two parties while the "
        "model owner releases the key to an attested enclave that satisfies the policy"
    ).split()
    lines = []
    for i in range(600):
        n = 7 + (i * 5) % 9
        lines.append(" ".join(words[(i * 3 + k) % len(words)] for k in range(n)).capitalize() + ".")
    return ("\n".join(lines) + "\n").encode()


def cases() -> list[tuple[str, bytes, str]]:
    return [
        ("python.py", PYTHON_SRC, "Python source"),
        ("data.json", JSON_DOC, "JSON document"),
        ("image.png", png_bytes(), "16x16 RGB PNG"),
        ("elf.bin", elf_bytes(), "ELF64 header, one PT_LOAD, tiny body"),
        ("random.bin", det_bytes("cloister-magika-random", 3000), "3000 pseudo-random bytes"),
        ("empty", b"", "empty file"),
        ("one_byte", b"A", "1-byte file"),
        ("seven_bytes.txt", b"abcdefg", "7 bytes: below min_file_size_for_dl"),
        ("seven_bytes_binary", b"\xff\xfe\x00\x01\x80\x81\xc0", "7 non-UTF-8 bytes"),
        ("eight_bytes.txt", b"abcdefgh", "8 bytes: exactly min_file_size_for_dl"),
        (
            "short.txt",
            b"Short note: shorter than beg_size and end_size, padded on both sides.\n",
            "shorter than the block sizes",
        ),
        ("large.txt", large_text(), "large text (> block_size)"),
        (
            "whitespace_wrapped.txt",
            b"\x0b\x0c \t\r\n  key = value\nother = 42\n \t\x0b\x0c\r\n",
            "Python's bytes.strip() whitespace set, including \\x0b and \\x0c",
        ),
        (
            "whitespace_then_few.txt",
            b" " * 5000 + b"abc",
            "mostly whitespace: beg has < 8 tokens after lstrip -> few-bytes path",
        ),
        (
            "whitespace_then_few_binary",
            b"\n" * 20 + b"\xff\xfe\xfd",
            "whitespace then 3 non-UTF-8 bytes -> few-bytes path, unknown",
        ),
        ("block_size.bin", det_bytes("cloister-magika-4096", 4096), "exactly block_size bytes"),
        (
            "block_size_plus_one.txt",
            (b"0123456789abcdef" * 257)[:4097],
            "block_size + 1 bytes of text",
        ),
        (
            "leading_ws_large.txt",
            b"\n" * 4000 + large_text(),
            "whitespace spanning most of the first block",
        ),
    ]


def features_row(config, content: bytes) -> list[int]:
    fs = Magika._extract_features_from_seekable(
        Seekable(io.BytesIO(content)),
        config.beg_size,
        config.mid_size,
        config.end_size,
        config.padding_token,
        config.block_size,
        config.use_inputs_at_offsets,
    )
    # Same assembly as Magika._get_raw_predictions.
    row: list[int] = []
    if config.beg_size > 0:
        row.extend(fs.beg[: config.beg_size])
    if config.mid_size > 0:
        row.extend(fs.mid[: config.mid_size])
    if config.end_size > 0:
        row.extend(fs.end[-config.end_size :])
    return row


def main() -> int:
    if magika.__version__ != EXPECTED_VERSION:
        print(f"need magika=={EXPECTED_VERSION}, found {magika.__version__}", file=sys.stderr)
        return 1
    m = Magika()
    pkg_model = Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"
    committed = SAMPLE / "model.onnx"
    if pkg_model.read_bytes() != committed.read_bytes():
        print("installed magika model differs from the committed one", file=sys.stderr)
        return 1
    config = m._model_config

    FILES.mkdir(exist_ok=True)
    vectors = []
    for name, content, note in cases():
        (FILES / name).write_bytes(content)
        result, feats = m._get_result_or_features_from_seekable(Seekable(io.BytesIO(content)))
        entry = {
            "file": name,
            "note": note,
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        if result is not None:
            entry["path"] = "empty" if len(content) == 0 else "few_bytes"
        else:
            entry["path"] = "model"
            scores = m._get_raw_predictions([(Path("-"), feats)])[0]
            # Shortest text that round-trips to the same float32 (the model's dtype).
            entry["scores"] = [float(str(np.float32(s))) for s in scores]
        res = m.identify_bytes(content)
        pred = res.prediction
        entry["dl_label"] = str(pred.dl.label)
        entry["output_label"] = str(pred.output.label)
        entry["score"] = float(str(np.float32(pred.score)))
        entry["overwrite_reason"] = str(pred.overwrite_reason.name)
        entry["features"] = features_row(config, content)
        vectors.append(entry)
        print(f"{name:30} {entry['path']:10} {entry['dl_label']:12} {entry['output_label']:10} {entry['score']:.4f}")

    doc = {
        "generator": "models/sample/magika/testdata/generate.py",
        "magika_version": magika.__version__,
        "prediction_mode": "high-confidence",
        "vectors": vectors,
    }
    # One vector per line: readable diffs without a line per feature.
    vec_lines = ",\n".join("  " + json.dumps(v, separators=(",", ":")) for v in vectors)
    head = json.dumps({k: v for k, v in doc.items() if k != "vectors"}, indent=1)[:-2]
    (HERE / "vectors.json").write_text(head + ',\n "vectors": [\n' + vec_lines + "\n ]\n}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
