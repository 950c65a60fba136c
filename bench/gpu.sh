#!/usr/bin/env bash
# The GPU figures in one run, on a machine with a CUDA GPU, from the repository root:
#   doctor     styleforge doctor --json: versions, each op's backend and why, the kernel checks
#   op_tests   pytest tests/test_ops.py: every kernel against its reference, CUDA cases included
#   ops        bench/ops.py --device cuda: kernels vs reference, forward + backward
#   train      bench/train.py at 256x256 config F, batch 16, fp32 and bf16: s/kimg, peak memory
#   peer       with --peer-nvidia PATH: stylegan2-ada-pytorch's train.py, same GPU and setting
# then OUT/gpu.json (bench/gpu.py collect) with every step's exit status and figures, and the
# NVIDIA/ours s/kimg ratio. A failing step is recorded and the next one runs; the exit status
# is 1 if any failed. Logs and each step's own JSON: OUT/gpu/. About 10 minutes on one GPU,
# most of it the CUDA build (first run), the training workers and the peer's start-up.
#
#   bash bench/gpu.sh [--peer-nvidia PATH] [--peer-kimg 8] [--out bench/results] [--dry-run]
#
# --dry-run: any machine, every step in a tiny CPU form (the peer run is GPU-only: its dataset is
# made and its command printed); OUT/gpu.json is still written, marked dry_run. It checks this
# script and the steps' plumbing, not the figures.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0 PEER="" PEER_KIMG=8 OUT=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --peer-nvidia) PEER=${2:?--peer-nvidia needs a path}; shift ;;
    --peer-kimg) PEER_KIMG=${2:?--peer-kimg needs a number}; shift ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python}
LOGS=$OUT/gpu
mkdir -p "$LOGS"
L=$(printf %q "$LOGS")  # as it must appear in the command lines below
rm -f "$LOGS"/*.json "$LOGS"/*.xml "$LOGS"/*.log  # figures of an earlier run must not pass for this one's
: > "$LOGS/steps.tsv"

# step NAME COMMAND: run COMMAND (a shell line), its output also in LOGS/NAME.log; record
# NAME, exit status, seconds and COMMAND in LOGS/steps.tsv.
step() {
  local name=$1 command=$2 start=$SECONDS code
  echo "== $name: $command"
  bash -c "$command" 2>&1 | tee "$LOGS/$name.log"
  code=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" "$command" >> "$LOGS/steps.tsv"
  echo "== $name: exit $code after $((SECONDS - start)) s"
}

if [ "$DRY" = 1 ]; then
  # One thread: the dry run is a plumbing check, often on a small shared machine.
  export OMP_NUM_THREADS=1
  DOCTOR_ARGS="--device cpu --seconds 1"
  TEST_ARGS="-k 'cpu and gradients'"  # a few CPU cases; the suite itself runs them all
  OPS_ARGS="--device cpu --batch 1 --repeats 1 --shrink 8"
  TRAIN_ARGS="--device cpu --size 32 --batch 4 --config tiny --steps 1 --rounds 1"
else
  if ! $PY -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "bench/gpu.sh: torch sees no CUDA device here; run it on a GPU machine, or with --dry-run" >&2
    exit 2
  fi
  # A GPU machine often has its own torch and no package index: install styleforge itself only,
  # offline, and name what is still missing (the step that needs it fails and is recorded).
  if ! $PY -c "import styleforge.model.ops" 2>/dev/null; then
    echo "== styleforge is not importable: pip install --no-deps --no-build-isolation -e ."
    $PY -m pip install -q --no-deps --no-build-isolation -e . || exit 2
  fi
  for need in "typer:doctor" "pytest:op_tests" "pydantic:train (styleforge.core.config)" "psutil:peer" "click:peer"; do
    $PY -c "import ${need%%:*}" 2>/dev/null || echo "== missing Python package ${need%%:*}, needed by ${need#*:}: install or carry its wheels first"
  done
  DOCTOR_ARGS="--device cuda --seconds 10"
  TEST_ARGS=""
  OPS_ARGS="--device cuda"
  # One round per mode: a dedicated GPU is not shared the way a CPU is, and it halves the time.
  TRAIN_ARGS="--device cuda --size 256 --batch 16 --config f --rounds 1"
fi

step doctor "$PY -m styleforge.app.cli doctor --json $DOCTOR_ARGS > $L/doctor.json"
step op_tests "$PY -m pytest -q -p no:cacheprovider tests/test_ops.py $TEST_ARGS --junitxml=$L/op_tests.xml"
step ops "$PY bench/ops.py $OPS_ARGS --out $L/ops.json"
step train "$PY bench/train.py $TRAIN_ARGS --out $L/train.json"

SKIPPED=()
if [ -n "$PEER" ]; then
  step peer "$PY bench/gpu.py peer --checkout $(printf %q "$PEER") --kimg $PEER_KIMG --out $L/peer.json$([ "$DRY" = 1 ] && echo ' --dry-run')"
else
  echo "== peer: skipped: no --peer-nvidia PATH (a stylegan2-ada-pytorch checkout) was given"
  SKIPPED=(--peer-skipped "no --peer-nvidia PATH given")
fi

$PY bench/gpu.py collect --dir "$LOGS" --out "$OUT/gpu.json" ${SKIPPED[@]+"${SKIPPED[@]}"} \
  $([ "$DRY" = 1 ] && echo --dry-run)
