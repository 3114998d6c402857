#!/usr/bin/env bash
# One prepared GPU check: builds altimage (release), makes the Florence-2-base-shaped model
# (`make model-base`), and prints images/s at batch 1, 8 and 32 on the CPU and on CUDA, measured
# with `altimage describe` over generated 768×768 images (model load excluded); then, on CUDA,
# the decoder's KV cache kept on the GPU (I/O binding, the default) against `--kv-cache host`
# (copied through host memory every step) at one batch size, with the ratio. Then Qwen3.5: on the
# tiny model (models/tiny-qwen3_5) the tokens on CUDA, state on the GPU and through the host, must
# equal the CPU path's, each image alone and all in one batch (rows leave at different steps); and
# on the Qwen3.5-0.8B-shaped model, when present (`make model-base-qwen`, ~4.4 GB, not made here),
# images/s with the decoder state kept on the GPU against `--kv-cache host`, with the ratio.
#
#   scripts/gpu-check.sh                       # online: wheels from PyPI
#   scripts/gpu-check.sh --wheels DIR          # offline GPU box: every wheel from DIR
#   scripts/gpu-check.sh --download-wheels DIR # on a connected machine: fill DIR for the above
#
# DIR holds the onnxruntime-gpu wheel and the nvidia-* CUDA/cuDNN wheels it needs (their lib
# folders go on LD_LIBRARY_PATH, so the host needs only the NVIDIA driver), the CPU onnxruntime
# wheel, and the model generator's packages (models/tools/requirements.txt). GPU_CHECK_WHEELS=DIR
# is the same as --wheels DIR. Offline, cargo must find its crates already in ~/.cargo (run
# `cargo fetch` beforehand) and is run with --offline.
#
# Options: --devices "cpu cuda" --batches "1 8 32" --images N (per CUDA pass, default 64)
#          --cpu-images N (per CPU pass, default 16: a CPU does ~0.5 images/s on this model)
#          --model DIR (default models/base-shaped, made when missing) --max-new-tokens N (20)
#          --binary FILE (skip the build and use this altimage)
#          --kv-cache-batch N (batch of the KV-cache comparison, default 8; 0 skips it)
#          --parts "florence qwen" (which families to check)
#          --qwen-model DIR (default models/base-shaped-qwen3_5) --qwen-batches "1 8"
#          --qwen-images N (per pass, default 32) --qwen-max-new-tokens N (64)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

wheels=${GPU_CHECK_WHEELS:-}
download=""
devices="cpu cuda"
batches="1 8 32"
images=64
cpu_images=16
model=models/base-shaped
max_new_tokens=20
binary=""
kv_cache_batch=8
parts="florence qwen"
qwen_model=models/base-shaped-qwen3_5
qwen_batches="1 8"
qwen_images=32
qwen_max_new_tokens=64
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$2; shift 2 ;;
    --download-wheels) download=$2; shift 2 ;;
    --devices) devices=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --cpu-images) cpu_images=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --max-new-tokens) max_new_tokens=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --kv-cache-batch) kv_cache_batch=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --qwen-model) qwen_model=$2; shift 2 ;;
    --qwen-batches) qwen_batches=$2; shift 2 ;;
    --qwen-images) qwen_images=$2; shift 2 ;;
    --qwen-max-new-tokens) qwen_max_new_tokens=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
ort_version=$(sed -n 's/^version=\${ORT_VERSION:-\(.*\)}$/\1/p' scripts/install-ort.sh)

if [ -n "$download" ]; then
  # Wheels for the Python that will run them; the [cuda,cudnn] extras pull the nvidia-* wheels.
  mkdir -p "$download"
  python3 -m pip download --disable-pip-version-check --only-binary=:all: -d "$download" \
    "onnxruntime-gpu[cuda,cudnn]==$ort_version" -r models/tools/requirements.txt pip setuptools
  echo "wheels for an offline GPU check are in $download; copy it and run: scripts/gpu-check.sh --wheels DIR" >&2
  exit 0
fi

cargo_flags=(--release)
if [ -n "$wheels" ]; then
  wheels=$(cd "$wheels" && pwd)
  # Offline: pip (scripts/python-env.sh) and scripts/install-ort.sh take everything from DIR.
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels" ORT_WHEEL_DIR="$wheels"
  cargo_flags+=(--offline)
fi

section() { printf '\n== %s\n' "$*" >&2; }

if [ -z "$binary" ]; then
  section "build"
  cargo build "${cargo_flags[@]}" --bin altimage >&2
  binary=target/release/altimage
fi

