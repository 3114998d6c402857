#!/usr/bin/env python3
"""Generates altimage's own Florence-2 test model: random weights in the onnx-community layout.

    python make_florence2.py --preset tiny --out ../tiny-florence2          # the committed fixture
    python make_florence2.py --preset base --out ../base-shaped             # cost-realistic, ~1.1 GB
    python make_florence2.py --check ../tiny-florence2                      # byte-for-byte check

Same preset + seed => byte-identical files (numpy PCG64 streams per tensor, a deterministic
tokenizer training run, no timestamps, fixed producer strings). Pins: models/tools/requirements.txt.
See models/README.md and /work/shared/spec/florence-2-onnx.md (the contract this follows).
"""
from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

import florence2_graphs as fg  # noqa: E402
from onnx_builder import save_model  # noqa: E402

DEFAULT_SEED = 20240611
IMAGE_SIZE = 768
IMAGE_TOKENS = 577
TRANSFORMERS_VERSION = "4.38.2"  # what the onnx-community files state; a constant, not a probe


@dataclass(frozen=True)
class Preset:
    name: str
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    bpe_vocab: int  # target size of the trained BPE vocab (specials + bytes + merges)
    mask_id: int | None  # pad the BPE vocab with filler tokens so <mask> lands here (None: no pad)
    vision: object


PRESETS = {
    "tiny": Preset("tiny", d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=128,
                   bpe_vocab=800, mask_id=None, vision=fg.TinyVision()),
    # Florence-2-base shapes (spec section 6/7): vocab 51289 with the added tokens at 50265..
    "base": Preset("base", d_model=768, heads=12, encoder_layers=6, decoder_layers=6,
                   ffn_dim=3072, bpe_vocab=1000, mask_id=50264, vision=fg.DavitVision()),
}

# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in BART
BOS, PAD, EOS, UNK = 0, 1, 2, 3

# Florence-2's 1024 added tokens, in the order of spec section 7.
FLORENCE_TOKENS = (["<od>", "</od>", "<ocr>", "</ocr>"]
                   + [f"<loc_{i}>" for i in range(1000)]
                   + ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>",
                      "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>",
                      "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
                      "</proposal>", "<poly>", "</poly>", "<and>"])
assert len(FLORENCE_TOKENS) == 1024

