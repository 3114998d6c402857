#!/usr/bin/env python3
"""Cross-check of the two Qwen3.5 references: the independent Python/ONNX Runtime loop
(tests/reference/qwen3_5_reference.py) must reproduce transformers.js 4.3.1
(reference_qwen3_5.json, written by reference_qwen3_5.mjs) on every parity request: the same
prompt text (each renders PROMPTS.md on its own), the same prompt ids, bit-identical pixel_values,
the same grid, the same generated ids (EOS included) and the same decoded text. It also checks
that transformers.js' own chat template gave the same prompt. run-reference.sh runs it.

    compare_qwen3_5.py MODEL_DIR REQUESTS.json TJS.json [--out PYTHON.json]

Exit status 0: all identical; 1: any difference (each one is printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/reference"))

from qwen3_5_reference import Qwen35, pixel_summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("requests", type=Path)
    ap.add_argument("tjs", type=Path)
    ap.add_argument("--out", type=Path, help="also write the Python results here")
    args = ap.parse_args(argv)
    tjs = json.loads(args.tjs.read_text())
    spec = json.loads(args.requests.read_text())
    max_new = tjs["max_new_tokens"]
    by_id = {r["id"]: r for r in tjs["results"]}
    model = Qwen35(args.model)
    t0 = time.time()
    problems, python, margins, lengths = [], [], [], []
    for req in spec["requests"]:
        g = model.generate(args.requests.parent / req["image"], req, max_new)
        ours = {"id": req["id"], "prompt": g.prompt, "prompt_ids": g.prompt_ids,
                "grid": list(g.pixels.grid), "pixel_values": pixel_summary(g.pixels),
                "generated_ids": g.tokens, **model.text(g.tokens),
                "min_margin": min(s.margin for s in g.steps)}
        python.append(ours)
        margins.append(ours["min_margin"])
        lengths.append(len(g.tokens))
        theirs = by_id.get(req["id"])
        if theirs is None:
            problems.append(f"{req['id']}: missing from {args.tjs}")
            continue
        diffs = []
        if theirs["prompt"] != ours["prompt"]:
            diffs.append(f"prompt text\n    tjs    {theirs['prompt']!r}\n"
                         f"    python {ours['prompt']!r}")
        if not theirs.get("chat_template_equal", False):
            diffs.append("transformers.js apply_chat_template differs from PROMPTS.md rendering")
        if theirs["prompt_ids"] != ours["prompt_ids"]:
            diffs.append("prompt ids")
        if theirs["grid"] != ours["grid"]:
            diffs.append(f"grid {theirs['grid']} vs {ours['grid']}")
        if theirs["pixel_values"]["sha256"] != ours["pixel_values"]["sha256"] or \
                list(theirs["pixel_values"]["shape"]) != ours["pixel_values"]["shape"]:
            diffs.append("pixel_values are not bit-identical")
        if theirs["generated_ids"] != ours["generated_ids"]:
            diffs.append(f"generated ids\n    tjs    {theirs['generated_ids']}\n"
                         f"    python {ours['generated_ids']}")
        if theirs["text"].strip() != ours["text"].strip():
            diffs.append(f"text {theirs['text']!r} vs {ours['text']!r}")
        problems += [f"{req['id']}: {d}" for d in diffs]
    if args.out:
        args.out.write_text(json.dumps({"engine": "tests/reference/qwen3_5_reference.py",
                                        "max_new_tokens": max_new, "results": python},
                                       indent=1, ensure_ascii=False) + "\n")
    n = len(spec["requests"])
    bad = len({p.split(":")[0] for p in problems})
    for p in problems:
        print(p)
    print(f"qwen3_5 python vs transformers.js: {n - bad} of {n} requests identical "
          f"(prompt text and ids, pixels, grid, generated ids, text); generated lengths "
          f"{min(lengths)}..{max(lengths)}; smallest top-1/top-2 margin {min(margins):.3f} "
          f"({time.time() - t0:.1f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
