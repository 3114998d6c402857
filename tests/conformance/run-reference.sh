#!/usr/bin/env bash
# Installs transformers.js (pinned, --ignore-scripts: the CPU onnxruntime-node binary ships in the
# package) and records its greedy output on the tiny models:
#  - Florence-2 over fixtures/ into reference.json (tests/it/conformance.rs compares ours with it);
#  - Qwen3.5 over the requests of qwen3_5_requests.json (images in fixtures_qwen/) into
#    reference_qwen3_5.json, then checks that the independent Python reference
#    (tests/reference/qwen3_5_reference.py, via compare_qwen3_5.py) reproduces it exactly; its own
#    results go to reference_qwen3_5.python.json.
# Each part is regenerated only when its inputs change (a sha256 stamp next to its output).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"
if [ ! -f node_modules/@huggingface/transformers/package.json ] || \
   ! grep -q '"version": "4.3.1"' node_modules/@huggingface/transformers/package.json; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi

# Florence-2
model="$root/models/tiny-florence2"
out="$here/reference.json"
stamp=$(cat "$model"/onnx/*.onnx "$model"/*.json fixtures/*.png reference.mjs | sha256sum | cut -d' ' -f1)
if [ ! -f "$out" ] || [ "$(cat "$out.stamp" 2>/dev/null)" != "$stamp" ]; then
  node reference.mjs "$model" fixtures "$out.tmp" 64
  mv "$out.tmp" "$out"
  echo "$stamp" > "$out.stamp"
fi

# Qwen3.5
qmodel="$root/models/tiny-qwen3_5"
qout="$here/reference_qwen3_5.json"
prompts="$root/src/model/qwen3_5/prompts.json"
qstamp=$(cat "$qmodel"/onnx/* "$qmodel"/*.json "$qmodel"/chat_template.jinja fixtures_qwen/*.png \
  qwen3_5_requests.json reference_qwen3_5.mjs compare_qwen3_5.py "$prompts" \
  "$root/tests/reference/qwen3_5_reference.py" | sha256sum | cut -d' ' -f1)
if [ ! -f "$qout" ] || [ "$(cat "$qout.stamp" 2>/dev/null)" != "$qstamp" ]; then
  max_new=$(node -e "console.log(JSON.parse(require('fs').readFileSync('qwen3_5_requests.json','utf8')).max_new_tokens)")
  node reference_qwen3_5.mjs "$qmodel" qwen3_5_requests.json "$prompts" "$qout.tmp" "$max_new"
  python=$("$root/scripts/python-env.sh")
  "$python" compare_qwen3_5.py "$qmodel" qwen3_5_requests.json "$qout.tmp" \
    --out "$here/reference_qwen3_5.python.json"
  mv "$qout.tmp" "$qout"
  echo "$qstamp" > "$qout.stamp"
fi