# A small built-in English corpus: product-description-ish sentences plus Florence's prompts.
CORPUS = """\
A white ceramic coffee mug with a curved handle sits on a wooden kitchen table.
This stainless steel water bottle keeps drinks cold for twenty four hours.
The leather handbag has a gold zipper, two inner pockets and an adjustable shoulder strap.
A pair of blue running shoes with white laces and a soft cushioned sole.
The wooden chair is painted black and has a woven seat.
A red cotton t-shirt folded neatly on a light grey background.
Close-up of a silver wristwatch with a round face and a brown leather band.
The desk lamp has a flexible neck, a matte finish and a warm LED light.
A green ceramic plant pot holds a small succulent with thick leaves.
Two glass jars filled with dried pasta and rice stand next to each other.
The backpack is made of durable canvas with a padded laptop sleeve.
A soft wool blanket in beige and cream stripes is draped over a sofa.
A black wireless headphone set rests on a white desk beside a notebook.
The kitchen knife has a sharp steel blade and a wooden handle.
A bouquet of yellow tulips in a clear glass vase on a windowsill.
The children's toy car is bright orange with large black wheels.
A round mirror with a thin brass frame hangs on a pale blue wall.
This cotton towel is thick, soft and quick drying, available in six colours.
A set of three scented candles in small tin containers with paper labels.
The smartphone case is transparent with reinforced corners for extra protection.
A woman wearing a denim jacket holds a paper cup of coffee on a city street.
A man in a grey suit walks across a bright office lobby.
A brown dog sits on the grass in front of a red brick house.
A cat sleeps on a knitted cushion near a sunny window.
The product photo shows a pair of sunglasses with tortoiseshell frames.
A handmade wooden cutting board with a natural grain and rounded edges.
The sneakers come in a box with the brand logo printed on the lid.
A large cardboard box labelled fragile sits on a loading dock.
The label on the bottle reads organic olive oil, cold pressed, five hundred millilitres.
A bicycle with a black frame, a brown saddle and a small front basket.
Shelves display jars of honey, jam and pickled vegetables in a small shop.
A laptop computer is open on a desk showing a chart on the screen.
The sofa is upholstered in dark green velvet with four wooden legs.
A plate of fresh fruit with sliced apples, oranges, grapes and strawberries.
A yellow raincoat hangs on a hook next to a pair of rubber boots.
The garden hose is coiled neatly beside a metal watering can.
A teapot, two cups and a small milk jug on a silver tray.
The poster shows a mountain landscape at sunset with the words explore more.
A close view of a keyboard with white keys and a black aluminium body.
Fresh bread loaves cool on a rack in a bakery.
What does the image describe?
Describe in detail what is shown in the image.
Describe with a paragraph what is shown in the image.
What is the text in the image?
What is the text in the image, with regions?
Locate the objects with category name in the image.
Locate the objects in the image, with their descriptions.
Locate the region proposals in the image.
Locate the phrases in the caption: a red car.
Locate a bottle in the image with mask
What is the polygon mask of region one?
Locate the dog in the image.
What is the region two?
What does the region three describe?
What text is in the region four?
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable-character table used by the ByteLevel pre-tokenizer."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train_bpe(target_vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=target_vocab, min_frequency=1, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return tok


def build_tokenizer(preset: Preset) -> tuple[Tokenizer, dict]:
    """BART-style byte-level BPE: <s> <pad> </s> <unk>, the trained vocab, [fillers,] <mask>,
    then Florence's 1024 added tokens (special)."""
    spec = json.loads(train_bpe(preset.bpe_vocab).to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    trained = len(vocab)
    if preset.mask_id is not None:
        # Unreachable filler entries (no merge produces them) so ids match the real vocabulary.
        for i in range(preset.mask_id - trained):
            vocab[f"<altimage_unused_{i}>"] = trained + i
    mask_id = len(vocab)
    vocab["<mask>"] = mask_id
    spec["model"]["unk_token"] = None  # byte-level: every string is representable
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS),
                                                      trim_offsets=True, add_prefix_space=False)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, single_word=False,
                                       normalized=False, special=True)])
    tok.add_special_tokens([AddedToken(t, lstrip=False, rstrip=False, single_word=False,
                                       normalized=False, special=True) for t in FLORENCE_TOKENS])
    first_added = tok.token_to_id(FLORENCE_TOKENS[0])
    assert tok.token_to_id("<mask>") == mask_id and first_added == mask_id + 1
    assert tok.token_to_id("<and>") == mask_id + 1024
    info = {"trained_vocab": trained, "mask_id": mask_id, "first_added_id": first_added,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "suppressed_ids": suppressed_ids(tok)}
    return tok, info


