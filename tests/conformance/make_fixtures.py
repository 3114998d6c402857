"""Writes the conformance fixtures: opaque 768x768 RGB PNGs (the model's input size, so no
resize takes part in the comparison with transformers.js), product-photo-like scenes drawn from
a fixed seed. Run once; the PNGs are committed.

    .cache/venv/bin/python tests/conformance/make_fixtures.py
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw

SIZE = 768
OUT = pathlib.Path(__file__).parent / "fixtures"


def background(rng, kind):
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    if kind == "studio":
        base = 235 - 25 * y
        rgb = np.stack([base, base, base + 5], axis=-1)
    elif kind == "gradient":
        c0, c1 = rng.integers(40, 220, size=(2, 3))
        rgb = c0[None, None, :] * (1 - x[..., None]) + c1[None, None, :] * x[..., None]
    else:  # textured
        rgb = 128 + 60 * np.sin(x[..., None] * rng.uniform(5, 20, 3) + y[..., None] * rng.uniform(5, 20, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def scene(seed):
    rng = np.random.default_rng(seed)
    image = background(rng, ["studio", "gradient", "textured"][seed % 3])
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(50, 500, 2))
        w, h = (int(v) for v in rng.integers(80, 260, 2))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour, outline=(20, 20, 20), width=3)
        else:
            draw.polygon([(x0, y0 + h), (x0 + w // 2, y0), (x0 + w, y0 + h)], fill=colour)
    return image


def main():
    OUT.mkdir(exist_ok=True)
    for seed in range(6):
        scene(seed).save(OUT / f"scene-{seed}.png", optimize=True)
    print(f"wrote 6 fixtures to {OUT}")


if __name__ == "__main__":
    main()
