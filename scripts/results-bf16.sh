#!/usr/bin/env bash
# The fp32-vs-bf16 table of docs/results/bf16.md: FD, accuracy and CPU ms/img of the default model at T = 1, 8, 128
# and l = 6, 4, 2, once with `eval --precision fp32` and once with `--precision bf16`, as two single-threaded
# processes side by side (one per core), with the conventions of scripts/results.sh (batch 500, seed 1, N = 2000).
# About 15 minutes on 2 cores.
#
#   cargo build --release -p odelt-nodes --bin odelt-model && scripts/results-bf16.sh
#
# B, MODEL, OUT and LENGTHS override the binary, the model, the output folder (OUT/fp32.*, OUT/bf16.*). The table of
# bf16.md is printed at the end (scripts/compare-tables.py does the same for FD only).
set -euo pipefail
B=${B:-target/release/odelt-model}
MODEL=${MODEL:-models/fashion-dit.safetensors}
OUT=${OUT:-docs/results/bf16}
export RAYON_NUM_THREADS=1
LENGTHS=${LENGTHS:-6,4,2}
E="eval --model $MODEL --classifier models/classifier.safetensors --batch 500 --seed 1 --n 2000 --steps 1,8,128 --lengths $LENGTHS"
mkdir -p "$OUT"
lscpu | grep -m1 'Model name' || true
grep -qw avx512_bf16 /proc/cpuinfo && echo "AVX512-BF16: yes" || echo "AVX512-BF16: no"; grep -qw avx512f /proc/cpuinfo || echo "no AVX-512: bf16 runs candle's reference ops"
$B $E --precision fp32 --out "$OUT/fp32" > "$OUT/fp32.log" 2>&1 &
$B $E --precision bf16 --out "$OUT/bf16" > "$OUT/bf16.log" 2>&1 &
wait
grep -h '^precision' "$OUT/fp32.log" "$OUT/bf16.log"
python3 - "$OUT/fp32.csv" "$OUT/bf16.csv" <<'EOF'
import csv, sys
a, b = ({(int(r['length']), int(r['steps'])): r for r in csv.DictReader(open(p))} for p in sys.argv[1:])
print('| l | T | FD fp32 | FD bf16 | ΔFD | acc fp32 | acc bf16 | Δacc (pt) | cpu ms/img fp32 | cpu ms/img bf16 | bf16/fp32 time |')
print('|---|---|---|---|---|---|---|---|---|---|---|')
for k in sorted(set(a) & set(b), key=lambda k: (-k[0], k[1])):
    x, y = a[k], b[k]
    fx, fy, ax, ay = (float(x['fd']), float(y['fd']), 100 * float(x['accuracy']), 100 * float(y['accuracy']))
    cx, cy = float(x['cpu_ms_per_image']), float(y['cpu_ms_per_image'])
    print(f'| {k[0]} | {k[1]} | {fx:.2f} | {fy:.2f} | {fy - fx:+.2f} ({100 * (fy / fx - 1):+.1f}%) | {ax:.2f}% | {ay:.2f}% '
          f'| {ay - ax:+.2f} | {cx:.2f} | {cy:.2f} | {cy / cx:.2f}x |')
EOF
