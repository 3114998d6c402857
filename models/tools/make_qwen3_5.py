#!/usr/bin/env python3
"""Generates altimage's own Qwen3.5 test model: random weights in the onnx-community
`Qwen3.5-*-ONNX-OPT` layout (spec qwen3_5-onnx.md, section 3).

    python make_qwen3_5.py --preset tiny --out ../tiny-qwen3_5            # the committed fixture
    python make_qwen3_5.py --preset base --out ../base-shaped-qwen3_5     # 0.8B-shaped, ~4.5 GB
    python make_qwen3_5.py --check ../tiny-qwen3_5                        # byte-for-byte check
    python make_qwen3_5.py --preset tiny --layer-types full,linear,linear,linear \\
        --kv-heads 2 --out /tmp/q                                         # other shapes

Same preset + seed + shape options => byte-identical files (numpy PCG64 streams per tensor seeded
by (seed, name), a deterministic tokenizer training run, derived constants on a 2^-16 grid, no
timestamps, fixed producer strings). Pins: models/tools/requirements.txt. After writing, the tiny
preset runs selfcheck_qwen3_5.py (graphs in ONNX Runtime, states, determinism, decisiveness).
"""
from __future__ import annotations

import argparse
import dataclasses
import filecmp
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models  # noqa: E402
from tokenizers import normalizers, pre_tokenizers, trainers  # noqa: E402

import qwen3_5_graphs as qg  # noqa: E402
from florence2_graphs import Weights  # noqa: E402
from onnx_builder import ExternalData, check_saved, save_model  # noqa: E402
from qwen3_5_corpus import corpus  # noqa: E402

DEFAULT_SEED = 20260305
TRANSFORMERS_VERSION = "5.2.0"  # a constant written into the JSON files, not a probe
LINEAR, FULL = "linear_attention", "full_attention"

# Qwen2 pre-tokenizer regex (Qwen2/2.5/3 tokenizer.json), spec section 3.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Added tokens in the Qwen order (<|endoftext|> first; vision_start = endoftext + 9 and
# image_pad = endoftext + 12, as in the real vocabulary). special=False ones are ordinary added
# tokens (matched whole, kept by skip_special_tokens).
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False),
    ("</tool_response>", False), ("<think>", False), ("</think>", False),
]


@dataclass(frozen=True)
class Preset:
    name: str
    text: dict  # TextDims fields except vocab_size and layer_types
    layer_types: tuple
    vision: qg.VisionDims
    bpe_vocab: int  # trained BPE entries (bytes + merges)
    first_added_id: int | None  # pad the vocab with unreachable fillers up to this id
    vocab_size: int | None  # embedding rows; None: tokenizer size rounded up to 64
    max_pixels: int = 16777216
    min_pixels: int = 65536


PRESETS = {
    "tiny": Preset(
        "tiny",
        text=dict(hidden=64, intermediate=128, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, linear_num_key_heads=2, linear_key_head_dim=16,
                  linear_num_value_heads=2, linear_value_head_dim=16, linear_conv_kernel_dim=4,
                  partial_rotary_factor=0.5, mrope_section=(3, 3, 2), rope_theta=1000.0),
        layer_types=(LINEAR, LINEAR, LINEAR, FULL),
        vision=qg.VisionDims(hidden=32, depth=1, heads=2, intermediate=64, out_hidden=64),
        bpe_vocab=1900, first_added_id=None, vocab_size=None),
    # Qwen3.5-0.8B shapes (spec 2.3): 24 layers (3 linear : 1 full), KV heads 2 x 256, linear
    # heads 16 x 128 (conv 6144), vocabulary 248320 with the added tokens at their real ids.
    # Vision: a ViT of the 0.8B's width and depth (768 x 12, MLP 3072) with the real contract.
    "base": Preset(
        "base",
        text=dict(hidden=1024, intermediate=3584, num_attention_heads=8, num_key_value_heads=2,
                  head_dim=256, linear_num_key_heads=16, linear_key_head_dim=128,
                  linear_num_value_heads=16, linear_value_head_dim=128, linear_conv_kernel_dim=4,
                  partial_rotary_factor=0.25, mrope_section=(11, 11, 10), rope_theta=1.0e7),
        layer_types=(LINEAR, LINEAR, LINEAR, FULL) * 6,
        vision=qg.VisionDims(hidden=768, depth=12, heads=12, intermediate=3072,
                             out_hidden=1024),
        bpe_vocab=1900, first_added_id=248044, vocab_size=248320),
}


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------
def pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])