def suppressed_ids(tok: Tokenizer) -> list[int]:
    """Ids a caption should never contain: specials (except </s>), <mask>, fillers, the added
    Florence tokens, and byte tokens that are not printable ASCII (their text would differ
    between decoders) or only whitespace. They get a hugely negative final_logits_bias."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    out = []
    size = tok.get_vocab_size(with_added_tokens=True)
    for i in range(size):
        t = tok.id_to_token(i)
        if i == EOS:
            continue
        if t.startswith("<") and t.endswith(">") and len(t) > 2:  # specials, fillers, added
            out.append(i)
            continue
        raw = [byte_of.get(ch) for ch in t]
        if any(b is None or b < 0x20 or b > 0x7E for b in raw) or all(b == 0x20 for b in raw):
            out.append(i)
    return out


def write_tokenizer_files(tok: Tokenizer, info: dict, out: Path):
    tok.save(str(out / "tokenizer.json"), pretty=False)
    spec = json.loads(tok.to_str())
    model = spec["model"]
    write_json(out / "vocab.json", model["vocab"], indent=None)
    merges = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else m
                                  for m in model["merges"]]
    (out / "merges.txt").write_text("\n".join(merges) + "\n")
    write_json(out / "added_tokens.json",
               {t: tok.token_to_id(t) for t in FLORENCE_TOKENS}, sort_keys=True)

    def entry(content, lstrip=False):
        return {"content": content, "lstrip": lstrip, "normalized": False, "rstrip": False,
                "single_word": False, "special": True}
    decoder = {str(i): entry(t) for i, t in enumerate(SPECIAL_TOKENS)}
    decoder[str(info["mask_id"])] = entry("<mask>", lstrip=True)
    for t in FLORENCE_TOKENS:
        decoder[str(tok.token_to_id(t))] = entry(t)
    write_json(out / "tokenizer_config.json", {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": FLORENCE_TOKENS,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": True,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "errors": "replace",
        "mask_token": "<mask>",
        "model_max_length": 1024,
        "pad_token": "<pad>",
        "processor_class": "Florence2Processor",
        "sep_token": "</s>",
        "tokenizer_class": "BartTokenizer",
        "trim_offsets": True,
        "unk_token": "<unk>",
    })
    write_json(out / "special_tokens_map.json", {
        "additional_special_tokens": FLORENCE_TOKENS,
        "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>",
        "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False,
                       "rstrip": False, "single_word": False},
        "pad_token": "<pad>", "sep_token": "</s>", "unk_token": "<unk>",
    })


# ------------------------------------------------------------------------------------------------
# Root JSON files
# ------------------------------------------------------------------------------------------------
def write_json(path: Path, obj, indent=2, sort_keys=False):
    path.write_text(json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


GENERATION_KEYS = {
    "bos_token_id": BOS, "decoder_start_token_id": EOS, "early_stopping": True,
    "eos_token_id": EOS, "forced_bos_token_id": BOS, "forced_eos_token_id": EOS,
    "no_repeat_ngram_size": 3, "num_beams": 3, "pad_token_id": PAD,
}


def vision_config(preset: Preset, d_model: int) -> dict:
    v = preset.vision
    common = {
        "model_type": "davit", "projection_dim": d_model,
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        "image_pos_embed": {"max_pos_embeddings": v.pos_table, "type": "learned_abs_2d"},
        "visual_temporal_embedding": {"max_temporal_embeddings": 100, "type": "COSINE"},
    }
    if isinstance(v, fg.DavitVision):
        n = len(v.dims)
        return {**common, "depths": list(v.depths), "dim_embed": list(v.dims),
                "num_heads": list(v.heads), "num_groups": list(v.heads),
                "window_size": v.window, "patch_size": [v.stem_kernel] + [3] * (n - 1),
                "patch_stride": [v.stem_stride] + [2] * (n - 1),
                "patch_padding": [v.stem_kernel // 2] + [1] * (n - 1),
                "patch_prenorm": [False] + [True] * (n - 1), "drop_path_rate": 0.0}
    # tiny: one patchify conv and one MLP block (no attention), described in the same terms
    return {**common, "depths": [1], "dim_embed": [v.channels], "num_heads": [0],
            "num_groups": [0], "window_size": 0, "patch_size": [v.patch],
            "patch_stride": [v.patch], "patch_padding": [0], "patch_prenorm": [False],
            "drop_path_rate": 0.0}


def config_json(preset: Preset, dims: fg.TextDims) -> dict:
    text = {
        "activation_dropout": 0.1, "activation_function": "gelu",
        "add_bias_logits": False, "add_final_layer_norm": True, "attention_dropout": 0.1,
        "d_model": dims.d_model, "decoder_attention_heads": dims.heads,
        "decoder_ffn_dim": dims.ffn_dim, "decoder_layerdrop": 0.0,
        "decoder_layers": dims.decoder_layers, "dropout": 0.1,
        "encoder_attention_heads": dims.heads, "encoder_ffn_dim": dims.ffn_dim,
        "encoder_layerdrop": 0.0, "encoder_layers": dims.encoder_layers, "init_std": 0.02,
        "is_encoder_decoder": True, "max_length": 20,
        "max_position_embeddings": dims.max_positions, "model_type": "florence2_language",
        "normalize_before": True, "num_hidden_layers": dims.encoder_layers,
        "scale_embedding": False, "use_cache": True, "vocab_size": dims.vocab_size,
        **GENERATION_KEYS,
    }
    return {
        "_name_or_path": f"altimage/{preset.name}-florence2",
        "architectures": ["Florence2ForConditionalGeneration"],
        "bos_token_id": BOS, "eos_token_id": EOS, "ignore_index": -100,
        "is_encoder_decoder": True, "model_type": "florence2", "pad_token_id": PAD,
        "projection_dim": dims.d_model,
        "text_config": dict(sorted(text.items())),
        "torch_dtype": "float32", "transformers_version": TRANSFORMERS_VERSION,
        "vision_config": dict(sorted(vision_config(preset, dims.d_model).items())),
        "vocab_size": dims.vocab_size,
    }


def generation_config_json() -> dict:
    return dict(sorted({**GENERATION_KEYS, "_from_model_config": True,
                        "transformers_version": TRANSFORMERS_VERSION}.items()))


TASKS_WITHOUT_INPUT = {
    "<OCR>": "What is the text in the image?",
    "<OCR_WITH_REGION>": "What is the text in the image, with regions?",
    "<CAPTION>": "What does the image describe?",
    "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
    "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image.",
    "<OD>": "Locate the objects with category name in the image.",
    "<DENSE_REGION_CAPTION>": "Locate the objects in the image, with their descriptions.",
    "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
}
TASKS_WITH_INPUT = {
    "<CAPTION_TO_PHRASE_GROUNDING>": "Locate the phrases in the caption: {input}",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "Locate {input} in the image with mask",
    "<REGION_TO_SEGMENTATION>": "What is the polygon mask of region {input}",
    "<OPEN_VOCABULARY_DETECTION>": "Locate {input} in the image.",
    "<REGION_TO_CATEGORY>": "What is the region {input}?",
    "<REGION_TO_DESCRIPTION>": "What does the region {input} describe?",
    "<REGION_TO_OCR>": "What text is in the region {input}?",
}
POST_PROCESSING = {
    "<OCR>": "pure_text", "<OCR_WITH_REGION>": "ocr", "<CAPTION>": "pure_text",
    "<DETAILED_CAPTION>": "pure_text", "<MORE_DETAILED_CAPTION>": "pure_text",
    "<OD>": "description_with_bboxes", "<DENSE_REGION_CAPTION>": "description_with_bboxes",
    "<CAPTION_TO_PHRASE_GROUNDING>": "phrase_grounding",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "polygons", "<REGION_TO_SEGMENTATION>": "polygons",
    "<OPEN_VOCABULARY_DETECTION>": "description_with_bboxes_or_polygons",
    "<REGION_TO_CATEGORY>": "pure_text", "<REGION_TO_DESCRIPTION>": "pure_text",
    "<REGION_TO_OCR>": "pure_text", "<REGION_PROPOSAL>": "bboxes",
}


def preprocessor_config_json() -> dict:
    # Spec section 4, as in onnx-community/Florence-2-base-ft after "Upload
    # preprocessor_config.json" (no auto_map: it was removed there, and nothing reads it).
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    return {
        "_valid_processor_keys": ["images", "do_resize", "size", "resample", "do_center_crop",
                                  "crop_size", "do_rescale", "rescale_factor", "do_normalize",
                                  "image_mean", "image_std", "do_convert_rgb", "return_tensors",
                                  "data_format", "input_data_format"],
        "crop_size": dict(size), "do_center_crop": False, "do_convert_rgb": None,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "CLIPImageProcessor",
        "image_seq_length": IMAGE_TOKENS, "image_std": [0.229, 0.224, 0.225],
        "processor_class": "Florence2Processor", "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": size,
        "task_prompts_with_input": TASKS_WITH_INPUT,
        "task_prompts_without_inputs": TASKS_WITHOUT_INPUT,
        "tasks_answer_post_processing_type": POST_PROCESSING,
    }


def model_readme(preset: Preset, seed: int, info: dict, dims: fg.TextDims) -> str:
    return f"""# altimage {preset.name} Florence-2 test model (random weights)

