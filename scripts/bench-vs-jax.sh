#!/usr/bin/env bash
# Side by side on this machine (issue 12): the official JAX DiT forward, then `odelt-bench`, back to back per
# batch, DiT-B f32, lengths 4/8/12, each printing medians of 5 after warm-up, with the load average.
# usage: scripts/bench-vs-jax.sh OFFICIAL_GIT_DIR JAX_PYTHON [BATCHES...]
#   OFFICIAL_GIT_DIR: a clone/snapshot of the public gudovskiy/odelt repository (read by the shared script)
#   JAX_PYTHON: a python with "jax[cpu]==0.10.2" "flax==0.12.8" einops ml_collections installed
# Needs ../shared/tools/bench-official-jax.py and `cargo build --release -p odelt-nodes --bin odelt-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
git_dir=$1; py=$2; shift 2
batches=${*:-1 8}
echo "== start $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
for b in $batches; do
  echo "== jax batch $b, load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$py" ../shared/tools/bench-official-jax.py "$git_dir" 768 12 12 4 "$b" float32 2>&1 | grep '^jax'
  echo "== odelt batch $b, load $(cut -d' ' -f1-3 /proc/loadavg)"
  target/release/odelt-bench --no-memory --batch "$b" --lengths 4,8,12 2>&1 | grep -E '^\||summary|kernels'
done
echo "== end $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