def train_bpe(target_vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=target_vocab, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


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


def generable(token: str, byte_of: dict) -> bool:
    """A token the fixture may produce: complete UTF-8 on its own (so any sequence decodes the
    same everywhere), no control characters, not only whitespace."""
    raw = bytes(byte_of[ch] for ch in token)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not text.isspace() and all(ch >= " " and ch != "\x7f" for ch in text)


def build_tokenizer(preset: Preset) -> tuple[Tokenizer, dict]:
    spec = json.loads(train_bpe(preset.bpe_vocab).to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    trained = len(vocab)
    if preset.first_added_id is not None:
        # Unreachable fillers (no merge produces them) so the added tokens get the real ids.
        for i in range(preset.first_added_id - trained):
            vocab[f"<altimage_unused_{i}>"] = trained + i
    spec["model"]["unk_token"] = None
    spec["model"]["byte_fallback"] = False
    spec["model"]["ignore_merges"] = False
    # as in Qwen's tokenizer.json (the ByteLevel decoder ignores these flags)
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                       "use_regex": False}
    tok = Tokenizer.from_str(json.dumps(spec))
    for content, special in ADDED_TOKENS:
        t = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                       special=special)
        (tok.add_special_tokens if special else tok.add_tokens)([t])
    ids = {content: tok.token_to_id(content) for content, _ in ADDED_TOKENS}
    first = ids["<|endoftext|>"]
    assert [ids[c] for c, _ in ADDED_TOKENS] == list(range(first, first + len(ADDED_TOKENS)))
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    gen = [i for t, i in sorted(vocab.items(), key=lambda kv: kv[1])
           if i < trained and generable(t, byte_of)]
    size = tok.get_vocab_size(with_added_tokens=True)
    rows = preset.vocab_size or (size + 63) // 64 * 64
    assert rows >= size
    info = {"trained_vocab": trained, "tokenizer_size": size, "vocab_size": rows, "ids": ids,
            "generable": gen}
    return tok, info


def write_tokenizer_files(tok: Tokenizer, info: dict, out: Path, chat_template: str):
    tok.save(str(out / "tokenizer.json"), pretty=False)
    ids = info["ids"]
    decoder = {str(ids[c]): {"content": c, "lstrip": False, "normalized": False,
                             "rstrip": False, "single_word": False, "special": s}
               for c, s in ADDED_TOKENS}
    write_json(out / "tokenizer_config.json", {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [c for c, s in ADDED_TOKENS if s and c not in
                                      ("<|endoftext|>",)],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 262144,
        "pad_token": "<|endoftext|>",
        "processor_class": "Qwen3VLProcessor",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })


# A Qwen3.5-style chat template (system/user/assistant, image and video parts, the thinking
# switch). transformers.js reads it from tokenizer_config.json (spec P7); chat_template.jinja
# carries the same text, as in the onnx-community layout. For a system + user(image, text)
# conversation with enable_thinking=false it renders exactly the PROMPTS.md frame.
CHAT_TEMPLATE = """\
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is none or content is undefined -%}
        {{- '' -}}
    {%- else -%}
        {%- for item in content -%}
            {%- if item.type == 'image' -%}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
            {%- elif item.type == 'video' -%}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
            {%- elif item.type == 'text' -%}
                {{- item.text -}}
            {%- else -%}
                {{- raise_exception('Unexpected item type in content.') -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if not messages -%}
    {{- raise_exception('No messages provided.') -}}
{%- endif -%}
{%- for message in messages -%}
    {%- set content = render_content(message.content) | trim -%}
    {%- if message.role == 'system' -%}
        {%- if not loop.first -%}
            {{- raise_exception('System message must be at the beginning.') -}}
        {%- endif -%}
        {{- '<|im_start|>system\\n' + content + '<|im_end|>\\n' -}}
    {%- elif message.role == 'user' -%}
        {{- '<|im_start|>user\\n' + content + '<|im_end|>\\n' -}}
    {%- elif message.role == 'assistant' -%}
        {%- if '</think>' in content -%}
            {%- set content = content.split('</think>')[-1] | trim -%}
        {%- endif -%}
        {{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' -}}
    {%- else -%}
        {{- raise_exception('Unexpected message role.') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
    {%- if enable_thinking is defined and enable_thinking is false -%}
        {{- '<think>\\n\\n</think>\\n\\n' -}}
    {%- else -%}
        {{- '<think>\\n' -}}
    {%- endif -%}
{%- endif -%}
"""


