#!/usr/bin/env bash
# Install a real Triton Inference Server for tests/model/test_triton_server.py and the bench's Triton peer: the
# `tritonserver` binary (2.51.0) with its Python backend from the PyPI wheel nvidia-pytriton==0.7.0, into the
# git-ignored .triton/ (TRITON_HOME). Idempotent and quiet: does nothing when .triton/READY names this version.
#
#   .triton/wheel/pytriton/tritonserver/{bin,backends/python,...}   the wheel, extracted as it is
#   .triton/wheel/nvidia_pytriton.libs/                             its shared libraries (LD_LIBRARY_PATH)
#   .triton/site/                                                   numpy + onnxruntime for the backend's stub
#
# The Python backend runs models in a stub process with an embedded CPython; the 3.11 stub links the system's
# libpython3.11.so.1.0 (Debian's libpython3.11, /usr/lib/python3.11) and starts isolated from PYTHONPATH, so
# scripts/triton/backend.py adds PYTHONPATH's entries as site directories (scripts/triton/server.py sets it to .triton/site).
# numpy is pinned below 2 there: the stub was built against numpy 1's C API, and under numpy 2 every BYTES input
# reads as its first byte repeated (deserialize_bytes_tensor then fails), while numeric tensors pass. onnxruntime
# is this environment's version, so Triton and the service run the same kernels.
set -euo pipefail

cd "$(dirname "$0")/.."
WHEEL_VERSION=0.7.0
STUB=3.11
NUMPY=1.26.4
PY=${PY:-.venv/bin/python}
HOME_DIR=${TRITON_HOME:-.triton}
# onnxruntime and its dependencies at this environment's versions (numpy aside)
SITE_PINS=$("$PY" -c "from importlib.metadata import version as v
print(' '.join(f'{p}=={v(p)}' for p in ('onnxruntime', 'flatbuffers', 'packaging', 'protobuf')))")
STAMP="nvidia-pytriton==$WHEEL_VERSION stub=$STUB numpy==$NUMPY $SITE_PINS"

if [ -f "$HOME_DIR/READY" ] && [ "$(cat "$HOME_DIR/READY")" = "$STAMP" ]; then
  exit 0
fi
libpython=libpython$STUB.so.1.0
if ! ldconfig -p | grep -q "$libpython"; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_triton.sh: the Python backend's $STUB stub needs $libpython (apt-get install libpython$STUB)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "libpython$STUB" >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
rm -rf "$HOME_DIR/READY" "$HOME_DIR/download" "$HOME_DIR/wheel" "$HOME_DIR/site"
mkdir -p "$HOME_DIR/download"
run() {
  if ! "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "install_triton.sh: failed: $*" >&2
    exit 1
  fi
}
run "$PY" -m pip download --disable-pip-version-check --no-deps -d "$HOME_DIR/download" "nvidia-pytriton==$WHEEL_VERSION"
run "$PY" -m zipfile -e "$HOME_DIR"/download/nvidia_pytriton-"$WHEEL_VERSION"-*.whl "$HOME_DIR/wheel"
server="$HOME_DIR/wheel/pytriton/tritonserver"
cp "$server/python_backend_stubs/$STUB/triton_python_backend_stub" "$server/backends/python/"
chmod +x "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub"
run "$PY" -m pip install --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$STUB" \
  --target "$HOME_DIR/site" "numpy==$NUMPY" $SITE_PINS
rm -rf "$HOME_DIR/download"
for binary in "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub"; do
  if LD_LIBRARY_PATH="$HOME_DIR/wheel/nvidia_pytriton.libs" ldd "$binary" | grep "not found" >&2; then
    echo "install_triton.sh: $binary lacks the libraries above" >&2
    exit 1
  fi
done
echo "$STAMP" >"$HOME_DIR/READY"
