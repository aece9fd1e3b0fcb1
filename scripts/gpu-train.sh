#!/usr/bin/env bash
# Trains the base of the default model (models/fashion-dit-base.safetensors) and its two ablations side by side on one CUDA GPU,
# within a wall-clock budget. This is the script that made the base weights, which the default model fine-tunes
# (see models/TRAINING.md).
#
#   scripts/gpu-train.sh CARRY_DIR OUT_DIR BUDGET_SECONDS 2>&1 | tee OUT_DIR/console.log
#
# (DEVICE=cpu BATCH=8 HIDDEN=32 HEADS=2 tries the script's logic on a machine without a GPU.)
#
# CARRY_DIR holds odelt-model.xz (a stripped `cargo build --release -p odelt-nodes --bin odelt-model
# --features odelt-nodes/cuda`), train-images-idx3-ubyte.xz and train-labels-idx1-ubyte.gz (Fashion-MNIST).
# The step count S is chosen from a calibration (up to 60 s) of the three runs together (same flags), rounded down
# to a multiple of 1000, so all three objectives get exactly the same number of steps; S is printed and recorded
# in each run's run.json (argv), and the same command with `--steps S` reproduces a run.
set -u
C=${1:-.gpu}
OUT=${2:-out}
BUDGET=${3:-480}
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }
mkdir -p "$OUT" /tmp/fm /tmp/gt /tmp/cal /tmp/run

[ "${DEVICE:-cuda}" = cpu ] || nvidia-smi -L || { echo "no GPU"; exit 1; }
xz -dc "$C/odelt-model.xz" > /tmp/gt/odelt-model && chmod +x /tmp/gt/odelt-model || exit 1
xz -dc "$C/train-images-idx3-ubyte.xz" > /tmp/fm/train-images-idx3-ubyte || exit 1
cp "$C/train-labels-idx1-ubyte.gz" /tmp/fm/ || exit 1

# The binary links libcudart/libcublas(Lt)/libcurand of CUDA 13: take them from the machine's Python packages.
LIBS=$(find /opt /usr/local /usr/lib -maxdepth 9 \( -name 'libcublas.so.13*' -o -name 'libcublasLt.so.13*' \
    -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
if [ "${DEVICE:-cuda}" != cpu ] && ldd /tmp/gt/odelt-model | grep "not found"; then echo "missing libraries (searched: $LIBS)"; exit 1; fi
B=/tmp/gt/odelt-model
echo "setup done at $(elapsed)s"

COMMON=(--data /tmp/fm --device "${DEVICE:-cuda}" --batch "${BATCH:-256}" --lr 6e-4 --warmup 500 --weight-decay 0.01 --ema 0.999 --seed 0
    --hidden "${HIDDEN:-96}" --depth 6 --heads "${HEADS:-4}" --patch 4 --mlp-ratio 4 --depth-group 2 --depth-min 2)
declare -A FLAGS=([main]="" [nolen]="--no-length-consistency" [notime]="--no-time-consistency")

# Calibration: the three runs together, as they will run.
for v in main nolen notime; do
    # shellcheck disable=SC2086
    timeout 60 "$B" train "${COMMON[@]}" ${FLAGS[$v]} --steps 100000 --checkpoint-every 100000 --log-every 50 \
        --out /tmp/cal/$v > /tmp/cal/$v.txt 2>&1 &
    PIDS="${PIDS:-} $!"
done
# stop as soon as every run has logged 80 steps (or after 60 s)
for _ in $(seq 1 60); do
    sleep 1
    ok=1
    for v in main nolen notime; do
        [ "$(wc -l 2>/dev/null < /tmp/cal/$v/log.csv || echo 0)" -gt 80 ] || ok=0
    done
    [ $ok = 1 ] && break
done
# shellcheck disable=SC2086
kill $PIDS 2>/dev/null
# shellcheck disable=SC2086
wait $PIDS 2>/dev/null
STEP_S=0
for v in main nolen notime; do
    n=$(($(wc -l 2>/dev/null < /tmp/cal/$v/log.csv || echo 1) - 1))
    if [ "$n" -lt 20 ]; then echo "calibration of $v failed ($n steps):"; tail -20 /tmp/cal/$v.txt; exit 1; fi
    # median seconds per step after the first 10 (warm-up, kernel loading)
    s=$(tail -n +12 /tmp/cal/$v/log.csv | cut -d, -f7 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "calibration $v: $n steps, median $s s/step; last line: $(tail -1 /tmp/cal/$v.txt)"
    STEP_S=$(awk -v a="$STEP_S" -v b="$s" 'BEGIN {print (b > a) ? b : a}')
done
LEFT=$((BUDGET - $(elapsed) - 45))
S=$(awk -v l="$LEFT" -v s="$STEP_S" 'BEGIN {n = int(l / (s * 1.06) / 1000) * 1000; if (n < 1000) n = 1000; print n}')
echo "step time $STEP_S s (slowest run), $LEFT s left -> S = $S steps each (at $(elapsed)s)"

for v in main nolen notime; do
    # shellcheck disable=SC2086
    timeout $((LEFT + 30)) "$B" train "${COMMON[@]}" ${FLAGS[$v]} --steps "$S" --checkpoint-every 1000 \
        --log-every 500 --out /tmp/run/$v --export /tmp/run/$v/model-ema.safetensors > /tmp/run/$v.txt 2>&1 &
    RPIDS="${RPIDS:-} $!"
done
# shellcheck disable=SC2086
wait $RPIDS
for v in main nolen notime; do
    echo "== $v: $(grep -c . /tmp/run/$v/log.csv) log lines; $(tail -2 /tmp/run/$v.txt | tr '\n' ' ')"
    cp /tmp/run/$v.txt /tmp/run/$v/console.txt
done
tar czf "$OUT/runs.tar.gz" --exclude state.safetensors --exclude '*.tmp' -C /tmp/run main nolen notime
split -b 15m /tmp/run/main/state.safetensors "$OUT/main-state.part-"
ls -la "$OUT"
echo "finished at $(elapsed)s"
