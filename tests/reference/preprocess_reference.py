#!/usr/bin/env python3
"""Python reference for altimage's image preprocessing (src/model/preprocess/).

It follows the Python Florence-2 processor (transformers CLIPImageProcessor): PIL decode, RGB,
PIL resize to the config size (aspect not kept) with the config's filter (BICUBIC = 3), rescale in
float64 then cast to float32, normalise in float32, channel-first float32. Two deliberate additions,
both also in the Rust code: EXIF orientation is applied (ImageOps.exif_transpose) and alpha is
flattened on white (Image.alpha_composite over an opaque white image) instead of dropped.
16-bit grayscale ("I;16") is reduced to 8-bit by keeping the high byte, as PIL itself does for
16-bit RGB(A) PNG and TIFF (PIL's own convert of "I;16" clips at 255 instead).

Usage:
  preprocess_reference.py [--config CFG.json] IMAGE OUT [IMAGE OUT ...]
      OUT ending in .npy gets np.save, anything else raw little-endian float32 (C order).
      One JSON line per image on stdout: input, output, shape, original width/height, mode.
  preprocess_reference.py --jobs JOBS.json
      JOBS.json: [{"image": path, "output": path, "config": {...}}, ...]
  preprocess_reference.py [--config CFG.json] --time N IMAGE
      Runs the whole path (decode .. tensor) on the file's bytes N times after one warm-up, and
      prints "median_ms=<float> runs=N" (interpreter start-up and file reading excluded).
"""

import argparse
import io
import json
import sys
import time

import numpy as np
from PIL import Image, ImageOps

FLORENCE2 = {
    "do_resize": True,
    "size": {"height": 768, "width": 768},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}

ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
SIXTEEN_BIT_GRAY = {"I;16", "I;16L", "I;16B", "I;16N"}


def load_config(raw):
    cfg = dict(FLORENCE2)
    cfg.update({k: v for k, v in (raw or {}).items() if k in FLORENCE2})
    for key in ("image_mean", "image_std"):
        v = cfg[key]
        v = [v] if isinstance(v, (int, float)) else list(v)
        cfg[key] = v * 3 if len(v) == 1 else v
    return cfg


def to_rgb_on_white(im):
    if im.mode in SIXTEEN_BIT_GRAY:
        a = np.asarray(im).astype(np.uint16)
        im = Image.fromarray((a >> 8).astype(np.uint8))
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def preprocess(data, cfg):
    """Image bytes -> (float32 [3, H, W], oriented PIL size, decoded mode)."""
    im = Image.open(io.BytesIO(data))
    mode = im.mode
    im = ImageOps.exif_transpose(im)
    im = to_rgb_on_white(im)
    original_size = im.size
    if cfg["do_resize"]:
        size = (cfg["size"]["width"], cfg["size"]["height"])
        im = im.resize(size, resample=cfg["resample"])
    x = np.asarray(im, dtype=np.uint8)
    if cfg["do_rescale"]:
        x = (x.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32)
    else:
        x = x.astype(np.float32)
    if cfg["do_normalize"]:
        mean = np.array(cfg["image_mean"], dtype=np.float32)
        std = np.array(cfg["image_std"], dtype=np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), original_size, mode


def run_one(image, output, cfg):
    with open(image, "rb") as f:
        data = f.read()
    tensor, (w, h), mode = preprocess(data, cfg)
    if output.endswith(".npy"):
        np.save(output, tensor)
    else:
        tensor.astype("<f4").tofile(output)
    print(json.dumps({"input": image, "output": output, "shape": list(tensor.shape),
                      "original_width": w, "original_height": h, "mode": mode}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="preprocessor_config.json (default: Florence-2 values)")
    p.add_argument("--jobs", help="JSON list of {image, output, config}")
    p.add_argument("--time", type=int, metavar="N", help="time N runs on one image")
    p.add_argument("paths", nargs="*")
    args = p.parse_args()
    raw = None
    if args.config:
        with open(args.config) as f:
            raw = json.load(f)
    cfg = load_config(raw)

    if args.jobs:
        with open(args.jobs) as f:
            for job in json.load(f):
                run_one(job["image"], job["output"], load_config(job.get("config")))
        return
    if args.time:
        if len(args.paths) != 1:
            p.error("--time takes exactly one IMAGE")
        with open(args.paths[0], "rb") as f:
            data = f.read()
        preprocess(data, cfg)  # warm-up
        times = []
        for _ in range(args.time):
            t0 = time.perf_counter()
            preprocess(data, cfg)
            times.append(time.perf_counter() - t0)
        print(f"median_ms={np.median(times) * 1e3:.3f} runs={args.time}")
        return
    if not args.paths or len(args.paths) % 2:
        p.error("give IMAGE OUT pairs")
    for image, output in zip(args.paths[::2], args.paths[1::2]):
        run_one(image, output, cfg)


if __name__ == "__main__":
    sys.exit(main())
