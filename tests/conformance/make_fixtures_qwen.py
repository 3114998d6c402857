"""Writes the Qwen3.5 conformance fixtures: opaque RGB PNGs whose sides are multiples of 32 and
whose area lies inside the tiny model's pixel bounds (65536 .. 16777216), so smart_resize keeps
them as they are and no resampler takes part in the comparison with transformers.js. Scenes are
drawn from a fixed seed. Run once; the PNGs are committed.

    .cache/venv/bin/python tests/conformance/make_fixtures_qwen.py
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw

OUT = pathlib.Path(__file__).parent / "fixtures_qwen"
# (name, width, height): square, landscape, portrait, the 512x512 cap, 3:2 and 2:3
SIZES = [("mug", 256, 256), ("bag", 448, 320), ("bottle", 320, 448), ("shoes", 512, 512),
         ("lamp", 384, 256), ("vase", 256, 384)]


def background(rng, kind, w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x / w, y / h
    if kind == 0:  # studio sweep
        base = 240 - 30 * y
        rgb = np.stack([base, base - 3, base + 4], axis=-1)
    elif kind == 1:  # two-colour gradient
        c0, c1 = rng.integers(30, 230, size=(2, 3))
        rgb = c0[None, None, :] * (1 - x[..., None]) + c1[None, None, :] * x[..., None]
    else:  # fabric-like texture
        fx, fy = rng.uniform(8, 30, 3), rng.uniform(8, 30, 3)
        rgb = 120 + 70 * np.sin(x[..., None] * fx + y[..., None] * fy)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def scene(seed, w, h):
    rng = np.random.default_rng(1000 + seed)
    image = background(rng, seed % 3, w, h)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        bw, bh = int(rng.integers(40, w // 2)), int(rng.integers(40, h // 2))
        shape = int(rng.integers(0, 4))
        box = [x0, y0, x0 + bw, y0 + bh]
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=3)
        elif shape == 2:
            draw.polygon([(x0, y0 + bh), (x0 + bw // 2, y0), (x0 + bw, y0 + bh)], fill=colour)
        else:
            draw.rounded_rectangle(box, radius=12, fill=colour)
    return image


def main():
    OUT.mkdir(exist_ok=True)
    for seed, (name, w, h) in enumerate(SIZES):
        scene(seed, w, h).save(OUT / f"{name}-{w}x{h}.png", optimize=True)
    print(f"wrote {len(SIZES)} fixtures to {OUT}")


if __name__ == "__main__":
    main()
