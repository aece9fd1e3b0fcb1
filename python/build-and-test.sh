#!/usr/bin/env bash
# Builds the `odelt` wheel (maturin, abi3 for CPython >= 3.10) with the project's plugin inside, installs it into a
# fresh virtualenv (target/pyenv) with numpy and pytest, and runs python/tests (the Python host and the ComfyUI node
# package). Called by .ci/run after the Rust tests; reuses the release build in target/ (CARGO_TARGET_DIR).
#
#   python/build-and-test.sh            # build + test
#   PYTHON=python3.12 python/build-and-test.sh
#   python/build-and-test.sh -k batch   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PY="${PYTHON:-python3}"
VENV="$CARGO_TARGET_DIR/pyenv"
WHEELS="$CARGO_TARGET_DIR/wheels"
PLUGIN="$CARGO_TARGET_DIR/release/libodelt_plugin.so"
PIP_FLAGS=(--disable-pip-version-check -q)

t0=$(date +%s)
echo "== python: $("$PY" --version)"

# The plugin the wheel carries and the `odelt` command the tests compare with (CI's workspace build made both; a
# package-subset build here could resolve features differently and rebuild them, so only build what is missing).
if [ ! -f "$PLUGIN" ] || [ ! -x "$CARGO_TARGET_DIR/release/odelt" ]; then
  cargo build --release -p odelt-plugin -p odelt-host
fi
mkdir -p python/pysrc/odelt/plugins
rm -f python/pysrc/odelt/plugins/*.so
cp "$PLUGIN" python/pysrc/odelt/plugins/

# A fresh virtualenv with the build tool and the test dependencies.
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" "maturin>=1.9.4,<2" numpy pytest

echo "== wheel (maturin, release profile)"
rm -rf "$WHEELS"
"$VENV/bin/maturin" build --release --manifest-path python/Cargo.toml --out "$WHEELS" --compatibility linux
WHEEL=$(ls "$WHEELS"/odelt-*.whl)
echo "built $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"
"$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" --force-reinstall --no-deps "$WHEEL"
t1=$(date +%s)

echo "== pytest"
# Run outside the source tree so that `import odelt` is the installed wheel, not python/pysrc.
cd "$CARGO_TARGET_DIR"
set +e
env -u ODELT_PLUGIN_PATH ODELT_BIN="$CARGO_TARGET_DIR/release/odelt" \
  "$VENV/bin/python" -m pytest -p no:cacheprovider "$ROOT/python/tests" "$@"
rc=$?
set -e
t2=$(date +%s)
echo "== python: wheel $((t1 - t0)) s, tests $((t2 - t1)) s"
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
