#!/usr/bin/env bash
# Fills a wheel folder for bench/gpu_suite.sh. Never commit wheels: .wheelhouse/ is git-ignored.
#
#   bash bench/make_wheelhouse.sh [DIR]             # DIR (default .wheelhouse): the wheels the GPU
#       image lacks (cp312, manylinux x86_64, --no-deps: their needs are on the image), which the
#       device tool carries (`carry: [".wheelhouse"]`); the whole tree that travels must stay
#       under 64 MiB, so the folder is capped at WHEELHOUSE_MAX_MIB (default 48)
#   bash bench/make_wheelhouse.sh --faiss [DIR]     # the same, and re-check whether a faiss GPU
#       build fits (downloads ~640 MB to a scratch folder; kept only if the cap allows)
#   bash bench/make_wheelhouse.sh --rehearsal DIR   # wheels for a no-index CPU venv of THIS
#       python: torch==$TORCH_PIN (default 2.13.0), triton, and the tools the GPU image has
#       (numpy, pytest, pybind11, scikit-build-core, cmake, ninja), with their dependencies, plus
#       the GPU wheels (pure Python). tests/test_bench_suite.py builds its venv from it.
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=gpu FAISS=0
while (($#)); do
  case "$1" in
    --rehearsal) MODE=rehearsal ;;
    --faiss) FAISS=1 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
DIR="${1:-.wheelhouse}"
PY="${PY:-}" # the python whose pip downloads (and, for --rehearsal, whose wheels are fetched)
[[ -z "$PY" && -x .venv/bin/python ]] && PY=.venv/bin/python
PY="${PY:-python3}"
PIP=("$PY" -m pip download --quiet --disable-pip-version-check)
# Wheels the GPU image lacks: inf-cl (pure Python; numpy and triton are on the image).
GPU_WHEELS=(inf-cl==1.2.1)
# The GPU machine: CPython 3.12 on x86-64 (manylinux).
GPU_PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
MAX_MIB="${WHEELHOUSE_MAX_MIB:-48}"
mkdir -p "$DIR"

size_mib() { du -sm "$@" | awk '{s += $1} END {print s + 0}'; }

if [[ $MODE == rehearsal ]]; then
  "${PIP[@]}" -d "$DIR" "torch==${TORCH_PIN:-2.13.0}" triton numpy pytest pybind11 \
    scikit-build-core cmake ninja
  "${PIP[@]}" --no-deps -d "$DIR" "${GPU_WHEELS[@]}"
  echo "rehearsal wheelhouse $DIR: $(ls "$DIR"/*.whl | wc -l) wheels, $(size_mib "$DIR") MiB"
  exit 0
fi

"${PIP[@]}" --no-deps "${GPU_PLATFORM[@]}" -d "$DIR" "${GPU_WHEELS[@]}"
MANIFEST="$DIR/MANIFEST.txt"
{
  echo "wheelhouse for bench/gpu_suite.sh (cp312 manylinux x86_64), made $(date -u +%F)"
  for w in "$DIR"/*.whl; do printf '  %-60s %8d bytes\n' "$(basename "$w")" "$(stat -c %s "$w")"; done
} >"$MANIFEST"

FAISS_NOTE="faiss GPU: not carried: faiss-gpu-cu12 1.14.1.post1 is 48.4 MB but needs \
nvidia-cublas-cu12 (581 MB) and nvidia-cuda-runtime-cu12 (3.5 MB), the GPU image has CUDA 13 \
libraries only; faiss-gpu 1.15.1 alone is 135 MB (checked 2026-12-04; --faiss re-checks). \
The search step compares against torch only."
if [[ $FAISS == 1 ]]; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "${PIP[@]}" --no-deps "${GPU_PLATFORM[@]}" -d "$TMP" faiss-gpu-cu12 \
    'nvidia-cuda-runtime-cu12>=12.1.105' 'nvidia-cublas-cu12>=12.1.3.1'
  need=$(size_mib "$TMP")
  have=$(size_mib "$DIR")
  if ((need + have <= MAX_MIB)); then
    mv "$TMP"/*.whl "$DIR"/
    FAISS_NOTE="faiss GPU: carried ($need MiB with its CUDA 12 libraries)"
  else
    FAISS_NOTE="faiss GPU: not carried: faiss-gpu-cu12 with its CUDA 12 libraries is $need MiB \
($(cd "$TMP" && ls -s --block-size=M ./*.whl | tr '\n' ' ')), over the ${MAX_MIB} MiB cap. The \
search step compares against torch only."
  fi
fi
echo "$FAISS_NOTE" >>"$MANIFEST"
total=$(size_mib "$DIR")
echo "total: $total MiB (cap $MAX_MIB MiB)" >>"$MANIFEST"
cat "$MANIFEST"
if ((total > MAX_MIB)); then
  echo "$DIR is $total MiB: over the $MAX_MIB MiB cap (the device tool carries 64 MiB in all)" >&2
  exit 1
fi
