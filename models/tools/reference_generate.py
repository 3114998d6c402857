#!/usr/bin/env python3
"""Independent Python onnxruntime reference for Florence-2 generation (spec section 3).

    python reference_generate.py --model models/tiny-florence2 --image cat.png \
        [--image more.npy ...] [--task '<CAPTION>' | --prompt 'free text' ...] \
        [--max-new-tokens 128] [--batch]

Prints JSON: per (image, task) pair the prompt ids, generated token ids (the full decoder
sequence, starting `2, 0, ...`, cut after the first EOS) and text. Images are preprocessed like
the Python processor (EXIF transpose, RGB, PIL bicubic resize to 768x768, 1/255, ImageNet
mean/std) or given preprocessed as a .npy of shape [3, 768, 768] / [1, 3, 768, 768].

It knows nothing about how the test model was built: it reads names, dims and settings from the
model directory, like a server would. It is also a small library: `Florence2` exposes the steps
(embed, vision, encode, decode) so tests can drive them in other orders.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

EOS_FALLBACK = 2


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class Step:
    """One greedy decision of one row (for margin statistics)."""
    margin: float  # top1 - top2 of the processed logits (inf when the step was forced)
    changed_by_ngram: bool  # the no-repeat-ngram ban changed the argmax


@dataclass
class Result:
    sequences: list  # per row: decoder ids, start token included, cut after the first EOS
    steps: list = field(default_factory=list)  # per row: list[Step]
    last_logits: list = field(default_factory=list)  # per row, per step: raw logits (optional)


class Florence2:
    def __init__(self, model_dir, threads: int = 0, keep_logits: bool = False):
        self.dir = Path(model_dir)
        self.keep_logits = keep_logits
        self.config = load_json(self.dir / "config.json")
        self.pre = load_json(self.dir / "preprocessor_config.json")
        self.tok_config = load_json(self.dir / "tokenizer_config.json")
        self.gen = self.generation_config()
        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3

        def session(name):
            return ort.InferenceSession(str(self.dir / "onnx" / f"{name}.onnx"), opts,
                                        providers=["CPUExecutionProvider"])
        self.vision_s = session("vision_encoder")
        self.embed_s = session("embed_tokens")
        self.encoder_s = session("encoder_model")
        self.decoder_s = session("decoder_model_merged")
        self.past_names = [i.name for i in self.decoder_s.get_inputs()
                           if i.name.startswith("past_key_values.")]
        first = next(i for i in self.decoder_s.get_inputs() if i.name in self.past_names)
        self.heads, self.head_dim = first.shape[1], first.shape[3]  # concrete ints (spec 2.4)
        self.output_names = [o.name for o in self.decoder_s.get_outputs()]

    # ---- configuration (spec 3.1: config, then text_config, then generation_config) -----------
    def generation_config(self) -> dict:
        gen = {"max_length": 20, "num_beams": 1, "no_repeat_ngram_size": 0,
               "forced_bos_token_id": None, "forced_eos_token_id": None}
        gen.update(self.config)
        gen.update(self.config.get("text_config", {}))
        gen.update(load_json(self.dir / "generation_config.json"))
        return gen

    # ---- preprocessing -------------------------------------------------------------------------
    def preprocess(self, image) -> np.ndarray:
        """Path, PIL image or array -> float32 [3, H, W]."""
        if isinstance(image, (str, Path)) and str(image).endswith(".npy"):
            arr = np.load(image).astype(np.float32)
            return arr[0] if arr.ndim == 4 else arr
        from PIL import Image, ImageOps
        img = image if isinstance(image, Image.Image) else Image.open(image)
        img = ImageOps.exif_transpose(img).convert("RGB")  # spec 11.1: EXIF applied
        size = self.pre.get("size", {"height": 768, "width": 768})
        img = img.resize((size["width"], size["height"]), resample=self.pre.get("resample", 3))
        x = np.asarray(img, dtype=np.float32) * np.float32(self.pre.get("rescale_factor", 1 / 255))
        mean = np.asarray(self.pre["image_mean"], np.float32)
        std = np.asarray(self.pre["image_std"], np.float32)
        return ((x - mean) / std).transpose(2, 0, 1).copy()

    # ---- prompts (spec 5.1, transformers.js construct_prompts) ---------------------------------
    def construct_prompt(self, text: str) -> str:
        without = self.pre.get("task_prompts_without_inputs", {})
        if text in without:
            return without[text]
        for task, template in self.pre.get("task_prompts_with_input", {}).items():
            if task in text:
                return template.replace("{input}", text).replace(task, "")
        return text

    def tokenize(self, prompts: list[str], left_pad=False):
        """Right-padded (BART default) ids and mask, int64 [B, L]."""
        encs = [self.tokenizer.encode(p).ids for p in prompts]
        width = max(len(e) for e in encs)
        pad = self.gen.get("pad_token_id", 1)
        ids = np.full((len(encs), width), pad, np.int64)
        mask = np.zeros((len(encs), width), np.int64)
        for r, e in enumerate(encs):
            sl = slice(width - len(e), width) if left_pad else slice(0, len(e))
            ids[r, sl], mask[r, sl] = e, 1
        return ids, mask

    # ---- the four graphs -----------------------------------------------------------------------
    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embed_s.run(["inputs_embeds"], {"input_ids": ids})[0]

    def vision(self, pixels: np.ndarray) -> np.ndarray:
        return self.vision_s.run(["image_features"], {"pixel_values": pixels})[0]

    def encode(self, embeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.encoder_s.run(["last_hidden_state"],
                                  {"inputs_embeds": embeds, "attention_mask": mask})[0]

    def empty_past(self, batch: int) -> dict:
        z = np.zeros((batch, self.heads, 0, self.head_dim), np.float32)
        return {n: z for n in self.past_names}

    def decode(self, embeds, enc_mask, enc_hidden, past: dict, use_cache: bool):
        feeds = {"inputs_embeds": embeds, "encoder_attention_mask": enc_mask,
                 "encoder_hidden_states": enc_hidden,
                 "use_cache_branch": np.array([use_cache], dtype=np.bool_), **past}
        outs = dict(zip(self.output_names, self.decoder_s.run(self.output_names, feeds)))
        return outs["logits"], {k: v for k, v in outs.items() if k.startswith("present.")}

    @staticmethod
    def past_from(presents: dict, kind: str) -> dict:
        return {"past_key_values." + k[len("present."):]: v for k, v in presents.items()
                if f".{kind}." in k}

    def encoder_states(self, pixels: np.ndarray, prompts: list[str], left_pad=False,
                       text_first=False):
        """Steps 2-6: prompt ids, embeds, image features, image-first merge, encoder."""
        ids, text_mask = self.tokenize([self.construct_prompt(p) for p in prompts], left_pad)
        text = self.embed(ids)
        image = self.vision(pixels)
        image_mask = np.ones(image.shape[:2], np.int64)
        parts = [(image, image_mask), (text, text_mask)]
        if text_first:  # deliberately wrong order, for the self-check only
            parts.reverse()
        embeds = np.concatenate([p[0] for p in parts], axis=1)
        mask = np.concatenate([p[1] for p in parts], axis=1)
        return ids, mask, self.encode(embeds, mask)

    # ---- logits processors (spec 3.2 step 9, transformers.js order) --------------------------
    def process(self, logits: np.ndarray, seq: list[int], max_length: int) -> np.ndarray:
        out = logits.astype(np.float32).copy()
        n = self.gen.get("no_repeat_ngram_size") or 0
        if n and len(seq) + 1 >= n:
            prefix = tuple(seq[len(seq) - n + 1:])
            for i in range(len(seq) - n + 1):
                if tuple(seq[i:i + n - 1]) == prefix:
                    out[seq[i + n - 1]] = -np.inf
        bos = self.gen.get("forced_bos_token_id")
        if bos is not None and len(seq) == 1:
            out[:] = -np.inf
            out[bos] = logits[bos]
        eos = self.gen.get("forced_eos_token_id")
        if eos is not None and len(seq) == max_length - 1:
            out[:] = -np.inf
            out[eos] = logits[eos]
        return out

    # ---- generation (spec 3.2 steps 7-12) ------------------------------------------------------
    def generate(self, pixels: np.ndarray, prompts: list[str], max_new_tokens: int = 20,
                 use_cache: bool = True, **encoder_kwargs) -> Result:
        """Greedy search. use_cache=False recomputes the full prefix every step through the
        no-past branch (the O(n^2) fallback of spec 2.5), for cross-checking the cache."""
        batch = len(prompts)
        _, mask, hidden = self.encoder_states(pixels, prompts, **encoder_kwargs)
        start = self.gen.get("decoder_start_token_id", EOS_FALLBACK)
        eos = self.gen.get("eos_token_id", EOS_FALLBACK)
        max_length = 1 + max_new_tokens
        seqs = [[start] for _ in range(batch)]
        done = [False] * batch
        res = Result(sequences=seqs, steps=[[] for _ in range(batch)],
                     last_logits=[[] for _ in range(batch)])
        past, encoder_past = self.empty_past(batch), None
        while True:
            if encoder_past is None or not use_cache:
                ids = np.array(seqs, np.int64) if not use_cache else np.array(
                    [[s[-1]] for s in seqs], np.int64)
                logits, presents = self.decode(self.embed(ids), mask, hidden,
                                               self.empty_past(batch), False)
                if encoder_past is None:
                    encoder_past = self.past_from(presents, "encoder")  # keep for the request
            else:
                ids = np.array([[s[-1]] for s in seqs], np.int64)
                logits, presents = self.decode(self.embed(ids), mask, hidden,
                                               {**past, **encoder_past}, True)
            past = self.past_from(presents, "decoder")
            for r in range(batch):
                raw = logits[r, -1]
                scores = self.process(raw, seqs[r], max_length)
                token = int(np.argmax(scores))
                if not done[r]:
                    finite = np.sort(scores[np.isfinite(scores)])
                    margin = float(finite[-1] - finite[-2]) if finite.size > 1 else float("inf")
                    res.steps[r].append(Step(margin, token != int(np.argmax(raw))
                                             and finite.size > 1))
                    if self.keep_logits:
                        res.last_logits[r].append(raw.copy())
                seqs[r].append(token)
                done[r] = done[r] or token == eos
            if all(done) or len(seqs[0]) >= max_length:
                break
        res.sequences = [cut_after_eos(s, eos) for s in seqs]
        return res

    # ---- text (spec 5.3) -----------------------------------------------------------------------
    def texts(self, ids: list[int]) -> dict:
        """`text`: transformers.js/Python pure_text (decode with specials, remove <s> </s>,
        cleanup spaces, trim). `clean`: the server recipe (skip specials, drop <loc_N>, collapse
        whitespace)."""
        raw = self.tokenizer.decode(ids, skip_special_tokens=False)
        cleanup = self.tok_config.get("clean_up_tokenization_spaces", True)
        text = raw.replace("<s>", "").replace("</s>", "")
        if cleanup:
            text = clean_up_tokenization(text)
        clean = self.tokenizer.decode(ids, skip_special_tokens=True)
        clean = re.sub(r"<loc_\d+>", "", clean)
        if cleanup:
            clean = clean_up_tokenization(clean)
        return {"raw": raw, "text": text.strip(), "clean": " ".join(clean.split())}


def cut_after_eos(seq: list[int], eos: int) -> list[int]:
    """Keep the start token and everything up to the first EOS after position 0."""
    for i in range(1, len(seq)):
        if seq[i] == eos:
            return seq[:i + 1]
    return seq


def clean_up_tokenization(s: str) -> str:
    """transformers' clean_up_tokenization (what clean_up_tokenization_spaces switches on)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        s = s.replace(a, b)
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--image", action="append", required=True, help="image file or .npy")
    ap.add_argument("--task", action="append", default=[],
                    help="task token such as <CAPTION> (mapped to its prompt)")
    ap.add_argument("--prompt", action="append", default=[], help="free-text prompt")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="default: the model's max_length - 1 (spec 3.1)")
    ap.add_argument("--batch", action="store_true",
                    help="run all (image, task) pairs as one right-padded batch")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    model = Florence2(args.model, threads=args.threads)
    tasks = args.task + args.prompt or ["<CAPTION>"]
    max_new = args.max_new_tokens if args.max_new_tokens is not None \
        else int(model.gen["max_length"]) - 1
    pairs = [(img, t) for img in args.image for t in tasks]
    pixels = {img: model.preprocess(img) for img in args.image}
    groups = [pairs] if args.batch else [[p] for p in pairs]
    results, margins, ngram = [], [], 0
    for group in groups:
        px = np.stack([pixels[img] for img, _ in group])
        res = model.generate(px, [t for _, t in group], max_new)
        for (img, task), seq, steps in zip(group, res.sequences, res.steps):
            prompt = model.construct_prompt(task)
            results.append({"image": img, "task": task, "prompt": prompt,
                            "prompt_ids": model.tokenizer.encode(prompt).ids,
                            "token_ids": seq, **model.texts(seq)})
            margins += [s.margin for s in steps if np.isfinite(s.margin)]
            ngram += sum(s.changed_by_ngram for s in steps)
    print(json.dumps({"model": str(args.model), "max_new_tokens": max_new,
                      "batch": args.batch, "results": results,
                      "min_margin": min(margins) if margins else None,
                      "ngram_bans_that_changed_a_token": ngram}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
