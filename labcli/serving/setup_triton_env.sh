#!/usr/bin/env bash
# Make the separate numpy<2 environment that runs NVIDIA's bundled `tritonserver` (from the
# nvidia-pytriton wheel, Triton 2.51, Python backend only). Idempotent: a stamp file records
# what was installed, and a second call with the same requirements does nothing.
#
#   labcli/serving/setup_triton_env.sh [TARGET]     (default: <repo>/.venv-triton, or $LAB_TRITON_ENV)
#
# Why a second environment: pytriton pins numpy<2 while the main environment has numpy 2, and
# the Python-backend stub imports numpy from the first `python` on PATH. Why the system Python:
# the stub binary links libpython3.11.so, which Debian's python3.11 ships in /usr/lib.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${1:-${LAB_TRITON_ENV:-$REPO/.venv-triton}}"
PYTHON="${TRITON_PYTHON:-/usr/bin/python3.11}"
REQS=("nvidia-pytriton==0.7.0" "numpy<2" "onnxruntime>=1.20" "tokenizers>=0.20")
STAMP="$TARGET/.lab-installed"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${REQS[*]}" ] && [ -x "$TARGET/bin/python" ]; then
  echo "triton environment ready: $TARGET"
  exit 0
fi
if [ ! -x "$PYTHON" ]; then
  echo "error: $PYTHON not found (hint: apt-get install python3.11 python3.11-venv libpython3.11, or set TRITON_PYTHON)" >&2
  exit 2
fi
# not `grep -q`: it exits at the first match, ldconfig then dies of SIGPIPE, and pipefail turns that into "missing"
if ! ldconfig -p | grep "libpython3.11.so.1.0" > /dev/null; then
  echo "error: libpython3.11.so.1.0 missing, the Triton Python-backend stub links it (hint: apt-get install libpython3.11)" >&2
  exit 2
fi
test -x "$TARGET/bin/python" || "$PYTHON" -m venv "$TARGET"
echo '*' > "$TARGET/.gitignore"
pip_install() {  # quiet unless it fails
  if ! "$TARGET/bin/python" -m pip install -q "$@" > "$TARGET/pip.log" 2>&1; then
    grep -v "^WARNING: Location" "$TARGET/pip.log" >&2
    echo "error: pip install $* failed in $TARGET (hint: check the network to PyPI, then rerun)" >&2
    exit 1
  fi
}
pip_install --upgrade pip
pip_install "${REQS[@]}"
"$TARGET/bin/python" - <<'PY'
import pathlib, shutil, sys, numpy, onnxruntime, tokenizers, pytriton
root = pathlib.Path(pytriton.__file__).parent / "tritonserver"
server = root / "bin" / "tritonserver"
assert server.is_file(), f"no tritonserver binary in {server.parent}"
# The Python backend looks for its stub next to libtriton_python.so; pytriton copies the one
# matching this interpreter there at run time, we do it once here (same RPATH depth).
stub = root / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
shutil.copy2(stub, root / "backends" / "python" / "triton_python_backend_stub")
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
print(f"tritonserver {server} numpy {numpy.__version__} onnxruntime {onnxruntime.__version__}")
PY
echo "${REQS[*]}" > "$STAMP"
echo "triton environment ready: $TARGET"