# ------------------------------------------------------------------------------------------------
# Root JSON files
# ------------------------------------------------------------------------------------------------
def write_json(path: Path, obj, indent=2):
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def text_dims(preset: Preset, info: dict, layer_types=None, kv_heads=None) -> qg.TextDims:
    fields = dict(preset.text)
    if kv_heads:
        fields["num_key_value_heads"] = kv_heads
    return qg.TextDims(layer_types=tuple(layer_types or preset.layer_types),
                       vocab_size=info["vocab_size"], **fields)


def full_attention_interval(layer_types) -> int | None:
    """k when exactly every k-th layer is full attention (HF's layout rule), else None."""
    for k in range(1, len(layer_types) + 1):
        if all((t == FULL) == ((i + 1) % k == 0) for i, t in enumerate(layer_types)):
            return k
    return None


def config_json(preset: Preset, dims: qg.TextDims, info: dict) -> dict:
    ids = info["ids"]
    v = preset.vision
    text = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_output_gate": True,
        "bos_token_id": None,
        "dtype": "float32",
        "eos_token_id": ids["<|endoftext|>"],
        "full_attention_interval": full_attention_interval(dims.layer_types),
        "head_dim": dims.head_dim,
        "hidden_act": "silu",
        "hidden_size": dims.hidden,
        "initializer_range": 0.02,
        "intermediate_size": dims.intermediate,
        "layer_types": list(dims.layer_types),
        "linear_conv_kernel_dim": dims.linear_conv_kernel_dim,
        "linear_key_head_dim": dims.linear_key_head_dim,
        "linear_num_key_heads": dims.linear_num_key_heads,
        "linear_num_value_heads": dims.linear_num_value_heads,
        "linear_value_head_dim": dims.linear_value_head_dim,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_5_text",
        "num_attention_heads": dims.num_attention_heads,
        "num_hidden_layers": dims.layers,
        "num_key_value_heads": dims.num_key_value_heads,
        "pad_token_id": None,
        "rms_norm_eps": dims.rms_norm_eps,
        "rope_parameters": {
            "mrope_interleaved": True,
            "mrope_section": list(dims.mrope_section),
            "partial_rotary_factor": dims.partial_rotary_factor,
            "rope_theta": dims.rope_theta,
            "rope_type": "default",
        },
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": dims.vocab_size,
    }
    vision = {
        "deepstack_visual_indexes": [],
        "depth": v.depth,
        "hidden_act": "gelu",  # exact (erf) GELU, as the graph computes it
        "hidden_size": v.hidden,
        "in_channels": v.in_channels,
        "intermediate_size": v.intermediate,
        "model_type": "qwen3_5_vision",
        "num_heads": v.heads,
        "out_hidden_size": v.out_hidden,
        "patch_size": v.patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
    }
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "image_token_id": ids["<|image_pad|>"],
        "model_type": "qwen3_5",
        "text_config": text,
        "tie_word_embeddings": False,
        "transformers.js_config": {"use_external_data_format": True},
        "transformers_version": TRANSFORMERS_VERSION,
        "video_token_id": ids["<|video_pad|>"],
        "vision_config": vision,
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
    }


def generation_config_json(info: dict) -> dict:
    # Sampling defaults as Qwen releases ship them: a server must force greedy (do_sample
    # false) itself. repetition_penalty != 1 is applied by transformers.js even when greedy
    # (spec 2.11), over every id of the row, prompt and image pads included.
    ids = info["ids"]
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "repetition_penalty": 1.05,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def preprocessor_config_json(preset: Preset) -> dict:
    # Every key stated (spec 2.8 server rules): transformers.js does not normalise and resizes
    # bilinearly when do_normalize / resample are missing; HF Python defaults differ.
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "image_std": [0.5, 0.5, 0.5],
        "merge_size": preset.vision.spatial_merge_size,
        "patch_size": preset.vision.patch_size,
        "processor_class": "Qwen3VLProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": preset.max_pixels, "shortest_edge": preset.min_pixels},
        "temporal_patch_size": preset.vision.temporal_patch_size,
    }


