#!/usr/bin/env bash
# Everything only a GPU can show (issues 24 and 25), in one run of about 9 minutes on one H200,
# with no network: every pip call is --no-index, missing packages come from a carried wheelhouse.
#   wheels        pip install --no-index --no-deps $WHEELHOUSE/*.whl (inf-cl; see make_wheelhouse.sh)
#   build         the C++ extension, editable, no build isolation, no index
#   peaks         bf16 matmul peak and device-copy bandwidth, measured now (gpu_suite.py peaks)
#   triton-tests  tests/test_{search,loss}_triton.py compiled for real (TRITON_INTERPRET unset)
#   loss          bench_loss.py, B = N = 65,536, D = 768, bf16, forward+backward, in-batch and
#                 symmetric: eager torch, public API, ours-triton, inf-cl
#   step          one training step of the L2-H128 encoder at B = 16,384 (eager loss vs the API)
#   search        bench_search_gpu.py: fp32 / bf16 corpora, k 10/100/1000, M 8..8192, MS MARCO dev
#   loss-compile  bench_loss.py's torch.compile provider (compilation is slow: it goes last)
#   summary       one short table; files under bench/results/ (and a tarball in $OUT, if set)
#
#   bash bench/gpu_suite.sh                        # on the GPU machine, from the repository root
#   bash bench/gpu_suite.sh --quick                # about 5 minutes: fewer k, reps and cases
#   bash bench/gpu_suite.sh --dry-run              # anywhere (CPU): every step at tiny sizes; the
#                                                  # GPU-only rows say "skipped: no GPU"
#   bash bench/gpu_suite.sh --dry-run --no-install # the same without the wheels / build steps
#                                                  # (a dev venv that already has densescale)
# Environment: PY (default .venv/bin/python, else python3), SUITE_BUDGET_S (default 540; 300 with
# --quick), WHEELHOUSE (default .wheelhouse), SUITE_BUILD_DIR (default build/gpu-suite/{wheel_tag}),
# OUT (where a tarball of this run's results goes, e.g. the device tool's $OUT).
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=0 QUICK=0 INSTALL=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
PY="${PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
BUDGET="${SUITE_BUDGET_S:-$([[ $QUICK == 1 ]] && echo 300 || echo 540)}"
WHEELHOUSE="${WHEELHOUSE:-.wheelhouse}"
BUILD_DIR="${SUITE_BUILD_DIR:-}" # (a literal {wheel_tag} cannot sit inside ${...:-...})
[[ -n "$BUILD_DIR" ]] || BUILD_DIR='build/gpu-suite/{wheel_tag}'
# No step may reach for the network: pip reads no config (no extra index, no find-links of this
# machine), never an index, and never checks its own version.
export PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
START=$(date +%s)
STAMP=$(date +%Y%m%d-%H%M%S)
if [[ $DRY == 1 ]]; then
  RESULTS="$(mktemp -d)"
  export DENSESCALE_BENCH_RESULTS="$RESULTS" # dry rows never land in bench/results/
else
  RESULTS="bench/results"
  mkdir -p "$RESULTS"
fi
LOG="$RESULTS/gpu_suite-$STAMP.log"
exec > >(tee -a "$LOG") 2>&1
STAMP_FILE="$(mktemp)" # result files newer than this belong to this run

# Per-step limits (s). Each is also cut to what is left of the budget; the search step gets its
# limit as --budget-s and skips the cases left when it is spent, so its rows are never lost.
T_WHEELS=30 T_BUILD=90 T_PEAKS=30 T_TESTS=90 T_LOSS=100 T_STEP=45 T_SEARCH=210 T_COMPILE=90
if [[ $QUICK == 1 ]]; then T_TESTS=70 T_LOSS=60 T_SEARCH=120 T_COMPILE=60; fi

left() { echo $((BUDGET - ($(date +%s) - START))); }
declare -a SUMMARY=()
step() { # step NAME LIMIT_S COMMAND...   (a failing step is reported; the suite goes on)
  local name=$1 limit=$2
  shift 2
  local remaining
  remaining=$(left)
  ((limit > remaining)) && limit=$remaining
  echo "== step: $name (limit ${limit}s) :: $*"
  if ((limit <= 5)); then
    echo "   skipped: the ${BUDGET}s budget is spent"
    SUMMARY+=("$name: skipped (budget)")
    return 0
  fi
  local rc=0 t0
  t0=$(date +%s)
  # SIGINT first: Python writes the rows it has (finally blocks), pytest prints its summary
  timeout -s INT -k 20 "$limit" "$@" || rc=$?
  local dt=$(($(date +%s) - t0))
  if ((rc == 0)); then
    SUMMARY+=("$name: ok (${dt}s)")
  else
    echo "   step $name exited with $rc after ${dt}s (continuing)"
    SUMMARY+=("$name: exit $rc (${dt}s)")
  fi
  return 0
}
note() { # a step that is not run here, with the reason
  echo "== step: $1 :: skipped: $2"
  SUMMARY+=("$1: skipped ($2)")
}

HAS_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAS_GPU=1; fi
if [[ $DRY == 0 && $HAS_GPU == 0 ]]; then
  echo "no NVIDIA GPU visible: run with --dry-run for the CPU rehearsal"
  exit 2
