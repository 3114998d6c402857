#!/usr/bin/env python3
"""Writes the test images of tests/it/preprocess.rs into OUTDIR (deterministic, seeded).

Usage: make_preprocess_fixtures.py OUTDIR
Prints one file name per line. Formats PIL cannot write (16-bit RGB PNG/TIFF) are made by the
Rust test itself with the image crate.
"""

import io
import os
import sys

import numpy as np
from PIL import Image


def scene(w, h, seed):
    """Photo-like uint8 RGB: gradients, a smooth texture, a disc, stripes, sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        255 * x / max(w - 1, 1),
        255 * y / max(h - 1, 1),
        127 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0),
    ], axis=-1)
    disc = (x - 0.6 * w) ** 2 + (y - 0.4 * h) ** 2 < (0.25 * min(w, h)) ** 2
    img[disc] = [220, 40, 60]
    stripes = ((x // 7) % 2 == 0) & (y > 0.75 * h)
    img[stripes] *= 0.3
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def rgb(w, h, seed):
    return Image.fromarray(scene(w, h, seed), "RGB")


def main(out):
    os.makedirs(out, exist_ok=True)
    made = []

    def save(name, im, **kw):
        im.save(os.path.join(out, name), **kw)
        made.append(name)

    save("rgb_1024x768.jpg", rgb(1024, 768, 1), quality=90)
    save("rgb_500x300_444.jpg", rgb(500, 300, 2), quality=95, subsampling=0)
    save("rgb_2000x1500.jpg", rgb(2000, 1500, 3), quality=85)
    save("rgb_1200x900.png", rgb(1200, 900, 4))
    save("rgb_333x517.png", rgb(333, 517, 5))
    save("rgb_768x768.png", rgb(768, 768, 6))
    save("rgb_2000x50.png", rgb(2000, 50, 7))
    save("rgb_1x1.png", rgb(1, 1, 8))
    save("rgb_900x600_lossless.webp", rgb(900, 600, 9), lossless=True)
    save("rgb_900x600_lossy.webp", rgb(900, 600, 10), quality=90)
    save("rgb_640x480.bmp", rgb(640, 480, 11))
    save("rgb_800x600.tiff", rgb(800, 600, 12))
    save("rgb_800x600_lzw.tiff", rgb(800, 600, 13), compression="tiff_lzw")
    save("gray_700x500.png", rgb(700, 500, 14).convert("L"))
    save("gray_600x400.jpg", rgb(600, 400, 15).convert("L"), quality=92)
    save("cmyk_800x600.jpg", rgb(800, 600, 16).convert("CMYK"), quality=95)
    save("palette_500x400.png", rgb(500, 400, 17).quantize(64))

    # Gray 16-bit: a full-range ramp with noise, as PNG and TIFF ("I;16").
    r = np.random.default_rng(18)
    g16 = np.clip(np.add.outer(np.arange(480) * 60.0, np.arange(640) * 50.0)
                  + r.normal(0, 900, (480, 640)), 0, 65535).astype(np.uint16)
    save("gray16_640x480.png", Image.fromarray(g16))
    save("gray16_640x480.tiff", Image.fromarray(g16))

    # Alpha: a ramp from transparent to opaque, a fully transparent hole, an opaque block.
    base = scene(900, 700, 19)
    alpha = np.tile(np.linspace(0, 255, 900), (700, 1)).astype(np.uint8)
    alpha[100:300, 100:300] = 0
    alpha[400:600, 600:800] = 255
    save("rgba_900x700.png", Image.fromarray(np.dstack([base, alpha]), "RGBA"))
    save("rgba_600x400.webp",
         Image.fromarray(np.dstack([scene(600, 400, 20), alpha[:400, :600]]), "RGBA"), lossless=True)
    la = np.dstack([scene(300, 200, 21)[..., 1], alpha[:200, ::3]])
    save("la_300x200.png", Image.fromarray(la, "LA"))
    pal = rgb(400, 300, 22).quantize(32)
    save("palette_trns_400x300.png", pal, transparency=0)

    # GIF with three different frames: the first must be used.
    frames = [rgb(400, 300, 23 + i).quantize(200) for i in range(3)]
    frames[0].save(os.path.join(out, "anim_400x300.gif"), save_all=True,
                   append_images=frames[1:], duration=100, loop=0)
    made.append("anim_400x300.gif")
    save("first_frame_400x300.png", frames[0])

    # EXIF orientation 6 (rotate 90° clockwise to display): stored 1000x700, shown 700x1000.
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6_1000x700.jpg", rgb(1000, 700, 26), quality=92, exif=exif.tobytes())
    # The same pixels as PIL decodes them, physically rotated, losslessly stored.
    with Image.open(os.path.join(out, "exif6_1000x700.jpg")) as im:
        save("exif6_rotated_700x1000.png", im.convert("RGB").transpose(Image.Transpose.ROTATE_270))

    for name in made:
        print(name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
