#!/usr/bin/env python3
"""Independent Python reference for Qwen3.5 product descriptions (spec qwen3_5-onnx.md 2.5-2.11,
src/model/qwen3_5/PROMPTS.md), on ONNX Runtime with numpy, tokenizers and PIL only.

    qwen3_5_reference.py --model models/tiny-qwen3_5 \
        --requests tests/conformance/qwen3_5_requests.json [--only ID ...] [--npy-dir DIR]
    qwen3_5_reference.py --model DIR --image photo.png --output alt_text --language de \
        [--title ... --brand ... --category ... --attribute Key=Value ... --keyword K ...
         --tone ... --max-chars N --max-words N --count N] [--max-new-tokens 64]

Prints JSON: per request the rendered prompt text, the prompt ids, a summary of pixel_values
(shape, sha256 of the float32 bytes, first values; --npy-dir also saves the full array), the grid,
the generated ids (EOS kept, as transformers.js returns them), the decoded and cleaned text, and
the smallest top-1/top-2 margin of the greedy choices.

It knows nothing about how the test model was built: names, shapes, token ids (by content) and
settings come from the model directory, like a server would read them, so it runs the real
onnx-community export unchanged. It is also a small library (class Qwen35) whose steps tests and
the generator's self-check drive directly.

Conventions that the spec leaves to the implementation, fixed here:
* Missing preprocessor keys take the HF Python defaults (resize on, bicubic, rescale 1/255,
  normalise, RGB). EXIF orientation is applied; alpha is composited over white.
* smart_resize rounds half up (JavaScript Math.round, Rust f64::round), not half to even.
* Rescale and normalise in f64 with one f32 rounding after each (bit-exact with transformers.js).
* Generation settings merge config.json, then its text_config, then generation_config.json;
  greedy is forced (do_sample ignored); repetition_penalty != 1 is applied over every id of the
  row (prompt and image pads included), in f64 and rounded to f32, as transformers.js does.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
PROMPTS_JSON = ROOT / "src/model/qwen3_5/prompts.json"

PREPROCESS_DEFAULTS = {
    "do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "do_convert_rgb": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],  # HF OPENAI_CLIP_MEAN / STD
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
}


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------------------------------
# Prompt rendering (PROMPTS.md)
# ------------------------------------------------------------------------------------------------
SPECIAL_SPAN = re.compile(r"<\|.*?\|>", re.S)
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Unicode White_Space (Rust char::is_whitespace), spelled out: Python's str.isspace() differs
# (it counts U+001C..U+001F).
WHITE_SPACE = "\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
WS_RUN = re.compile(f"[{WHITE_SPACE}]+")
IS_WS = re.compile(f"[{WHITE_SPACE}]")


def sanitise_value(value, reserved=()) -> str:
    """PROMPTS.md rule 2, in this order: drop every <|...|> span (shortest match) and every
    reserved token (the tokenizer's added tokens, longest first), again until nothing changes;
    drop control characters (category Cc) that are not White_Space, turn each White_Space run
    into one space, trim."""
    s = str(value)
    while True:
        t = SPECIAL_SPAN.sub("", s)
        for token in reserved:
            t = t.replace(token, "")
        if t == s:
            break
        s = t
    s = "".join(ch for ch in s if IS_WS.match(ch) or unicodedata.category(ch) != "Cc")
    return WS_RUN.sub(" ", s).strip(" ")


def fill(template: str, values: dict) -> str | None:
    """Single pass over the template's {name} placeholders; None when one has no value."""
    missing = False

    def sub(m):
        nonlocal missing
        v = values.get(m.group(1))
        if v is None:
            missing = True
            return ""
        return str(v)
    out = PLACEHOLDER.sub(sub, template)
    return None if missing else out


def render_user_message(spec: dict, req: dict, reserved=()) -> str:
    def sanitise(value):
        return sanitise_value(value, reserved)

    out = spec["outputs"][req["output"]]
    values = {"language": req["language"], "language_name": spec["languages"][req["language"]]}
    for k in ("max_chars", "max_words", "count"):
        if req.get(k) is not None:
            values[k] = int(req[k])
    lines = []
    first = fill(out["instruction"], values)
    if first is None:
        raise ValueError(f"{req['output']}: the instruction needs a value it was not given")
    lines.append(first)
    for key in ("title", "brand", "category", "attributes", "keywords", "tone"):
        raw = req.get(key)
        if raw is None:
            continue
        if key == "attributes":
            pairs = [(sanitise(k), sanitise(v)) for k, v in raw]
            text = "; ".join(f"{k}: {v}" for k, v in pairs if k and v)
        elif key == "keywords":
            text = ", ".join(item for item in (sanitise(x) for x in raw) if item)
        else:
            text = sanitise(raw)
        if text:
            lines.append(fill(spec["context"][key], {"value": text}))
    if "length" in out:
        line = fill(out["length"], values)
        if line is not None:
            lines.append(line)
    lines.append(fill(spec["closing"], {"answer": out["answer"]}))
    return "\n".join(lines)


def reserved_tokens(tokenizer_json: Path) -> list:
    """The added tokens' contents, longest first (PROMPTS.md rule 2)."""
    added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("added_tokens", [])
    return sorted((t["content"] for t in added if t["content"]), key=lambda t: (-len(t), t))


def render_prompt(spec: dict, req: dict, reserved=()) -> str:
    return ("<|im_start|>system\n" + spec["system"].strip() + "<|im_end|>\n"
            + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
            + render_user_message(spec, req, reserved) + "<|im_end|>\n"
            + "<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ------------------------------------------------------------------------------------------------
# Image preprocessing (spec 2.8)
# ------------------------------------------------------------------------------------------------
def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int):
    """Target (height, width), spec 2.8 step 2, in f64, JavaScript rounding."""
    if h < factor or w < factor:
        scale = max(factor / h, factor / w)
        h, w = round_half_up(h * scale), round_half_up(w * scale)
    if max(h, w) / min(h, w) > 200:
        raise ValueError(f"aspect ratio over 200: {w}x{h}")
    hb, wb = round_half_up(h / factor) * factor, round_half_up(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def load_rgb(image) -> Image.Image:
    img = image if isinstance(image, Image.Image) else Image.open(image)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


@dataclass
class Pixels:
    values: np.ndarray  # float32 [Np, 1536]
    grid: tuple  # (t, h, w) in patches
    resized: tuple  # (height, width) fed to the patcher
    original: tuple  # (height, width) after EXIF


def preprocess(image, cfg: dict, min_pixels: int, max_pixels: int) -> Pixels:
    c = {**PREPROCESS_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    img = load_rgb(image)
    w0, h0 = img.size
    ps, tp, ms = int(c["patch_size"]), int(c["temporal_patch_size"]), int(c["merge_size"])
    h, w = (smart_resize(h0, w0, ps * ms, min_pixels, max_pixels) if c["do_resize"]
            else (h0, w0))
    if (w, h) != (w0, h0):
        img = img.resize((w, h), resample=int(c["resample"]))
    u8 = np.asarray(img, dtype=np.uint8)  # [h, w, 3]
    if c["do_rescale"]:
        x = (u8.astype(np.float64) * float(c["rescale_factor"])).astype(np.float32)
    else:
        x = u8.astype(np.float32)
    if c["do_normalize"]:
        mean = np.asarray(c["image_mean"], np.float64)
        std = np.asarray(c["image_std"], np.float64)
        x = ((x.astype(np.float64) - mean) / std).astype(np.float32)
    chw = x.transpose(2, 0, 1)  # [3, h, w]
    frames = np.stack([chw] * tp)  # a still image: the frame repeated temporal_patch_size times
    gh, gw = h // ps, w // ps
    v = frames.reshape(1, tp, 3, gh // ms, ms, ps, gw // ms, ms, ps)
    v = v.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gh * gw, 3 * tp * ps * ps)
    return Pixels(np.ascontiguousarray(v, np.float32), (1, gh, gw), (h, w), (h0, w0))


# ------------------------------------------------------------------------------------------------
# Positions (spec 2.6)
# ------------------------------------------------------------------------------------------------
def rope_index(ids: list[int], grids: list, image_id: int, video_id: int, vision_start: int,
               merge: int):
    """M-RoPE position rows [3, L] and rope_delta for one unpadded row of prompt ids."""
    pos = np.zeros((3, len(ids)), np.int64)
    starts = [i for i, t in enumerate(ids) if t == vision_start and i + 1 < len(ids)]
    kinds = [ids[i + 1] for i in starts]
    st, nxt, img_i = 0, 0, 0
    for kind in kinds:
        if kind != image_id:
            raise NotImplementedError("video blocks")
        ed = ids.index(image_id, st)
        t, h, w = grids[img_i]
        img_i += 1
        lt, lh, lw = int(t), int(h) // merge, int(w) // merge
        n_text = ed - st
        pos[:, st:ed] = nxt + np.arange(n_text)
        off = nxt + n_text
        j = np.arange(lt * lh * lw)
        pos[0, ed:ed + j.size] = off + j // (lh * lw)
        pos[1, ed:ed + j.size] = off + (j // lw) % lh
        pos[2, ed:ed + j.size] = off + j % lw
        nxt = int(pos[:, :ed + j.size].max()) + 1
        st = ed + j.size
    if st < len(ids):
        pos[:, st:] = nxt + np.arange(len(ids) - st)
    delta = int(pos.max()) + 1 - len(ids)
    return pos, delta


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------
@dataclass
class Step:
    token: int
    margin: float  # top-1 minus top-2 of the processed scores


@dataclass
class Generation:
    prompt: str
    prompt_ids: list
    pixels: Pixels
    tokens: list = field(default_factory=list)  # generated ids, EOS kept
    steps: list = field(default_factory=list)
    logits: list = field(default_factory=list)  # raw logits per step (keep_logits)


class Qwen35:
    def __init__(self, model_dir, threads: int = 0, prompts_json=PROMPTS_JSON,
                 max_pixels: int | None = None, min_pixels: int | None = None,
                 keep_logits: bool = False):
        self.dir = Path(model_dir)
        self.keep_logits = keep_logits
        self.config = load_json(self.dir / "config.json")
        self.text_config = self.config.get("text_config", {})
        self.pre = load_json(self.dir / "preprocessor_config.json")
        size = self.pre.get("size") or {}
        self.min_pixels = min_pixels or self.pre.get("min_pixels") or size.get(
            "shortest_edge", 56 * 56)
        self.max_pixels = max_pixels or self.pre.get("max_pixels") or size.get(
            "longest_edge", 28 * 28 * 1280)
        self.gen = self.generation_config()
        self.prompts = json.loads(Path(prompts_json).read_text())
        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))

        def tid(content):
            i = self.tokenizer.token_to_id(content)
            if i is None:
                raise ValueError(f"{content} is not in the vocabulary")
            return i
        self.image_id = tid("<|image_pad|>")
        self.video_id = tid("<|video_pad|>")
        self.vision_start = tid("<|vision_start|>")
        eos = self.gen.get("eos_token_id")
        if eos is None:
            eos = [tid("<|im_end|>"), tid("<|endoftext|>")]
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.merge = int(self.config.get("vision_config", {}).get("spatial_merge_size", 2))

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads

        def session(name):
            return ort.InferenceSession(str(self.dir / "onnx" / f"{name}.onnx"), opts,
                                        providers=["CPUExecutionProvider"])
        self.embed_s = session("embed_tokens")
        self.vision_s = session("vision_encoder")
        self.decoder_s = session("decoder_model_merged")
        self.inputs = {i.name: i for i in self.decoder_s.get_inputs()}
        self.state_names = [n for n in self.inputs if n.startswith(("past_", "past_key_values."))]
        self.output_names = [o.name for o in self.decoder_s.get_outputs()]

    def generation_config(self) -> dict:
        gen = {}
        gen.update({k: v for k, v in self.config.items() if not isinstance(v, dict)})
        gen.update(self.text_config)
        gen.update(load_json(self.dir / "generation_config.json"))
        for key in ("no_repeat_ngram_size", "min_length", "min_new_tokens", "bad_words_ids",
                    "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                    "forced_eos_token_id"):
            if gen.get(key):
                raise NotImplementedError(f"generation setting {key}={gen[key]!r}")
        return gen

    # ---- steps ---------------------------------------------------------------------------------
    def preprocess(self, image) -> Pixels:
        return preprocess(image, self.pre, self.min_pixels, self.max_pixels)

    def render(self, req: dict) -> str:
        return render_prompt(self.prompts, req, reserved_tokens(self.dir / "tokenizer.json"))

    def expand(self, prompt: str, grids) -> str:
        parts = prompt.split("<|image_pad|>")
        assert len(parts) == len(grids) + 1, "one <|image_pad|> per image"
        out = parts[0]
        for (t, h, w), rest in zip(grids, parts[1:]):
            out += "<|image_pad|>" * (t * h * w // self.merge ** 2) + rest
        return out

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embed_s.run(["inputs_embeds"], {"input_ids": ids})[0]

    def vision(self, pixel_values: np.ndarray, grid: np.ndarray) -> np.ndarray:
        return self.vision_s.run(["image_features"], {"pixel_values": pixel_values,
                                                      "image_grid_thw": grid})[0]

    def merge_features(self, embeds: np.ndarray, ids: np.ndarray, features: np.ndarray):
        """The k-th image pad (rows, then positions, in order) gets feature row k."""
        where = np.argwhere(ids == self.image_id)
        if len(where) != features.shape[0]:
            raise ValueError(f"{len(where)} image pads but {features.shape[0]} feature rows")
        out = embeds.copy()
        out[where[:, 0], where[:, 1]] = features
        return out

    def empty_states(self, batch: int) -> dict:
        """Metadata shape with `batch_size` -> batch and every other symbolic dim -> 0."""
        states = {}
        for name in self.state_names:
            shape = [batch if d == "batch_size" else (d if isinstance(d, int) else 0)
                     for d in self.inputs[name].shape]
            states[name] = np.zeros(shape, np.float32)
        return states

    @staticmethod
    def past_from(presents: dict) -> dict:
        out = {}
        for name, value in presents.items():
            if name.startswith("present."):
                out["past_key_values." + name[len("present."):]] = value
            elif name.startswith("present_"):
                out["past_" + name[len("present_"):]] = value
        return out

    def past_length(self, states: dict) -> int:
        first = next(n for n in self.state_names if n.startswith("past_key_values."))
        return int(states[first].shape[-2])

    def decode(self, embeds, mask, positions, states: dict, keep: int = 1):
        feeds = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions,
                 **states}
        if "num_logits_to_keep" in self.inputs:
            feeds["num_logits_to_keep"] = np.array(keep, np.int64)
        outs = dict(zip(self.output_names, self.decoder_s.run(self.output_names, feeds)))
        return outs["logits"], self.past_from(outs)

    def process(self, logits: np.ndarray, seen: list[int]) -> np.ndarray:
        scores = logits.astype(np.float32).copy()
        penalty = self.gen.get("repetition_penalty")
        if penalty is not None and penalty != 1.0:
            idx = np.fromiter(set(seen), np.int64)
            v = scores[idx].astype(np.float64)
            scores[idx] = np.where(v < 0, v * penalty, v / penalty).astype(np.float32)
        return scores

    # ---- one request ---------------------------------------------------------------------------
    def prepare(self, image, req: dict):
        prompt = self.render(req)
        px = self.preprocess(image)
        ids = self.tokenize(self.expand(prompt, [px.grid]))
        return prompt, px, ids

    def prefill(self, px: Pixels, ids: list[int]):
        arr = np.asarray([ids], np.int64)
        embeds = self.merge_features(self.embed(arr), arr,
                                     self.vision(px.values, np.asarray([px.grid], np.int64)))
        pos, delta = rope_index(ids, [px.grid], self.image_id, self.video_id,
                                self.vision_start, self.merge)
        logits, states = self.decode(embeds, np.ones((1, len(ids)), np.int64), pos[:, None, :],
                                     self.empty_states(1))
        return logits[0, -1], states, delta

    def step(self, token: int, states: dict, delta: int, total: int):
        """One decode step: `total` = tokens in the row including `token`."""
        embeds = self.embed(np.asarray([[token]], np.int64))
        p = self.past_length(states) + delta
        positions = np.full((3, 1, 1), p, np.int64)
        logits, states = self.decode(embeds, np.ones((1, total), np.int64), positions, states)
        return logits[0, -1], states

    def generate(self, image, req: dict, max_new_tokens: int = 64) -> Generation:
        prompt, px, ids = self.prepare(image, req)
        res = Generation(prompt, ids, px)
        logits, states, delta = self.prefill(px, ids)
        seq = list(ids)
        while True:
            if self.keep_logits:
                res.logits.append(logits.copy())
            scores = self.process(logits, seq)
            token = int(np.argmax(scores))
            top2 = np.partition(scores, -2)[-2:]
            res.steps.append(Step(token, float(top2[1] - top2[0])))
            seq.append(token)
            res.tokens.append(token)
            if token in self.eos or len(res.tokens) >= max_new_tokens:
                return res
            logits, states = self.step(token, states, delta, len(seq))

    def text(self, tokens: list[int]) -> dict:
        raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
        clean = re.sub(r"^\s*<think>.*?</think>", "", raw, flags=re.S).strip()
        return {"text": raw, "clean": clean}


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def pixel_summary(px: Pixels) -> dict:
    v = px.values
    return {"shape": list(v.shape), "sha256": hashlib.sha256(v.tobytes()).hexdigest(),
            "first": [float(x) for x in v.reshape(-1)[:8]],
            "sum": float(v.astype(np.float64).sum())}


def run_request(model: Qwen35, image: Path, req: dict, max_new: int, npy_dir: Path | None):
    g = model.generate(image, req, max_new)
    out = {"id": req.get("id"), "image": str(req.get("image", image)), "prompt": g.prompt,
           "prompt_ids": g.prompt_ids, "grid": list(g.pixels.grid),
           "pixel_values": pixel_summary(g.pixels), "generated_ids": g.tokens,
           **model.text(g.tokens), "ended_with_eos": g.tokens[-1] in model.eos,
           "min_margin": min(s.margin for s in g.steps)}
    if npy_dir is not None:
        npy_dir.mkdir(parents=True, exist_ok=True)
        name = (req.get("id") or Path(image).stem) + ".npy"
        np.save(npy_dir / name, g.pixels.values)
        out["pixel_values"]["npy"] = str(npy_dir / name)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--requests", type=Path, help="a request file (tests/conformance format)")
    ap.add_argument("--only", action="append", default=[], help="request id(s) to run")
    ap.add_argument("--image", type=Path)
    ap.add_argument("--output", choices=["alt_text", "description", "seo_title", "keywords"])
    ap.add_argument("--language", default="en")
    for k in ("title", "brand", "category", "tone"):
        ap.add_argument(f"--{k}")
    ap.add_argument("--attribute", action="append", default=[], help="Key=Value, in order")
    ap.add_argument("--keyword", action="append", default=[])
    ap.add_argument("--max-chars", type=int)
    ap.add_argument("--max-words", type=int)
    ap.add_argument("--count", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--max-pixels", type=int)
    ap.add_argument("--npy-dir", type=Path, help="also save each pixel_values array as .npy")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    model = Qwen35(args.model, threads=args.threads, max_pixels=args.max_pixels)
    results = []
    if args.requests:
        spec = json.loads(args.requests.read_text())
        max_new = args.max_new_tokens or spec.get("max_new_tokens", 64)
        for req in spec["requests"]:
            if args.only and req["id"] not in args.only:
                continue
            image = args.requests.parent / req["image"]
            results.append(run_request(model, image, req, max_new, args.npy_dir))
    else:
        if not (args.image and args.output):
            ap.error("--requests, or --image and --output")
        req = {"output": args.output, "language": args.language, "title": args.title,
               "brand": args.brand, "category": args.category, "tone": args.tone,
               "attributes": [a.split("=", 1) for a in args.attribute] or None,
               "keywords": args.keyword or None, "max_chars": args.max_chars,
               "max_words": args.max_words, "count": args.count}
        max_new = args.max_new_tokens or 64
        results.append(run_request(model, args.image, req, max_new, args.npy_dir))
    print(json.dumps({"model": str(args.model), "max_new_tokens": max_new,
                      "results": results,
                      "min_margin": min((r["min_margin"] for r in results), default=None)},
                     indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
