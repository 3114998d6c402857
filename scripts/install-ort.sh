#!/usr/bin/env bash
# Installs the ONNX Runtime shared library from the PyPI wheel into the project cache
# (.cache/ort/<variant>/), where `altimage` finds it when neither --ort-library nor ORT_DYLIB_PATH
# is given. No prebuilt-binary download from anywhere but PyPI.
#
#   scripts/install-ort.sh            # CPU: onnxruntime wheel
#   scripts/install-ort.sh cuda       # CUDA: onnxruntime-gpu wheel (+ its provider libraries)
#
# ORT_WHEEL_DIR=/path/to/wheels   take the wheel from a local folder instead of PyPI (offline GPU
#                                 boxes); ORT_VERSION overrides the pinned version.
set -euo pipefail
variant=${1:-cpu}
version=${ORT_VERSION:-1.31.1}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$variant" in
  cpu) package=onnxruntime ;;
  cuda) package=onnxruntime-gpu ;;
  *) echo "usage: $0 [cpu|cuda]" >&2; exit 2 ;;
esac
dest="$root/.cache/ort/$variant"
if [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$package==$version" ]; then
  echo "$dest/libonnxruntime.so"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "${ORT_WHEEL_DIR:-}" ]; then
  wheel=$(ls "$ORT_WHEEL_DIR"/"${package//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  [ -n "$wheel" ] || { echo "no ${package}-${version} wheel in ORT_WHEEL_DIR=$ORT_WHEEL_DIR" >&2; exit 1; }
  cp "$wheel" "$work/"
else
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$work" "$package==$version" >&2
fi
wheel=$(ls "$work"/*.whl | head -n1)
python3 - "$wheel" "$work/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        base = name.rsplit('/', 1)[-1]
        if name.startswith('onnxruntime/capi/') and base.startswith('lib') and '.so' in base:
            z.extract(name, sys.argv[2])
PY
rm -rf "$dest"
mkdir -p "$dest"
cp "$work"/x/onnxruntime/capi/lib*.so* "$dest/"
lib=$(ls "$dest"/libonnxruntime.so.* | head -n1)
ln -sf "$(basename "$lib")" "$dest/libonnxruntime.so"
echo "$package==$version" > "$dest/.version"
echo "installed $package $version into $dest" >&2
echo "$dest/libonnxruntime.so"