fi
echo "== gpu_suite $STAMP  python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))" \
  " budget ${BUDGET}s  dry=$DRY quick=$QUICK"
[[ $HAS_GPU == 1 ]] && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem \
  --format=csv,noheader

# 1. wheels the GPU image lacks, from the carried folder; 2. the extension, built here
if [[ $INSTALL == 1 ]]; then
  if compgen -G "$WHEELHOUSE/*.whl" >/dev/null; then
    step wheels "$T_WHEELS" "$PY" -m pip install --quiet --no-index --no-deps --no-compile \
      --find-links "$WHEELHOUSE" "$WHEELHOUSE"/*.whl
  else
    note wheels "no $WHEELHOUSE/*.whl (bash bench/make_wheelhouse.sh fills it): inf-cl rows skip"
  fi
  [[ -f "$WHEELHOUSE/MANIFEST.txt" ]] && sed 's/^/   /' "$WHEELHOUSE/MANIFEST.txt"
  step build "$T_BUILD" "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation \
    -C "build-dir=$BUILD_DIR" -e .
else
  note wheels "--no-install"
  note build "--no-install"
fi
"$PY" -c 'import densescale, densescale._native as n, densescale.kernels
print("   densescale", densescale.__file__, "| _C built:", n.has_native())' ||
  echo "   densescale does not import from $PY"

# 3. peaks, measured in this run
DRYARG=()
[[ $DRY == 1 ]] && DRYARG=(--dry-run)
step peaks "$T_PEAKS" "$PY" bench/gpu_suite.py peaks "${DRYARG[@]}"

# 4. the Triton tests, compiled for real
TESTS=(tests/test_search_triton.py tests/test_loss_triton.py)
if [[ $HAS_GPU == 1 ]]; then
  step triton-tests "$T_TESTS" env -u TRITON_INTERPRET "$PY" -m pytest -q -p no:cacheprovider \
    --durations=5 "${TESTS[@]}"
else
  echo "   triton-tests: skipped: no GPU (only collected here, under the interpreter)"
  step triton-tests "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider --collect-only -qq "${TESTS[@]}"
fi

# 5. loss, 6. training step
LOSS_ARGS=(--device cuda --shapes 65536x768 --dtype bfloat16 --symmetric both
  --providers torch api ours-triton inf-cl --modes full forward --rep 4)
COMPILE_ARGS=(--device cuda --shapes 65536x768 --dtype bfloat16 --symmetric both
  --providers torch.compile --modes full --rep 4)
if [[ $QUICK == 1 ]]; then
  LOSS_ARGS=(--device cuda --shapes 65536x768 --dtype bfloat16 --symmetric both
    --providers torch api ours-triton inf-cl --modes full --rep 2)
fi
step loss "$T_LOSS" "$PY" bench/gpu_suite.py loss -- "${LOSS_ARGS[@]}" "${DRYARG[@]}"
step step "$T_STEP" "$PY" bench/gpu_suite.py step "${DRYARG[@]}"

# 7. search: ends itself inside its limit (--budget-s), writing every case as it goes
SEARCH_LIMIT=$T_SEARCH
((SEARCH_LIMIT > $(left))) && SEARCH_LIMIT=$(left)
SEARCH_ARGS=(--budget-s $((SEARCH_LIMIT > 40 ? SEARCH_LIMIT - 30 : 10)))
[[ $QUICK == 1 ]] && SEARCH_ARGS+=(--quick)
step search "$SEARCH_LIMIT" "$PY" bench/bench_search_gpu.py "${SEARCH_ARGS[@]}" "${DRYARG[@]}"

# 8. torch.compile last: its compilation takes minutes and nothing waits on it
if [[ $HAS_GPU == 1 ]]; then
  step loss-compile "$T_COMPILE" "$PY" bench/gpu_suite.py loss -- "${COMPILE_ARGS[@]}"
else
  note loss-compile "no GPU (inductor on the CPU takes minutes)"
  echo "   would run: bench/gpu_suite.py loss -- ${COMPILE_ARGS[*]}"
fi

echo "== step: summary (fractions of the peaks measured in this run)"
printf '   %s\n' "${SUMMARY[@]}"
mapfile -t FILES < <(find "$RESULTS" -maxdepth 1 -name 'bench_*.json' -newer "$STAMP_FILE" | sort)
rm -f "$STAMP_FILE"
if ((${#FILES[@]} == 0)); then
  echo "no result files were written"
  exit 1
fi
TABLE="$RESULTS/gpu_suite-$STAMP-summary.txt"
"$PY" bench/gpu_suite.py summary "${FILES[@]}" >"$TABLE" 2>&1
RC=$?
echo "== results: ${FILES[*]} $TABLE $LOG"
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
  cp "$TABLE" "$OUT/summary.txt"
  tar czf "$OUT/gpu_suite-$STAMP.tar.gz" "${FILES[@]}" "${FILES[@]/%.json/.csv}" "$TABLE" "$LOG" \
    2>/dev/null
  echo "== copied to \$OUT: summary.txt, gpu_suite-$STAMP.tar.gz (unpack from the repository root)"
fi
echo "== done in $(($(date +%s) - START))s"
cat "$TABLE" # the one short table, last
if [[ $DRY == 1 ]]; then rm -rf "$RESULTS"; fi
exit $RC
