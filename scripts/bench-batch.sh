#!/usr/bin/env bash
# The README's "Scaling out" table: items/s of `odelt batch` with 1 shard and with 2 shards at once on this
# machine, and the cost of journaling (fsync of the files, rename, fsynced journal line) per item.
#
#   bash scripts/bench-batch.sh [SEEDS]     # after cargo build --release; SEEDS per length (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
ODELT=target/release/odelt
SEEDS=${1:-40}
W=$(mktemp -d /tmp/odelt-bench-batch.XXXXXX)
trap 'rm -rf "$W"' EXIT
ARGS=(examples/workflows/generate.json --plugins target/release/libodelt_plugin.so --models-dir models -q
  --sweep "4.seed=0..$((SEEDS - 1))" --sweep 2.active_blocks=2,4,6)
N=$((SEEDS * 3))
field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/"; }
now() { date +%s.%N; }

t0=$(now); $ODELT batch "${ARGS[@]}" --output-dir "$W/one" >"$W/one.json"; t1=$(now)
one=$(echo "$N / ($t1 - $t0)" | bc -l)
t0=$(now)
$ODELT batch "${ARGS[@]}" --output-dir "$W/two" --shard 0/2 >"$W/two0.json" &
p=$!
$ODELT batch "${ARGS[@]}" --output-dir "$W/two" --shard 1/2 >"$W/two1.json"
wait $p; t1=$(now)
two=$(echo "$N / ($t1 - $t0)" | bc -l)
diff -r "$W/one/items" "$W/two/items" >/dev/null && same=yes || same=NO
t0=$(now); $ODELT batch "${ARGS[@]}" --output-dir "$W/nosync" --no-sync >"$W/nosync.json"; t1=$(now)
nosync=$(echo "$N / ($t1 - $t0)" | bc -l)

printf '%s items (10 images each, 8 Euler steps), %s CPUs\n' "$N" "$(nproc)"
printf '| 1 shard | 2 shards at once | 1 shard, --no-sync |\n|---|---|---|\n'
printf '| %.2f items/s | %.2f items/s | %.2f items/s |\n' "$one" "$two" "$nosync"
printf 'same files from 1 and 2 shards: %s\n' "$same"
printf 'per item: run %.1f ms; commit (fsync files + rename + fsynced journal line) %.2f ms; with --no-sync %.2f ms\n' \
  "$(field run_ms_per_item <"$W/one.json")" "$(field commit_ms_per_item <"$W/one.json")" \
  "$(field commit_ms_per_item <"$W/nosync.json")"
