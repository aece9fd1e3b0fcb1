#!/usr/bin/env bash
# Two revisions of odelt-bench, alternated on this machine: the per-product GFLOP/s (`odelt-bench gemm`) and the
# DiT-B forward (`odelt-bench --no-memory`), ROUNDS times each, A then B, so drift hits both alike. This is how
# the before/after pairs of docs/benchmarks.md can be rerun from the repository (the in-process A/B harness the
# session used for some product numbers was not kept; this measures the same changes through the public benches).
# usage: scripts/ab-revisions.sh REV_A REV_B [ROUNDS] [BATCH]
#   e.g. scripts/ab-revisions.sh b6693b4^ b6693b4 3 1     (the output-row prefetch)
# Builds each revision in a temporary worktree with a shared target dir under ${TMPDIR:-/tmp} (the first build
# compiles the dependencies: minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1; b=$2; rounds=${3:-3}; batch=${4:-1}
tmp=${TMPDIR:-/tmp}/odelt-ab
mkdir -p "$tmp/bin"
for rev in "$a" "$b"; do
  sha=$(git rev-parse --short "$rev")
  if [ ! -x "$tmp/bin/odelt-bench-$sha" ]; then
    rm -rf "$tmp/wt-$sha"
    git worktree add -q --detach "$tmp/wt-$sha" "$sha"
    (cd "$tmp/wt-$sha" && cargo build -q --release -p odelt-nodes --bin odelt-bench --target-dir "$tmp/target")
    cp "$tmp/target/release/odelt-bench" "$tmp/bin/odelt-bench-$sha"
    git worktree remove --force "$tmp/wt-$sha"
  fi
done
sa=$(git rev-parse --short "$a"); sb=$(git rev-parse --short "$b")
ckpt=$tmp/ditb.safetensors
[ -f "$ckpt" ] || "$tmp/bin/odelt-bench-$sb" write-random --out "$ckpt" >/dev/null
echo "== $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); A = $sa, B = $sb, batch $batch"
for r in $(seq "$rounds"); do
  for sha in "$sa" "$sb"; do
    "$tmp/bin/odelt-bench-$sha" gemm --batch "$batch" --runs 5 | grep -E '^\| (adaLN|qkv|attn|mlp)' \
      | cut -d'|' -f2,3,5,6 | sed "s/^/round $r $sha gemm:/"
    "$tmp/bin/odelt-bench-$sha" --ckpt "$ckpt" --no-memory --batch "$batch" --lengths 4,8,12 --runs 5 \
      --matmul-runs 1 2>/dev/null | grep -E '^\| [0-9]' | cut -d'|' -f2,5 | tr '\n' ' ' | sed "s/^/round $r $sha forward (l | ms):/"
    echo
  done
done
