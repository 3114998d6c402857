#!/usr/bin/env python3
"""Copies a Florence-2 model directory and rewrites its graphs into a variant that really fails
in ONNX Runtime the way some real exports do. For the serving tests' failure paths; the copy is
meant for a temporary directory, never for models/.

    python faulty_florence2.py static-batch      SRC OUT
    python faulty_florence2.py short-positions N SRC OUT

static-batch      every graph input's `batch_size` dimension becomes a fixed 1, as in an export
                  traced at batch 1 without a dynamic batch axis. Loads and runs one image at a
                  time; any batch of 2 or more fails with an input-shape error.
short-positions N the decoder's learned position table keeps only N positions (plus BART's
                  offset of 2) while config.json still promises max_position_embeddings: a
                  decoder export that disagrees with its config. Short generations succeed; the
                  step that reaches position N fails with a Gather index out of range.

Only the rewritten .onnx files differ from SRC; everything else is copied byte for byte.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_builder import save_model  # noqa: E402

GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged"]
POS_OFFSET = 2
DECODER_POSITIONS = "model.decoder.embed_positions.weight"


def fix_batch(values) -> int:
    changed = 0
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param == "batch_size":
            dims[0].dim_value = 1  # setting the value clears the oneof's dim_param
            changed += 1
    return changed


def static_batch(out: Path) -> None:
    for name in GRAPHS:
        path = out / "onnx" / f"{name}.onnx"
        model = onnx.load(path)
        changed = fix_batch(model.graph.input)
        if changed == 0:
            raise SystemExit(f"{path}: no `batch_size` dimension to fix")
        save_model(model, path)


def short_positions(out: Path, positions: int) -> None:
    path = out / "onnx" / "decoder_model_merged.onnx"
    model = onnx.load(path)
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == DECODER_POSITIONS:
            table = numpy_helper.to_array(tensor)
            rows = positions + POS_OFFSET
            if rows >= table.shape[0]:
                raise SystemExit(f"the table has only {table.shape[0] - POS_OFFSET} positions")
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(table[:rows].copy(), DECODER_POSITIONS))
            save_model(model, path)
            return
    raise SystemExit(f"{path}: no initializer {DECODER_POSITIONS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="variant", required=True)
    sub.add_parser("static-batch")
    short = sub.add_parser("short-positions")
    short.add_argument("positions", type=int)
    for parser in sub.choices.values():
        parser.add_argument("src", type=Path)
        parser.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; give a new directory")
    shutil.copytree(args.src, args.out)
    if args.variant == "static-batch":
        static_batch(args.out)
    else:
        short_positions(args.out, args.positions)


if __name__ == "__main__":
    main()
