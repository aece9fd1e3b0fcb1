#!/usr/bin/env bash
# Builds, on a machine without a GPU, what scripts/gpu-check.sh runs on a lent one (issue 12, item 5): the plugin,
# odelt-bench and the golden parity test binaries with the `cuda` feature, and the host's `odelt` command (which
# never needs CUDA), stripped and xz-compressed into KIT_DIR.
#
#   scripts/gpu-kit.sh [KIT_DIR]        # default .gpu-kit (git-ignored; pass it as `carry` to the device run)
#
# The CUDA toolchain comes from ../shared/tools/cuda-toolchain.sh (pinned CUDA 13.0 wheels), installed into
# CUDA_DIR (default /tmp/cuda-toolchain) unless CUDA_DIR/env.sh exists. The cuda build uses its own target
# directory (CUDA_TARGET, default /tmp/cuda-target): about 10-12 minutes on 2 cores from clean.
# DEVICE=cpu builds the same kit without the `cuda` feature, to try gpu-check.sh here (DEVICE=cpu there too).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${1:-.gpu-kit}
CUDA_DIR=${CUDA_DIR:-/tmp/cuda-toolchain}
TARGET=${CUDA_TARGET:-/tmp/cuda-target}
TESTS=(golden_model golden_solvers golden_configs checkpoint_pickle checkpoint_safetensors)

FEATURES=()
NODES_FEATURES=()
if [ "${DEVICE:-cuda}" != cpu ]; then
  [ -f "$CUDA_DIR/env.sh" ] || bash ../shared/tools/cuda-toolchain.sh "$CUDA_DIR"
  # shellcheck disable=SC1091
  source "$CUDA_DIR/env.sh"
  FEATURES=(--features odelt-plugin/cuda,odelt-nodes/cuda)
  NODES_FEATURES=(--features cuda)
else
  TARGET=${CUDA_TARGET:-target}
fi

cargo build --release -p odelt-plugin -p odelt-nodes --bins --lib "${FEATURES[@]}" --target-dir "$TARGET"
tests=()
for t in "${TESTS[@]}"; do tests+=(--test "$t"); done
# The test executables' paths, from cargo's JSON messages.
mapfile -t exes < <(cargo test --release -p odelt-nodes "${NODES_FEATURES[@]}" "${tests[@]}" \
  --no-run --message-format=json --target-dir "$TARGET" |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + " " + m["executable"])')
cargo build --release -p odelt-host --bin odelt

rm -rf "$KIT"
mkdir -p "$KIT"
pack() { strip -o "$KIT/$2" "$1" && xz -T2 -6 -f "$KIT/$2"; }
pack "$TARGET/release/libodelt_plugin.so" libodelt_plugin.so
pack "$TARGET/release/odelt-bench" odelt-bench
pack target/release/odelt odelt
for e in "${exes[@]}"; do pack "${e#* }" "test-${e%% *}"; done
git rev-parse HEAD > "$KIT/commit"
echo "${DEVICE:-cuda}" > "$KIT/device"
ls -l "$KIT"
du -sh "$KIT"