case " $devices " in *" cpu "*) cpu_ort=$(scripts/install-ort.sh cpu) ;; esac
case " $devices " in
  *" cuda "*)
    cuda_ort=$(scripts/install-ort.sh cuda)
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >&2
    if [ -n "$wheels" ]; then
      # The CUDA runtime, cuBLAS, cuDNN, cuFFT, cuRAND and NVRTC from the nvidia-* wheels, unpacked
      # once; every folder holding a shared library goes on the loader path.
      cuda_libs="$root/.cache/cuda-wheels"
      if [ ! -d "$cuda_libs" ]; then
        python3 - "$wheels" "$cuda_libs" <<'PY'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(src.glob("nvidia_*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
PY
      fi
      lib_dirs=$(find "$cuda_libs" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd: -)
      [ -n "$lib_dirs" ] || { echo "no nvidia-* CUDA library wheels in $wheels" >&2; exit 1; }
      export LD_LIBRARY_PATH="$lib_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    ;;
esac

case " $parts " in *" florence "*) florence=1 ;; *) florence="" ;; esac
case " $parts " in *" qwen "*) qwen=1 ;; *) qwen="" ;; esac

if [ -n "$florence" ] && [ ! -f "$model/onnx/decoder_model_merged.onnx" ]; then
  if [ "$model" = models/base-shaped ]; then
    section "model (make model-base)"
    make --no-print-directory model-base >&2
  else
    echo "no Florence-2 export in $model" >&2
    exit 1
  fi
fi

