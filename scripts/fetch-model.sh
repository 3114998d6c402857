#!/usr/bin/env bash
# Fetches the real Florence-2-base-ft export (onnx-community layout, fp32 by default) from the
# Hugging Face hub into models/florence-2-base-ft/. Exits 0 when the model is there, non-zero
# (with a plain message) when the hub cannot be reached, so `make run` can fall back.
#
#   scripts/fetch-model.sh [DEST]
#   HF_REPO=onnx-community/Florence-2-large-ft   another export with the same layout
#   HF_ENDPOINT=https://mirror.example            a hub mirror
#   HF_REVISION=<commit>                          pin a revision (default main)
#   HF_TOKEN=...                                  for gated or private repos
#   MODEL_DTYPE_SUFFIX=_fp16                      a graph variant (spec: _fp16, _quantized, _int8, _q4)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/models/florence-2-base-ft}
repo=${HF_REPO:-onnx-community/Florence-2-base-ft}
endpoint=${HF_ENDPOINT:-https://huggingface.co}
revision=${HF_REVISION:-main}
suffix=${MODEL_DTYPE_SUFFIX:-}
files=(config.json generation_config.json preprocessor_config.json tokenizer.json tokenizer_config.json
       special_tokens_map.json
       "onnx/vision_encoder$suffix.onnx" "onnx/embed_tokens$suffix.onnx"
       "onnx/encoder_model$suffix.onnx" "onnx/decoder_model_merged$suffix.onnx")

complete=1
for f in "${files[@]}"; do [ -s "$dest/$f" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "model already present in $dest" >&2
  exit 0
fi

auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")
if ! curl -fsS --max-time 10 -o /dev/null "${auth[@]}" "$endpoint/$repo/resolve/$revision/config.json"; then
  echo "cannot reach $endpoint/$repo (no network or no access): the real Florence-2 model was not fetched." >&2
  exit 1
fi

partial="$dest.partial"
mkdir -p "$partial/onnx"
for f in "${files[@]}"; do
  [ -s "$partial/$f" ] && continue
  echo "fetching $repo/$f" >&2
  # special_tokens_map.json is optional in some revisions.
  if ! curl -fL --retry 3 --max-time 3600 "${auth[@]}" -o "$partial/$f.tmp" "$endpoint/$repo/resolve/$revision/$f"; then
    if [ "$f" = special_tokens_map.json ]; then continue; fi
    echo "failed to fetch $f from $repo; rerun to resume" >&2
    exit 1
  fi
  mv "$partial/$f.tmp" "$partial/$f"
done
rm -rf "$dest"
mv "$partial" "$dest"
echo "model ready in $dest" >&2
