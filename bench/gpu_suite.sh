#!/usr/bin/env bash
# Everything only a GPU can show, in one run of at most 8 minutes on one H100/H200:
#   1. install the GPU extras (triton, faiss-gpu-cu12, inf-cl) into the venv
#   2. the Triton tests, compiled for real (no interpreter)
#   3. bench_loss.py at B=N=65536, D=768, bf16: ours-triton and the public API against eager
#      torch and inf-cl, one-directional and symmetric
#   4. bench_search.py against faiss.knn_gpu and chunked torch for M in {8, 128, 1024, 8192}
#   5. one table of every row with its fraction of the bf16 matmul peak and of the device-copy
#      bandwidth measured in the same run; result files under bench/results/
#
#   bash bench/gpu_suite.sh            # on the GPU machine, from the repository root
#   bash bench/gpu_suite.sh --dry-run  # anywhere (CPU): prints every step and runs the bench
#                                      # scripts' --dry-run (argument parsing, rows, table)
# Environment: PY (default .venv/bin/python, else python3), SUITE_BUDGET_S (default 480).
set -euo pipefail

cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
PY="${PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
BUDGET="${SUITE_BUDGET_S:-480}"
START=$(date +%s)
if [[ $DRY == 1 ]]; then
  RESULTS="$(mktemp -d)"
  export DENSESCALE_BENCH_RESULTS="$RESULTS"  # dry rows never land in bench/results/
else
  RESULTS="bench/results"
fi
STAMP_FILE="$(mktemp)"  # result files newer than this belong to this run

# Per-step limits (seconds) that add up to the budget: install, tests, loss, search.
T_INSTALL=90 T_TESTS=110 T_LOSS=170 T_SEARCH=100

left() { echo $((BUDGET - ($(date +%s) - START))); }
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local remaining
  remaining=$(left)
  ((limit > remaining)) && limit=$remaining
  echo "== step: $name (limit ${limit}s) :: $*"
  if [[ $DRY == 1 && $name != bench-* ]]; then
    echo "   (dry run: not executed)"
    return 0
  fi
  if ((limit <= 0)); then
    echo "   skipped: the ${BUDGET}s budget is spent"
    return 0
  fi
  local rc=0
  timeout "$limit" "$@" || rc=$?
  if ((rc != 0)); then echo "   step $name exited with $rc (continuing)"; fi
  return 0
}

if [[ $DRY == 0 ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "no NVIDIA GPU visible"; exit 2; }
fi

step install "$T_INSTALL" "$PY" -m pip install --quiet triton faiss-gpu-cu12 inf-cl
step triton-tests "$T_TESTS" env -u TRITON_INTERPRET "$PY" -m pytest -q -x \
  tests/test_search_triton.py tests/test_loss_triton.py
LOSS_ARGS=(--device cuda --shapes 65536x768 --dtype bfloat16 --symmetric both
  --providers torch api ours-triton inf-cl --modes forward full --rep 20)
SEARCH_ARGS=(--device cuda --gpu-ms 8 128 1024 8192 --gpu-k 100)
if [[ $DRY == 1 ]]; then  # same arguments; --dry-run swaps in tiny shapes on the CPU
  LOSS_ARGS+=(--dry-run)
  SEARCH_ARGS+=(--dry-run)
fi
step bench-loss "$T_LOSS" "$PY" bench/bench_loss.py "${LOSS_ARGS[@]}"
step bench-search "$T_SEARCH" "$PY" bench/bench_search.py "${SEARCH_ARGS[@]}"

echo "== step: summary (fractions of the peaks measured in this run)"
mapfile -t FILES < <(find "$RESULTS" -maxdepth 1 -name 'bench_*.json' -newer "$STAMP_FILE" | sort)
rm -f "$STAMP_FILE"
if ((${#FILES[@]} == 0)); then
  echo "no result files were written"
  exit 1
fi
"$PY" bench/_harness.py summary "${FILES[@]}"
echo "== done in $(($(date +%s) - START))s; results: ${FILES[*]}"
if [[ $DRY == 1 ]]; then rm -rf "$RESULTS"; fi
