#!/usr/bin/env bash
# The GPU check of issue 12 (item 5), one prepared run on a lent GPU machine, from the repository root:
#
#   scripts/gpu-check.sh KIT_DIR OUT_DIR 2>&1 | tail -40
#
# KIT_DIR is what scripts/gpu-kit.sh built here (carry it); OUT_DIR gets every log, the PNGs and summary.md,
# which is also printed last. Steps, each under its own time limit, so that one hanging step costs only its limit:
#   1. the golden parity test binaries on the GPU (ODELT_TEST_DEVICE): f32 at 1e-4, bf16 and fp16 against the
#      official f32 velocities (golden_model's reduced-precision test states the tolerances);
#   2. odelt-bench for DiT-B and DiT-XL at batch 1, 8, 64, 256, f32 and bf16, with an f32 and a bf16 GEMM
#      reference of side 8192 measured in the same run;
#   3. examples/workflows/generate.json through `odelt run --device`, in fp32 and bf16;
#   4. the same workflow through `odelt serve --device`: POST /prompt, poll /history, check the PNGs.
# DEVICE=cpu runs it all on the CPU with small sizes (DiT-B only, batch 1, one length), to try the script without
# a GPU; LIMIT_SCALE=N multiplies every time limit.
set -u
if [ "${1:-}" = __serve ]; then
  cd "$(dirname "$0")/.."
  "$B/odelt" serve --listen 127.0.0.1:8199 --plugins "$B/libodelt_plugin.so" --device "$DEV" --models-dir models \
    --output-dir "$OUT/serve" --no-persist &
  server=$!
  trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
  python3 - examples/workflows/generate.json <<'PY'
import json, sys, time, urllib.request
base = "http://127.0.0.1:8199"
for _ in range(150):
    try:
        urllib.request.urlopen(base + "/system_stats", timeout=2).read()
        break
    except OSError:
        time.sleep(0.2)
body = json.dumps({"prompt": json.load(open(sys.argv[1])), "client_id": "gpu-check"}).encode()
req = urllib.request.Request(base + "/prompt", body, {"Content-Type": "application/json"})
pid = json.load(urllib.request.urlopen(req, timeout=10))["prompt_id"]
print("prompt", pid)
t0 = time.time()
while time.time() - t0 < 100:
    h = json.load(urllib.request.urlopen(f"{base}/history/{pid}", timeout=10))
    if pid in h:
        entry = h[pid]
        images = [i for o in entry["outputs"].values() for i in o.get("images", [])]
        print("status", entry["status"].get("status_str"), "completed", entry["status"].get("completed"))
        print(len(images), "images in history")
        for i in images[:1]:
            q = f"{base}/view?filename={i['filename']}&subfolder={i['subfolder']}&type={i['type']}"
            png = urllib.request.urlopen(q, timeout=10).read()
            print("first image", len(png), "bytes,", "PNG" if png[:8] == b"\x89PNG\r\n\x1a\n" else "NOT a PNG")
        sys.exit(0 if entry["status"].get("completed") and images else 1)
    time.sleep(0.2)
print("no result in 100 s")
sys.exit(1)
PY
  exit $?
fi
KIT=${1:?usage: scripts/gpu-check.sh KIT_DIR OUT_DIR}
OUT=${2:?usage: scripts/gpu-check.sh KIT_DIR OUT_DIR}
DEV=${DEVICE:-cuda:0}
SCALE=${LIMIT_SCALE:-1}
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.md
B=$(mktemp -d /tmp/odelt-gpu-check.XXXXXX)
echo "# gpu-check $(date -u +%FT%TZ), device $DEV, kit $(cat "$KIT/commit" 2>/dev/null) ($(cat "$KIT/device" 2>/dev/null))" > "$SUMMARY"

for f in "$KIT"/*.xz; do
  xz -dc "$f" > "$B/$(basename "$f" .xz)" && chmod +x "$B/$(basename "$f" .xz)" || { echo "cannot unpack $f"; exit 1; }
done
if [ "$DEV" != cpu ]; then
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || { echo "no GPU (nvidia-smi failed)"; exit 1; }
  echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)" >> "$SUMMARY"
  # The binaries link libcudart/libcublas(Lt)/libcurand of CUDA 13: take them from the machine's Python packages.
  LIBS=$(find /opt /usr/local /usr/lib /root -maxdepth 9 \( -name 'libcublas.so.13*' -o -name 'libcublasLt.so.13*' \
      -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
  export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
  ldd "$B/odelt-bench" | grep "not found" && { echo "missing libraries (searched: $LIBS)"; exit 1; }
fi
echo "| step | exit | seconds | result |" >> "$SUMMARY"
echo "|---|---|---|---|" >> "$SUMMARY"

# step NAME LIMIT_S RESULT_CMD -- COMMAND...: runs COMMAND into OUT/NAME.log; RESULT_CMD (on the log) fills the cell.
step() {
  local name=$1 limit=$(($2 * SCALE)) result=$3 t rc
  shift 4
  t=$(date +%s)
  echo "== $name ($(($(date +%s) - T0)) s in)" >&2
  timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "| $name | $rc$([ $rc = 124 ] && echo ' (time limit)') | $(($(date +%s) - t)) | $(bash -c "$result" _ "$OUT/$name.log" | tr '\n' ' ') |" >> "$SUMMARY"
}

# 1. Golden parity on the device.
for t in "$B"/test-*; do
  n=$(basename "$t")
  ODELT_TEST_DEVICE=$DEV ODELT_TEST_DATA=$ROOT/nodes/tests/data \
    step "golden-${n#test-}" 180 'grep -E "^test result" "$1"; grep -E "rel L2 .*\(tolerance" "$1"' -- "$t" --nocapture
done

# 2. Throughput against the device's own GEMM.
if [ "$DEV" = cpu ]; then
  MODELS=(dit-b) BATCHES=1 LENGTHS=(--lengths 12) MM=1024
else
  MODELS=(dit-b dit-xl) BATCHES=1,8,64,256 LENGTHS=() MM=8192
fi
for m in "${MODELS[@]}"; do
  for p in fp32 bf16; do
    step "bench-$m-$p" 240 'grep -E "^\| [0-9]+ \| [0-9]+ \|" "$1" | wc -l | sed "s/$/ rows/"; grep -E "the vs GEMM reference" "$1" | sed -E "s/.* -> ([0-9.]+ GFLOP\/s).*/GEMM \1/"' -- \
      "$B/odelt-bench" --model "$m" --device "$DEV" --precision "$p" --batch "$BATCHES" "${LENGTHS[@]}" \
      --runs 5 --matmul-size "$MM" --matmul-runs 4 --no-memory
  done
done

# 3. A workflow through `odelt run` (the shipped default model), in both precisions.
for p in fp32 bf16; do
  step "run-$p" 120 "echo \$(find '$OUT/run-$p' -name '*.png' | wc -l) PNGs" -- \
    "$B/odelt" run examples/workflows/generate.json --plugins "$B/libodelt_plugin.so" --device "$DEV" \
    --models-dir models --output-dir "$OUT/run-$p" --set "1.precision=\"$p\"" -q
done

# 4. The same workflow through `odelt serve` (this script again, as `__serve`, so that the step's limit covers it).
step serve 150 'grep -E "images in history|first image|status" "$1"' -- \
  env B="$B" DEV="$DEV" OUT="$OUT" bash "$0" __serve

echo "total $(($(date +%s) - T0)) s" >> "$SUMMARY"
rm -rf "$B"
cat "$SUMMARY"
