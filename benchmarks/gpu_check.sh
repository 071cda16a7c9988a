#!/usr/bin/env bash
# One-shot check of minidl on a GPU machine (no network, nothing installed; under 8 minutes).
#
#   bash benchmarks/gpu_check.sh [--device cuda|cuda:N|cpu] [--quick] [OUTDIR]
#
# Before carrying the tree to the GPU machine, write the data subset it trains on:
#   python benchmarks/prepare_gpu_data.py            # -> .gpu_data/ (git-ignored, ~37 MB)
# and carry .gpu_data with the tree.
#
# Steps, each with its own time limit (on CUDA they add up to TOTAL_S = 465 s, and a
# step is cut to what is left of it), each logging to OUTDIR/<step>.log; a failed or
# timed-out step never stops the script, since one device run must show every failure:
#   env          versions, the GPU; on CUDA compiles and runs one of minidl's raw kernels
#                (NVRTC) and one float32 matrix product (cuBLAS), and reports which
#                products CuPy runs in TF32 under --tf32: benchmarks/gpu_env.py
#   pytest       the whole test suite, every failure (no -x); device tests run on CUDA
#   parity       every kernel, forward and backward, CPU vs the device (benchmarks/parity.py)
#   bench        AlexNet "seed" train/inference vs PyTorch, peak memory, per-layer breakdown
#   kernels      conv vs GEMM roofline, pooling/BN/ReLU vs copy bandwidth, vs PyTorch
#   train        a short real-data run of examples/alexnet_cifar10.py (variant cifar)
# and, end to end through the command line (python -m minidl ...) on the same data:
#   seed         minidl train --variant seed (the bilinear resize 32 -> 224 on the device)
#   paper        minidl train --variant paper (227 x 227, local response norm)
#   resume       the seed run interrupted within its epoch, then --resume: equal to `seed`
#                (benchmarks/cli_checks.py resume)
#   predict      minidl predict with the seed run's best.npz on three test images
#   folder       minidl train --dataset folder on an image folder written from the data
#   tf32         the seed run with --tf32
# Then a summary (OUTDIR/summary.txt): every step's status, time and last line of
# output; the exit status is 1 if any step failed.
# OUTDIR defaults to $OUT when set, else benchmarks/results/gpu_check. --quick shrinks
# every step (for a CPU rehearsal: bash benchmarks/gpu_check.sh --device cpu --quick).
set -u
cd "$(dirname "$0")/.." || exit 2

DEVICE=cuda
QUICK=0
OUTDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --device=*) DEVICE="${1#--device=}"; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
        *) OUTDIR="$1"; shift ;;
    esac
done
OUTDIR="${OUTDIR:-${OUT:-benchmarks/results/gpu_check}}"
mkdir -p "$OUTDIR" || exit 2
PY="${PYTHON:-python3}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # minidl is not pip-installed there
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

DATA_DIR="${DATA_DIR:-.gpu_data}"
if [ ! -d "$DATA_DIR/cifar-10-batches-py" ] && [ -d ../shared/data/cifar-10-batches-py ]; then
    DATA_DIR=../shared/data
fi

# Settings per device; --quick shrinks them all.
read -r -a PYTEST_EXTRA <<< "${PYTEST_ARGS:-}"  # extra pytest arguments from the environment
KILL_AFTER=5  # a step that ignores SIGTERM at its limit is killed this many seconds later
if [ "${DEVICE%%:*}" = "cuda" ]; then
    # 8 minutes in all: 465 s of steps, each plus at most KILL_AFTER, and the summary.
    TOTAL_S=465
    T_ENV=20; T_PYTEST=150; T_PARITY=30; T_BENCH=65; T_KERNELS=30; T_TRAIN=30   # with the next line:
    T_SEED=30; T_PAPER=30; T_RESUME=35; T_PREDICT=10; T_FOLDER=20; T_TF32=15     # sums to TOTAL_S
    BENCH_ARGS="--batch-size 128 --warmup 2 --iters 5 --per-layer --per-layer-iters 3"
    KERNEL_ARGS="--iters 5"
    TRAIN_ARGS="--batch-size 128 --val-size 1000 --limit-train 4000 --limit-val 1000 --limit-test 1000"
    # 12 steps of 64: checkpoints within the epoch every 4 (the resume step interrupts after the first)
    SEED_ARGS="--batch-size 64 --val-size 256 --limit-train 768 --limit-val 256 --limit-test 256 --checkpoint-every 4"
    FOLDER_ARGS="--batch-size 32"; IMAGES_PER_CLASS=100
