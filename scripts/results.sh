#!/usr/bin/env bash
# Regenerates the default model's tables, plots and sample grids in docs/results/ (README.md there explains them).
# About 45 minutes on 2 cores: each table runs as two single-threaded evaluation processes side by side.
#
#   cargo build --release -p odelt-nodes --bin odelt-model && scripts/results.sh
#
# MODEL, OUT and B override the model, the output folder and the binary. The merge step alone (no sampling) is
# REPORT_ONLY=1, e.g. after the header text changed.
set -euo pipefail
B=${B:-target/release/odelt-model}
MODEL=${MODEL:-models/fashion-dit.safetensors}
OUT=${OUT:-docs/results}
export RAYON_NUM_THREADS=1
E="eval --model $MODEL --classifier models/classifier.safetensors --batch 500 --seed 1"
mkdir -p "$OUT/parts"
desc="Model $MODEL (how it was trained: models/TRAINING.md), classifier models/classifier.safetensors, Euler, class-balanced labels, seed 1."

# guidance w = 1, every T and l, N = 2000
if [ -z "${REPORT_ONLY:-}" ]; then
  $B $E --n 2000 --lengths 6 --out "$OUT/parts/main-n2000-l6" &
  $B $E --n 2000 --lengths 4,2 --out "$OUT/parts/main-n2000-l42" &
  wait
fi
$B report --inputs "$OUT/parts/main-n2000-l6.json,$OUT/parts/main-n2000-l42.json" --out "$OUT/fashion-dit" \
  --title "Fashion-MNIST ODE_t(ODE_l): FD vs latency" \
  --header "$desc Guidance w=1. N=2000 samples per setting. Made by scripts/results.sh."

# guidance w = 1.5 (the paper's sampling guidance), every T and l, N = 1000
if [ -z "${REPORT_ONLY:-}" ]; then
  $B $E --n 1000 --guidance 1.5 --lengths 6 --out "$OUT/parts/w15-n1000-l6" &
  $B $E --n 1000 --guidance 1.5 --lengths 4,2 --out "$OUT/parts/w15-n1000-l42" &
  wait
fi
$B report --inputs "$OUT/parts/w15-n1000-l6.json,$OUT/parts/w15-n1000-l42.json" --out "$OUT/fashion-dit-w1.5" \
  --title "Fashion-MNIST ODE_t(ODE_l), guidance 1.5: FD vs latency" \
  --header "$desc Classifier-free guidance w=1.5 (two passes per step, batched as one forward of 2B). N=1000 samples per setting. Made by scripts/results.sh."

# sample grids, 6 per class
[ -n "${REPORT_ONLY:-}" ] && exit 0
for tl in 8:6 1:6 8:2 128:6; do
  t=${tl%:*}; l=${tl#*:}
  $B grid --model "$MODEL" --out "$OUT/grid-T$t-l$l.png" --steps "$t" --length "$l" --rows 6
done
