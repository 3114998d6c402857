# altimage: `make run` sets everything up and starts; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
TINY_MODEL := models/tiny-florence2
REAL_MODEL := models/florence-2-base-ft
BASE_MODEL := models/base-shaped
TINY_QWEN := models/tiny-qwen3_5
BASE_QWEN := models/base-shaped-qwen3_5
SAMPLES := tests/conformance/fixtures
LISTEN ?= 127.0.0.1:8080

.PHONY: help describe ort ort-cuda venv model model-base model-qwen model-base-qwen real-model real-model-qwen build run test test-rust conformance-reference bench bench-qwen lint fmt clean

help:
	@echo "make run      set up (ONNX Runtime, model, build) and serve the API on $(LISTEN)"
	@echo "make test     every test (unit, integration, conformance with transformers.js)"
	@echo "make bench    benchmarks (preprocessing vs PIL, describe throughput vs transformers.js)"
	@echo "make bench-qwen  Qwen3.5 benchmarks (vs transformers.js, batched outputs, memory per row)"
	@echo "make lint     rustfmt check and clippy"

ort:
	@scripts/install-ort.sh cpu >/dev/null

ort-cuda:
	@scripts/install-ort.sh cuda >/dev/null

venv:
	@scripts/python-env.sh >/dev/null

# The tiny test model is committed; this checks the generator still reproduces it.
model: venv
	@"$$(scripts/python-env.sh)" models/tools/make_florence2.py --preset tiny --check $(TINY_MODEL)

# Florence-2-base-shaped random model for benchmarks (outside git, ~1.1 GB).
model-base: venv
	@[ -f $(BASE_MODEL)/onnx/decoder_model_merged.onnx ] || "$$(scripts/python-env.sh)" models/tools/make_florence2.py --preset base --out $(BASE_MODEL)

# The tiny Qwen3.5 test model is committed too; this checks the generator still reproduces it.
model-qwen: venv
	@"$$(scripts/python-env.sh)" models/tools/make_qwen3_5.py --preset tiny --check $(TINY_QWEN)

# Qwen3.5-0.8B-shaped random model for benchmarks (outside git, ~4.4 GB).
model-base-qwen: venv
	@[ -f $(BASE_QWEN)/onnx/decoder_model_merged.onnx ] || "$$(scripts/python-env.sh)" models/tools/make_qwen3_5.py --preset base --out $(BASE_QWEN)

real-model:
	@scripts/fetch-model.sh $(REAL_MODEL)

# The real Qwen3.5-0.8B export at its pinned revision (MODEL_DTYPE_SUFFIX=_q4 for a variant);
# `scripts/fetch-model.sh qwen3_5-2b` fetches the 2B tier.
real-model-qwen:
	@scripts/fetch-model.sh qwen3_5-0.8b

build:
	$(CARGO) build --release

# Real model when the hub answers; otherwise the bundled tiny model, whose text is meaningless.
# `make describe` runs the batch CLI over the sample images instead.
run: ort build
	@if scripts/fetch-model.sh $(REAL_MODEL); then \
	  model=$(REAL_MODEL); \
	else \
	  echo "WARNING: running on the bundled tiny test model: its descriptions are random words, not real captions." >&2; \
	  model=$(TINY_MODEL); \
	fi; \
	echo "Try: curl -s -X POST -H \"Authorization: Bearer \$$(cat data/bootstrap-api-key)\" -H 'Content-Type: image/png' --data-binary @$(SAMPLES)/scene-0.png 'http://$(LISTEN)/v1/descriptions?detail=brief'" >&2; \
	exec target/release/altimage serve --model-dir $$model --listen $(LISTEN)

describe: ort build
	target/release/altimage describe --model-dir $(TINY_MODEL) $(SAMPLES)

test: ort venv
	@scripts/install-test-browser.sh
	@scripts/install-deploy-tools.sh >/dev/null
	@$(MAKE) --no-print-directory conformance-reference
	url="$$(scripts/test-postgres-url.sh)" && ALTIMAGE_REQUIRE_BROWSER=1 TEST_POSTGRES_URL="$$url" $(CARGO) test

# transformers.js (the reference implementation) over the conformance fixtures.
conformance-reference:
	@tests/conformance/run-reference.sh

bench: ort venv model-base
	$(CARGO) bench --bench preprocess
	$(CARGO) bench --bench describe

# Qwen3.5: ours vs transformers.js, four outputs in one call vs one at a time, memory per row.
bench-qwen: ort venv model-base-qwen
	$(CARGO) bench --bench qwen

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf .cache/venv tests/conformance/node_modules tests/conformance/reference.json \
	  tests/conformance/reference_qwen3_5.json tests/conformance/reference_qwen3_5.python.json
