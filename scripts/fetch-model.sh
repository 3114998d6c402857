#!/usr/bin/env bash
# Fetches a real model export from the Hugging Face hub into models/<name>/: Florence-2-base-ft
# (onnx-community layout, the default) or Qwen3.5 (onnx-community -ONNX-OPT layout, pinned
# revisions, spec qwen3_5-onnx.md §2.1-2.2). Exits 0 when the model is there, non-zero (with a
# plain message) when the hub cannot be reached or a file is missing, so `make run` can fall back.
# The files land in DEST.partial (kept, to resume) and DEST appears only once all are there.
#
#   scripts/fetch-model.sh [florence2|qwen3_5-0.8b|qwen3_5-2b] [DEST]
#   scripts/fetch-model.sh DEST                   the old form: Florence-2 into DEST
#   HF_REPO=onnx-community/Florence-2-large-ft   another export with the same layout
#   HF_ENDPOINT=https://mirror.example            a hub mirror
#   HF_REVISION=<commit>                          another revision (defaults below)
#   HF_TOKEN=...                                  for gated or private repos
#   MODEL_DTYPE_SUFFIX=_q4                        a graph variant (Florence-2: _fp16, _quantized,
#                                                 _int8, _q4; Qwen3.5: _fp16, _q4, _q4f16, _quantized)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

model=florence2
case "${1:-}" in
  florence2 | qwen3_5-0.8b | qwen3_5-2b) model=$1; shift ;;
esac
suffix=${MODEL_DTYPE_SUFFIX:-}
endpoint=${HF_ENDPOINT:-https://huggingface.co}

# Per model: the repository, the revision, the files, and which of them are ONNX graphs whose
# external data files (named inside the graph) must come too.
optional=()
case "$model" in
  florence2)
    default_dest=$root/models/florence-2-base-ft
    repo=${HF_REPO:-onnx-community/Florence-2-base-ft}
    revision=${HF_REVISION:-main}
    graphs=("onnx/vision_encoder$suffix.onnx" "onnx/embed_tokens$suffix.onnx"
            "onnx/encoder_model$suffix.onnx" "onnx/decoder_model_merged$suffix.onnx")
    files=(config.json generation_config.json preprocessor_config.json tokenizer.json tokenizer_config.json
           special_tokens_map.json "${graphs[@]}")
    # special_tokens_map.json is missing in some revisions.
    optional=(special_tokens_map.json)
    ;;
  qwen3_5-0.8b | qwen3_5-2b)
    if [ "$model" = qwen3_5-0.8b ]; then
      default_dest=$root/models/qwen3_5-0.8b
      repo=${HF_REPO:-onnx-community/Qwen3.5-0.8B-ONNX-OPT}
      # The revision the spec (§2.1) and the apps that run this export pin.
      revision=${HF_REVISION:-fafab72d87a9e6be3925b38caf48286d2838f2d0}
    else
      default_dest=$root/models/qwen3_5-2b
      repo=${HF_REPO:-onnx-community/Qwen3.5-2B-ONNX-OPT}
      # Not in the spec: the revision two public apps pin for this repo (models/README.md).
      revision=${HF_REVISION:-2ea7886f48b926aca97de8b0e041ffca7e3ebaa9}
    fi
    graphs=("onnx/embed_tokens$suffix.onnx" "onnx/vision_encoder$suffix.onnx"
            "onnx/decoder_model_merged$suffix.onnx")
    files=(config.json generation_config.json preprocessor_config.json tokenizer.json tokenizer_config.json
           "${graphs[@]}")
    ;;
esac
dest=${1:-$default_dest}

# The external data files a graph names (ONNX `location` entries, e.g. `X.onnx_data`,
# `X.onnx_data_1`): what ONNX Runtime will open beside it, so what must be fetched. Names with a
# path or a leading dot are refused: they would land outside onnx/.
data_files() {
  local names
  names=$(LC_ALL=C grep -aoE 'location..[A-Za-z0-9_.-]+\.onnx_data(_[0-9]+)?' "$1" | cut -c11- | sort -u) || true
  for name in $names; do
    case "$name" in
      .*) echo "$1 names the external data file $name, which is not a plain file name" >&2; return 1 ;;
    esac
    echo "onnx/$name"
  done
}

# Whether every file, and every data file of every graph, is in $1.
complete_in() {
  local f g d
  for f in "${files[@]}"; do
    [ -s "$1/$f" ] && continue
    for o in "${optional[@]}"; do [ "$o" = "$f" ] && continue 2; done
    return 1
  done
  for g in "${graphs[@]}"; do
    for d in $(data_files "$1/$g"); do [ -s "$1/$d" ] || return 1; done
  done
}

if [ -d "$dest" ] && complete_in "$dest"; then
  echo "model already present in $dest" >&2
  exit 0
fi

auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")
base="$endpoint/$repo/resolve/$revision"
if ! curl -fsS --max-time 10 -o /dev/null "${auth[@]}" "$base/config.json"; then
  echo "cannot reach $endpoint/$repo at revision $revision (no network, no access, or no such revision): the real $model model was not fetched." >&2
  exit 1
fi

partial="$dest.partial"
# A partial folder of another repository, revision or variant is not resumed: its files would mix.
source_line="$repo@$revision $suffix"
if [ -d "$partial" ] && [ "$(cat "$partial/.fetching" 2>/dev/null)" != "$source_line" ]; then
  rm -rf "$partial"
fi
mkdir -p "$partial/onnx"
echo "$source_line" > "$partial/.fetching"

# Fetches $1 into the partial folder unless it is there; $2 says why it is needed, for the message.
fetch() {
  local f=$1 why=$2
  [ -s "$partial/$f" ] && return 0
  echo "fetching $repo/$f" >&2
  if curl -fL --retry 3 --max-time 3600 "${auth[@]}" -o "$partial/$f.tmp" "$base/$f"; then
    mv "$partial/$f.tmp" "$partial/$f"
    return 0
  fi
  rm -f "$partial/$f.tmp"
  for o in "${optional[@]}"; do [ "$o" = "$f" ] && return 0; done
  echo "failed to fetch $f ($why) from $repo at revision $revision; rerun to resume" >&2
  exit 1
}

for f in "${files[@]}"; do fetch "$f" "part of the $model layout"; done
for g in "${graphs[@]}"; do
  data=$(data_files "$partial/$g") || exit 1
  for d in $data; do fetch "$d" "external data named by $g"; done
done
rm -f "$partial/.fetching"
rm -rf "$dest"
mv "$partial" "$dest"
echo "model ready in $dest ($repo@$revision${suffix:+, variant $suffix})" >&2
