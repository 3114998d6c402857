#!/usr/bin/env bash
# Installs transformers.js (pinned, --ignore-scripts: the CPU onnxruntime-node binary ships in the
# package) and records its greedy output on the tiny model over the fixtures into reference.json,
# which tests/it/conformance.rs compares with ours token for token.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"
if [ ! -f node_modules/@huggingface/transformers/package.json ] || \
   ! grep -q '"version": "4.3.1"' node_modules/@huggingface/transformers/package.json; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
model="$root/models/tiny-florence2"
out="$here/reference.json"
# Regenerate only when the model, fixtures or script changed.
stamp=$(cat "$model"/onnx/*.onnx "$model"/*.json fixtures/*.png reference.mjs | sha256sum | cut -d' ' -f1)
if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
node reference.mjs "$model" fixtures "$out.tmp" 64
mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
