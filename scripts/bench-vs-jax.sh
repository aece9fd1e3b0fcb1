#!/usr/bin/env bash
# Side by side on this machine (issue 12): the official JAX DiT forward and `odelt-bench`, back to back per batch,
# DiT-B f32, lengths 4/8/12, each side printing medians of 5 after warm-up, with the load average.
#
# usage: [ROUNDS=N] scripts/bench-vs-jax.sh OFFICIAL_GIT_DIR JAX_PYTHON [BATCHES...]
#   OFFICIAL_GIT_DIR: a clone/snapshot of the public gudovskiy/odelt repository (read by the shared script)
#   JAX_PYTHON: a python with "jax[cpu]==0.10.2" "flax==0.12.8" einops ml_collections installed
#   ROUNDS (default 1): pairs per batch. The sides alternate which goes first (JAX first in odd rounds, odelt in
#     even ones), so a slow window of a shared VM falls on both alike, and with ROUNDS > 1 a summary follows: per
#     batch and length the median of each side, their ratio, the median of the per-pair ratios and how many pairs
#     are at most 0.8.
# Needs ../shared/tools/bench-official-jax.py and `cargo build --release -p odelt-nodes --bin odelt-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
git_dir=$1; py=$2; shift 2
batches=${*:-1 8}
rounds=${ROUNDS:-1}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

jax() {
  echo "== jax batch $1, $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$py" ../shared/tools/bench-official-jax.py "$git_dir" 768 12 12 4 "$1" float32 2>&1 | grep '^jax'
}
odelt() {
  echo "== odelt batch $1, $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
  target/release/odelt-bench --no-memory --batch "$1" --lengths 4,8,12 2>&1 | grep -E '^\||summary|kernels'
}

echo "== start $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  for b in $batches; do
    echo "== round $r"
    if (( r % 2 == 1 )); then jax "$b"; odelt "$b"; else odelt "$b"; jax "$b"; fi
  done
done | tee "$log"
echo "== end $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"

if (( rounds > 1 )); then
  python3 - "$log" <<'EOF'
import re, statistics, sys
jax, odelt, rnd = {}, {}, 0
for line in open(sys.argv[1]):
    if m := re.match(r"== round (\d+)", line):
        rnd = int(m[1])
    elif m := re.match(r"jax \S+ .* l=(\d+) batch=(\d+): median ([\d.]+) ms", line):
        jax[(int(m[2]), int(m[1]), rnd)] = float(m[3])
    elif m := re.match(r"\| (\d+) \| (\d+) \| \d+ \| ([\d.]+) \|", line):
        odelt[(int(m[2]), int(m[1]), rnd)] = float(m[3])
keys = sorted({k[:2] for k in jax} & {k[:2] for k in odelt})
print("\nsummary over pairs (odelt / JAX; target <= 0.8):")
print("| batch | l | pairs | JAX median ms | odelt median ms | ratio of medians | median of pair ratios | pairs <= 0.8 |")
print("|---|---|---|---|---|---|---|---|")
for b, l in keys:
    rs = sorted(r for (bb, ll, r) in jax if (bb, ll) == (b, l) and (bb, ll, r) in odelt)
    j = [jax[(b, l, r)] for r in rs]
    o = [odelt[(b, l, r)] for r in rs]
    ratios = [y / x for x, y in zip(j, o)]
    mj, mo = statistics.median(j), statistics.median(o)
    ok = sum(x <= 0.8 for x in ratios)
    print(f"| {b} | {l} | {len(rs)} | {mj:.1f} | {mo:.1f} | {mo / mj:.2f} | {statistics.median(ratios):.2f} | {ok} of {len(rs)} |")
EOF
fi