else
    TOTAL_S=7200
    T_ENV=20; T_PYTEST=1200; T_PARITY=120; T_BENCH=900; T_KERNELS=600; T_TRAIN=900
    T_SEED=600; T_PAPER=600; T_RESUME=900; T_PREDICT=60; T_FOLDER=300; T_TF32=600
    BENCH_ARGS="--batch-size 32 --warmup 1 --iters 3 --per-layer --per-layer-iters 2"
    KERNEL_ARGS="--iters 3"
    TRAIN_ARGS="--batch-size 128 --val-size 1000 --limit-train 4000 --limit-val 1000 --limit-test 1000"
    SEED_ARGS="--batch-size 32 --val-size 64 --limit-train 256 --limit-val 64 --limit-test 64 --checkpoint-every 2"
    FOLDER_ARGS="--batch-size 32"; IMAGES_PER_CLASS=100
fi
if [ "$QUICK" = 1 ]; then
    BENCH_ARGS="--batch-size 8 --warmup 1 --iters 1 --per-layer --per-layer-iters 1"
    KERNEL_ARGS="--batch-size 4 --iters 1 --warmup 1 --peak-size 512"
    TRAIN_ARGS="--batch-size 64 --val-size 1000 --limit-train 512 --limit-val 256 --limit-test 256"
    SEED_ARGS="--batch-size 8 --val-size 16 --limit-train 32 --limit-val 8 --limit-test 8 --checkpoint-every 2"
    FOLDER_ARGS="--batch-size 16"; IMAGES_PER_CLASS=16
    [ -z "${PYTEST_ARGS:-}" ] && PYTEST_EXTRA=(-m "not slow")
fi

START=$(date +%s)
FAILED=0
SUMMARY=()

# step NAME LIMIT_S COMMAND...: run with a time limit (cut to what is left of TOTAL_S), log, record.
step() {
    local name="$1" limit="$2"; shift 2
    local now left t0 rc status
    now=$(date +%s)
    left=$((TOTAL_S - (now - START)))
    if [ "$left" -lt 5 ]; then
        SUMMARY+=("$(printf '%-8s %-8s %5s %6s  %s' "$name" SKIPPED - 0 "no time left")")
        FAILED=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*" | tee "$OUTDIR/$name.log"
    t0=$(date +%s)
    timeout --kill-after="$KILL_AFTER" "$limit" "$@" >> "$OUTDIR/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=TIMEOUT; FAILED=1 ;;
        *) status=FAIL; FAILED=1 ;;
    esac
    tail -n 3 "$OUTDIR/$name.log" | sed 's/^/   /'
    SUMMARY+=("$(printf '%-8s %-8s %5s %6ss  %s' "$name" "$status" "$rc" "$(($(date +%s) - t0))" "$(last_line "$name")")")
}

# last_line NAME: the step's last non-empty line of output, shortened, for the summary.
last_line() {
    grep -v '^[[:space:]]*$' "$OUTDIR/$1.log" | tail -n 1 | cut -c 1-110
}

# skip NAME REASON: a step that cannot run (its input is missing) is a failure in the summary.
skip() {
    SUMMARY+=("$(printf '%-8s %-8s %5s %6s  %s' "$1" FAIL - 0s "$2")")
    FAILED=1
}

echo "gpu_check: device $DEVICE, quick=$QUICK, output $OUTDIR, data $DATA_DIR"

step env "$T_ENV" bash -c "uptime; (nvidia-smi || true); exec '$PY' benchmarks/gpu_env.py --device '$DEVICE'"

step pytest "$T_PYTEST" "$PY" -m pytest -q -p no:cacheprovider ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}

step parity "$T_PARITY" "$PY" benchmarks/parity.py --device "$DEVICE" --json "$OUTDIR/parity.json"