# Deterministic 768×768 product-like scenes (as the benchmarks make), so no resize cost differs.
image_dir="$root/.cache/gpu-check-images"
largest=$images
[ "$cpu_images" -gt "$largest" ] && largest=$cpu_images
[ "$qwen_images" -gt "$largest" ] && largest=$qwen_images
"$(scripts/python-env.sh)" - "$image_dir" "$largest" <<'PY'
import pathlib, random, sys
from PIL import Image, ImageDraw
out, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(7)
for i in range(count):
    path = out / f"image-{i:03}.png"
    if path.exists():
        continue
    image = Image.new("RGB", (768, 768), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(500), rng.randrange(500)
        draw.rectangle([x, y, x + 60 + rng.randrange(200), y + 60 + rng.randrange(200)],
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    image.save(path)
PY

# images/s from the JSON log: `describing` is logged once the model is loaded, `done` after the
# last record, so loading is left out.
rate() {
  python3 - "$1" "$2" <<'PY'
import datetime, json, sys
stamps = {}
for line in open(sys.argv[1]):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    message = record.get("fields", {}).get("message")
    if message in ("describing", "done"):
        stamps[message] = datetime.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
if len(stamps) != 2:
    sys.exit("the describe log has no describing/done lines")
seconds = (stamps["done"] - stamps["describing"]).total_seconds()
print(f"{int(sys.argv[2]) / seconds:.3f} {seconds:.1f}")
PY
}

# One describe run: prints "images/s seconds", or fails with the log's tail on stderr.
# MODEL and MAX_NEW_TOKENS default to the Florence-2 pass's.
describe_rate() { # device library batch count kv_cache [model max_new_tokens]
  local log files
  log=$(mktemp)
  files=$(find "$image_dir" -name 'image-*.png' | sort | head -n "$4")
  # shellcheck disable=SC2086 # one path per word
  if "$binary" describe --model-dir "${6:-$model}" --device "$1" --batch-size "$3" \
      --max-new-tokens "${7:-$max_new_tokens}" --no-progress --log-format json --log info \
      --kv-cache "$5" --ort-library "$2" -o /dev/null $files 2>"$log"; then
    local ok=0
    rate "$log" "$4" || ok=1
    rm -f "$log"
    return $ok
  else
    tail -n 5 "$log" >&2
    rm -f "$log"
    return 1
  fi
}

status=0
if [ -n "$florence" ]; then
  section "throughput: $model, <CAPTION>, greedy, max $max_new_tokens new tokens"
  printf '%-6s %6s %7s %10s %9s\n' device batch images images/s seconds
  for device in $devices; do
    if [ "$device" = cpu ]; then library=$cpu_ort; count=$cpu_images; else library=$cuda_ort; count=$images; fi
    for batch in $batches; do
      if result=$(describe_rate "$device" "$library" "$batch" "$count" device); then
        read -r per_second seconds <<<"$result"
        printf '%-6s %6s %7s %10s %9s\n' "$device" "$batch" "$count" "$per_second" "$seconds"
      else
        printf '%-6s %6s %7s %10s %9s\n' "$device" "$batch" "$count" failed -
        status=1
      fi
    done
  done

  case " $devices " in
    *" cuda "*)
      if [ "$kv_cache_batch" -gt 0 ]; then
        section "KV cache on CUDA, batch $kv_cache_batch: kept on the GPU (I/O binding) vs --kv-cache host"
        printf '%-8s %6s %7s %10s %9s\n' kv-cache batch images images/s seconds
        declare -A kv_rate=()
        for place in device host; do
          if result=$(describe_rate cuda "$cuda_ort" "$kv_cache_batch" "$images" "$place"); then
            read -r per_second seconds <<<"$result"
            kv_rate[$place]=$per_second
            printf '%-8s %6s %7s %10s %9s\n' "$place" "$kv_cache_batch" "$images" "$per_second" "$seconds"
          else
            printf '%-8s %6s %7s %10s %9s\n' "$place" "$kv_cache_batch" "$images" failed -
            status=1
          fi
        done
        if [ -n "${kv_rate[device]:-}" ] && [ -n "${kv_rate[host]:-}" ]; then
          python3 -c 'import sys; print(f"ratio kv cache device / host: {float(sys.argv[1]) / float(sys.argv[2]):.2f}x throughput")' \
            "${kv_rate[device]}" "${kv_rate[host]}"
        fi
      fi
      ;;
  esac
fi

# The describe records of one run over the tiny Qwen3.5 fixtures, in path order, or "failed".
qwen_tiny_records() { # device library batch kv_cache
  local log out
  log=$(mktemp)
  out=$(mktemp)
  if "$binary" describe --model-dir models/tiny-qwen3_5 --device "$1" --batch-size "$3" \
      --max-new-tokens 24 --no-progress --log warn --kv-cache "$4" --ort-library "$2" \
      -o "$out" tests/conformance/fixtures_qwen 2>"$log"; then
    sort "$out"
  else
    tail -n 5 "$log" >&2
    echo failed
  fi
  rm -f "$log" "$out"
}

if [ -n "$qwen" ]; then
  case " $devices " in
    *" cpu "*" cuda "*|*" cuda "*" cpu "*)
      section "Qwen3.5 tiny model: tokens on CUDA (state on the GPU, and through the host) vs the CPU"
      # Batch 1: each image alone; batch 6: all six in one running batch, rows leaving at
      # different steps (cancellation and EOS take the same gather).
      for batch in 1 6; do
        expected=$(qwen_tiny_records cpu "$cpu_ort" "$batch" host)
        for place in device host; do
          got=$(qwen_tiny_records cuda "$cuda_ort" "$batch" "$place")
          if [ "$expected" != failed ] && [ "$got" = "$expected" ]; then
            echo "batch $batch, cuda --kv-cache $place: $(wc -l <<<"$got") records equal the CPU's"
          else
            echo "batch $batch, cuda --kv-cache $place: DIFFERS from the CPU"
            diff <(echo "$expected") <(echo "$got") | head -n 8 >&2 || true
            status=1
          fi
        done
      done
      ;;
    *) echo "the Qwen3.5 token check needs --devices \"cpu cuda\"" >&2 ;;
  esac

  if [ -f "$qwen_model/onnx/decoder_model_merged.onnx" ]; then
    case " $devices " in
      *" cuda "*)
        section "Qwen3.5 throughput on CUDA: $qwen_model, alt text, greedy, max $qwen_max_new_tokens new tokens; state on the GPU vs --kv-cache host"
        printf '%-8s %6s %7s %10s %9s\n' kv-cache batch images images/s seconds
        for batch in $qwen_batches; do
          declare -A qwen_rate=()
          for place in device host; do
            if result=$(describe_rate cuda "$cuda_ort" "$batch" "$qwen_images" "$place" "$qwen_model" "$qwen_max_new_tokens"); then
              read -r per_second seconds <<<"$result"
              qwen_rate[$place]=$per_second
              printf '%-8s %6s %7s %10s %9s\n' "$place" "$batch" "$qwen_images" "$per_second" "$seconds"
            else
              printf '%-8s %6s %7s %10s %9s\n' "$place" "$batch" "$qwen_images" failed -
              status=1
            fi
          done
          if [ -n "${qwen_rate[device]:-}" ] && [ -n "${qwen_rate[host]:-}" ]; then
            python3 -c 'import sys; print(f"batch {sys.argv[3]}: ratio state device / host: {float(sys.argv[1]) / float(sys.argv[2]):.2f}x throughput")' \
              "${qwen_rate[device]}" "${qwen_rate[host]}" "$batch"
          fi
          unset qwen_rate
        done
        ;;
    esac
  else
    echo "no Qwen3.5 model in $qwen_model: run \`make model-base-qwen\` (~4.4 GB) for the throughput part" >&2
  fi
fi
exit $status