def processor_config_json() -> dict:
    return {"processor_class": "Qwen3VLProcessor"}


def model_readme(preset: Preset, seed: int, info: dict, dims: qg.TextDims, sizes: dict,
                 extra_args: str) -> str:
    ids = info["ids"]
    v = preset.vision
    order = ", ".join(t.split("_")[0] for t in dims.layer_types)
    rows = [
        ("text", f"hidden {dims.hidden}, {dims.layers} layers ({order}), SwiGLU MLP "
                 f"{dims.intermediate}, RMSNorm"),
        ("linear layers", f"Gated DeltaNet: {dims.linear_num_key_heads} key heads x "
                          f"{dims.linear_key_head_dim}, {dims.linear_num_value_heads} value "
                          f"heads x {dims.linear_value_head_dim}; conv {dims.conv_dim} "
                          f"channels, kernel {dims.linear_conv_kernel_dim}"),
        ("full layers", f"{dims.num_attention_heads} query / {dims.num_key_value_heads} KV heads "
                        f"x {dims.head_dim}, output gate; rotary {dims.rotary_dim} dims, "
                        f"interleaved M-RoPE section {list(dims.mrope_section)}, "
                        f"theta {dims.rope_theta:g}"),
        ("vision", f"ViT {v.hidden} wide, {v.depth} block(s), {v.heads} heads, MLP "
                   f"{v.intermediate}; patch {v.patch_size}, temporal {v.temporal_patch_size}, "
                   f"merge {v.spatial_merge_size}x{v.spatial_merge_size} -> {v.out_hidden}"),
        ("vocabulary", f"{info['tokenizer_size']} tokens: {info['trained_vocab']} trained "
                       f"byte-level BPE entries, then the added tokens; embedding and logits "
                       f"width {dims.vocab_size}"),
    ]
    token_ids = ", ".join(f"`{t}` {ids[t]}" for t in (
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
        "<|image_pad|>", "<|video_pad|>", "<think>", "</think>"))
    rows += [(f"`onnx/{n}.onnx` + `.onnx_data`", f"{b / 1e6:.2f} MB")
             for n, b in sizes.items()]
    table = "\n".join(f"| {k} | {val} |" for k, val in rows)
    return f"""# altimage {preset.name} Qwen3.5 test model (random weights)

Generated by `models/tools/make_qwen3_5.py --preset {preset.name} --seed {seed}{extra_args}`;
do not edit. Same layout, file names, graph I/O and generation behaviour as
onnx-community/Qwen3.5-0.8B-ONNX-OPT (fused `com.microsoft` `LinearAttention` and
`CausalConvWithState`, `num_logits_to_keep`, weights in `*.onnx_data`), but random weights: its
text is meaningless by design. It exists so that the server's Qwen3.5 path can be tested token
for token against transformers.js 4.3.1 and tests/reference/qwen3_5_reference.py.
See models/README.md.

| | |
| --- | --- |
{table}

Token ids (find them by content; they are not the real vocabulary's): {token_ids}.
"""


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------
def save_graph(build, out: Path, name: str, *args) -> int:
    onnx_path = out / "onnx" / f"{name}.onnx"
    ext = ExternalData(out / "onnx" / f"{name}.onnx_data")
    try:
        model = build(*args, external=ext)
    finally:
        ext.close()
    n = save_model(model, onnx_path)
    del model
    check_saved(onnx_path)
    return n + ext.offset