Generated by `models/tools/make_florence2.py --preset {preset.name} --seed {seed}`; do not edit.
Same layout, names and generation behaviour as onnx-community/Florence-2-base-ft, but random
weights: its captions are gibberish by design. See `models/README.md`.

- d_model {dims.d_model}, {dims.encoder_layers}+{dims.decoder_layers} layers, \
{dims.heads} heads, ffn {dims.ffn_dim}
- vocab {dims.vocab_size}: <mask> {info['mask_id']}, added tokens \
{info['first_added_id']}..{info['first_added_id'] + 1023}
- onnx/: vision_encoder, embed_tokens, encoder_model, decoder_model_merged (fp32, opset 17)
"""


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------
def generate(preset: Preset, out: Path, seed: int, tune: fg.Tuning = fg.Tuning(),
             verbose=True) -> dict:
    log = print if verbose else (lambda *a, **k: None)
    t0 = time.time()
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    tok, info = build_tokenizer(preset)
    dims = fg.TextDims(preset.d_model, preset.heads, preset.encoder_layers,
                       preset.decoder_layers, preset.ffn_dim, info["vocab_size"])
    log(f"tokenizer: {info['trained_vocab']} trained BPE entries, vocab_size {dims.vocab_size}, "
        f"<mask> {info['mask_id']}, added tokens {info['first_added_id']}.."
        f"{info['first_added_id'] + 1023}, {len(info['suppressed_ids'])} ids suppressed")
    write_tokenizer_files(tok, info, out)
    write_json(out / "config.json", config_json(preset, dims))
    write_json(out / "generation_config.json", generation_config_json())
    write_json(out / "preprocessor_config.json", preprocessor_config_json())
    (out / "README.md").write_text(model_readme(preset, seed, info, dims))

    W = fg.Weights(seed)
    params = fg.text_weights(W, dims, tune, info["suppressed_ids"])
    sizes = {}
    for name, build in (("embed_tokens", fg.build_embed_tokens),
                        ("encoder_model", fg.build_encoder),
                        ("decoder_model_merged", fg.build_decoder_merged)):
        sizes[name] = save_model(build(params, dims, tune), out / "onnx" / f"{name}.onnx")
    del params

    if isinstance(preset.vision, fg.DavitVision):
        model, built_params = fg.build_davit_vision(W, preset.vision, dims.d_model)
        cost = fg.davit_cost(preset.vision, dims.d_model)
    else:
        model, built_params = fg.build_tiny_vision(W, preset.vision, dims.d_model)
        cost = fg.tiny_vision_cost(preset.vision, dims.d_model)
    sizes["vision_encoder"] = save_model(model, out / "onnx" / "vision_encoder.onnx")
    del model
    assert built_params == cost.params, (built_params, cost.params)

    text = fg.text_cost(dims)
    log("vision encoder (analytic): "
        f"{cost.params:,} params ({cost.params / 1e6:.1f} M), "
        f"{cost.macs:,} MACs per image ({cost.macs / 1e9:.1f} G)")
    for part, (pp, pm) in cost.parts.items():
        log(f"    {part:28s} {pp / 1e6:8.3f} M params {pm / 1e9:8.2f} G MACs")
    for name in ("embed_tokens", "encoder_model", "decoder_model_merged"):
        log(f"{name}: {text[name] / 1e6:.2f} M params")
    for name, n in sizes.items():
        log(f"onnx/{name}.onnx: {n / 1e6:.2f} MB")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"total {total / 1e6:.2f} MB in {out} ({time.time() - t0:.1f} s)")
    return {"info": info, "dims": dims, "vision_cost": cost, "text_params": text,
            "total_bytes": total}


def compare_dirs(a: Path, b: Path) -> list[str]:
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    problems = [f"only in {a}: {f}" for f in sorted(set(files_a) - set(files_b))]
    problems += [f"only in {b}: {f}" for f in sorted(set(files_b) - set(files_a))]
    for f in sorted(set(files_a) & set(files_b)):
        if not filecmp.cmp(a / f, b / f, shallow=False):
            problems.append(f"differs: {f}")
    return problems


def check(preset: Preset, target: Path, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="florence2-check-") as tmp:
        generate(preset, Path(tmp), seed, verbose=False)
        problems = compare_dirs(target, Path(tmp))
    for p in problems:
        print(p)
    print(f"{target}: {'NOT reproducible' if problems else 'byte-identical to a fresh build'}")
    return 1 if problems else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", type=Path, help="model directory to write")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--check", type=Path, metavar="DIR",
                    help="regenerate into a temp dir and compare byte-for-byte with DIR")
    ap.add_argument("--no-selfcheck", action="store_true",
                    help="skip the onnxruntime self-check after writing")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.check:
        return check(preset, args.check, args.seed)
    if not args.out:
        ap.error("--out or --check is required")
    result = generate(preset, args.out, args.seed)
    if args.no_selfcheck:
        return 0
    import selfcheck_florence2 as sc
    if preset.name == "tiny":
        return sc.run_all(args.out, result)
    return sc.run_base(args.out)


if __name__ == "__main__":
    sys.exit(main())