# shellcheck disable=SC2086  # the argument strings are split into words on purpose
step bench "$T_BENCH" "$PY" benchmarks/bench_alexnet.py --device "$DEVICE" $BENCH_ARGS --json "$OUTDIR/alexnet.json"

# shellcheck disable=SC2086  # the argument strings are split into words on purpose
step kernels "$T_KERNELS" "$PY" benchmarks/bench_kernels.py --device "$DEVICE" $KERNEL_ARGS \
    --json "$OUTDIR/kernels.json"

rm -rf "$OUTDIR/train" "$OUTDIR/seed" "$OUTDIR/paper" "$OUTDIR/resume" "$OUTDIR/folder" "$OUTDIR/tf32" \
    "$OUTDIR/images"
if [ ! -d "$DATA_DIR/cifar-10-batches-py" ]; then  # no network there: do not try to download
    for name in train seed paper resume predict folder tf32; do
        skip "$name" "no $DATA_DIR/cifar-10-batches-py: run benchmarks/prepare_gpu_data.py and carry .gpu_data"
    done
else
    # shellcheck disable=SC2086  # the argument strings are split into words on purpose
    step train "$T_TRAIN" "$PY" examples/alexnet_cifar10.py --variant cifar --device "$DEVICE" \
        --data-dir "$DATA_DIR" --epochs 1 $TRAIN_ARGS --no-progress --out "$OUTDIR/train"

    # The command line, end to end: every run one epoch of real images, no plots.
    CLI_ARGS=(--device "$DEVICE" --data-dir "$DATA_DIR" --epochs 1 --no-progress --no-plots)
    # shellcheck disable=SC2206  # the argument string is split into words on purpose
    SEED=("${CLI_ARGS[@]}" --variant seed $SEED_ARGS)
    step seed "$T_SEED" "$PY" -m minidl train "${SEED[@]}" --out "$OUTDIR/seed"
    # shellcheck disable=SC2086
    step paper "$T_PAPER" "$PY" -m minidl train "${CLI_ARGS[@]}" --variant paper $SEED_ARGS --out "$OUTDIR/paper"
    step resume "$T_RESUME" "$PY" benchmarks/cli_checks.py resume --reference "$OUTDIR/seed" \
        --out "$OUTDIR/resume" --timeout "$T_RESUME" -- "${SEED[@]}"
    "$PY" benchmarks/cli_checks.py images --data-dir "$DATA_DIR" --out "$OUTDIR/images" \
        --per-class "$IMAGES_PER_CLASS" > "$OUTDIR/images.log" 2>&1
    if [ -f "$OUTDIR/seed/best.npz" ] && [ -d "$OUTDIR/images/predict" ]; then
        step predict "$T_PREDICT" "$PY" -m minidl predict --weights "$OUTDIR/seed/best.npz" --device "$DEVICE" \
            "$OUTDIR/images/predict/test_0.png" "$OUTDIR/images/predict/test_1.png" "$OUTDIR/images/predict/test_2.png"
    else
        skip predict "no $OUTDIR/seed/best.npz or test images ($OUTDIR/images.log)"
    fi
    if [ -d "$OUTDIR/images/folder" ]; then
        # shellcheck disable=SC2086
        step folder "$T_FOLDER" "$PY" -m minidl train --device "$DEVICE" --dataset folder \
            --data-dir "$OUTDIR/images/folder" --variant cifar --epochs 1 $FOLDER_ARGS --no-progress --no-plots \
            --out "$OUTDIR/folder"
    else
        skip folder "no image folder ($OUTDIR/images.log)"
    fi
    step tf32 "$T_TF32" "$PY" -m minidl train "${SEED[@]}" --tf32 --out "$OUTDIR/tf32"
fi

{
    echo "gpu_check summary: device $DEVICE, quick=$QUICK, $(($(date +%s) - START))s in all"
    printf '%-8s %-8s %5s %7s  %s\n' step status rc time "last line (the whole output: $OUTDIR/<step>.log)"
    printf '%s\n' "${SUMMARY[@]}"
    if [ "$FAILED" = 0 ]; then echo "all steps passed"; else echo "SOME STEPS FAILED"; fi
} | tee "$OUTDIR/summary.txt"
exit "$FAILED"