def generate(preset: Preset, out: Path, seed: int, tune: qg.Tuning = qg.Tuning(),
             layer_types=None, kv_heads=None, verbose=True) -> dict:
    log = print if verbose else (lambda *a, **k: None)
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx").mkdir(exist_ok=True)
    tok, info = build_tokenizer(preset)
    dims = text_dims(preset, info, layer_types, kv_heads)
    ids = info["ids"]
    log(f"tokenizer: {info['trained_vocab']} trained BPE entries, {info['tokenizer_size']} "
        f"tokens, embedding rows {dims.vocab_size}, {len(info['generable'])} generable; "
        f"<|endoftext|> {ids['<|endoftext|>']}, <|im_end|> {ids['<|im_end|>']}, "
        f"<|image_pad|> {ids['<|image_pad|>']}")
    write_tokenizer_files(tok, info, out, CHAT_TEMPLATE)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(out / "config.json", config_json(preset, dims, info))
    write_json(out / "generation_config.json", generation_config_json(info))
    write_json(out / "preprocessor_config.json", preprocessor_config_json(preset))
    write_json(out / "processor_config.json", processor_config_json())

    vocab = qg.Vocab(size=dims.vocab_size, generable=tuple(info["generable"]),
                     special=tuple(ids.values()), eos=ids["<|im_end|>"])
    W = Weights(seed)
    p = qg.text_weights(W, dims, vocab, tune)
    sizes = {"embed_tokens": save_graph(qg.build_embed_tokens, out, "embed_tokens", p, dims)}
    del p["embed"]  # the decoder reads only its own output table
    sizes["decoder_model_merged"] = save_graph(qg.build_decoder, out, "decoder_model_merged", p,
                                               dims, tune)
    del p
    vp = qg.vision_weights(W, preset.vision, tune)
    sizes["vision_encoder"] = save_graph(qg.build_vision, out, "vision_encoder", vp,
                                         preset.vision)
    del vp
    extra = ""
    if layer_types:
        extra += " --layer-types " + ",".join(t.split("_")[0] for t in dims.layer_types)
    if kv_heads:
        extra += f" --kv-heads {kv_heads}"
    (out / "README.md").write_text(model_readme(preset, seed, info, dims, sizes, extra))

    params = qg.text_params(dims)
    vparams, vmacs = qg.vision_cost(preset.vision, 1024)
    log(f"text: embed_tokens {params['embed_tokens'] / 1e6:.2f} M params, decoder "
        f"{params['decoder_model_merged'] / 1e6:.2f} M params (incl. the output table)")
    log(f"vision: {vparams / 1e6:.2f} M params, {vmacs / 1e9:.2f} G MACs for a 512x512 image "
        f"(1024 patches, 256 tokens)")
    for name, n in sizes.items():
        log(f"onnx/{name}.onnx + data: {n / 1e6:.2f} MB")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"total {total / 1e6:.2f} MB in {out} ({time.time() - t0:.1f} s)")
    return {"info": info, "dims": dims, "vocab": vocab, "sizes": sizes, "total_bytes": total}


def compare_dirs(a: Path, b: Path) -> list[str]:
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    problems = [f"only in {a}: {f}" for f in sorted(set(files_a) - set(files_b))]
    problems += [f"only in {b}: {f}" for f in sorted(set(files_b) - set(files_a))]
    for f in sorted(set(files_a) & set(files_b)):
        if not filecmp.cmp(a / f, b / f, shallow=False):
            problems.append(f"differs: {f}")
    return problems


def check(preset: Preset, target: Path, seed: int, **shape) -> int:
    with tempfile.TemporaryDirectory(prefix="qwen3_5-check-") as tmp:
        generate(preset, Path(tmp), seed, verbose=False, **shape)
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
    ap.add_argument("--layer-types", help="comma-separated linear/full, e.g. full,linear,linear")
    ap.add_argument("--kv-heads", type=int, help="full-attention KV heads (divides q heads)")
    ap.add_argument("--no-selfcheck", action="store_true",
                    help="skip the onnxruntime self-check after writing")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    shape = {}
    if args.layer_types:
        shape["layer_types"] = tuple({"linear": LINEAR, "full": FULL}[s.strip()]
                                     for s in args.layer_types.split(","))
    if args.kv_heads:
        shape["kv_heads"] = args.kv_heads
    if args.check:
        return check(preset, args.check, args.seed, **shape)
    if not args.out:
        ap.error("--out or --check is required")
    result = generate(preset, args.out, args.seed, **shape)
    if args.no_selfcheck:
        return 0
    import selfcheck_qwen3_5 as sc
    if preset.name == "tiny":
        return sc.run_all(args.out, result, strict=not shape)
    return sc.run_base(args.out)


if __name__ == "__main__":
    sys.exit(main())
