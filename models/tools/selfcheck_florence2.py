"""Self-check of a generated Florence-2 test model, run by make_florence2.py after writing.

It drives the model through reference_generate.Florence2 (the independent reference loop) and
fails loudly unless the model is a useful fixture:

* the four graphs have the spec's I/O names, types and dims (spec 2, 9.2);
* captions end with EOS at varied lengths, differ per image and per caption prompt, and every
  greedy choice wins by at least MIN_MARGIN (decisive logits);
* batch 3 with right-padded prompts of different lengths gives the batch-1 tokens per row;
* the cached loop equals a no-cache recomputation of the full prefix (use_cache_branch=false);
* feeding the cached-step encoder placeholders back fails (spec P1, 11.7);
* each typical server bug (ignored mask, text-first concat, left padding, trimmed or zeroed
  decoder cache, restarting positions, no n-gram ban) changes the tokens.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageDraw

from reference_generate import Florence2, cut_after_eos

MIN_MARGIN = 1.0  # absolute logit units (logit std is ~1e4, so this is ~1e-4 relative)
MAX_NEW = 64
CAPTION_TASKS = ["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"]


def top_diff(ref: np.ndarray, other: np.ndarray, k: int = 50) -> float:
    """Largest |difference| among the reference's top-k logits: the ones that can decide a
    greedy choice (suppressed tokens sit at -3e5, where one ulp is 0.03)."""
    idx = np.argsort(-ref)[:k]
    return float(np.abs(ref[idx] - other[idx]).max())


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


# ------------------------------------------------------------------------------------------------
# Fixture images (deterministic, drawn here so no binary files are needed)
# ------------------------------------------------------------------------------------------------
def fixture_images() -> list[tuple[str, Image.Image]]:
    y, x = np.mgrid[0:768, 0:768].astype(np.float32)
    arrays = {
        "gradient": np.stack([x / 3, y / 3, 255 - x / 3], -1),
        "checker": np.repeat((((x // 64 + y // 64) % 2) * 255)[..., None], 3, -1),
        "grey": np.full((768, 768, 3), 128.0),
        "noise": np.random.default_rng(0).integers(0, 256, (768, 768, 3)).astype(np.float32),
        "red": np.full((768, 768, 3), [200.0, 30.0, 30.0]),
    }
    images = [(k, Image.fromarray(v.astype(np.uint8))) for k, v in arrays.items()]
    # not 768x768: exercises the resize
    shapes = Image.new("RGB", (640, 480), (245, 245, 240))
    d = ImageDraw.Draw(shapes)
    d.ellipse((60, 60, 300, 300), fill=(30, 90, 200))
    d.rectangle((340, 200, 600, 440), fill=(230, 160, 20))
    images.append(("shapes_640x480", shapes))
    stripes = np.zeros((300, 1000, 3), np.uint8)
    for i in range(10):
        stripes[:, i * 100:(i + 1) * 100] = [(i * 25) % 256, (255 - i * 20) % 256, (i * 60) % 256]
    images.append(("stripes_1000x300", Image.fromarray(stripes)))
    return images


# ------------------------------------------------------------------------------------------------
# Signatures
# ------------------------------------------------------------------------------------------------
def check_signatures(m: Florence2, d_model: int, vocab: int, layers: int, heads: int, head_dim):
    def sig(sess):
        return ({i.name: (i.type, i.shape) for i in sess.get_inputs()},
                [(o.name, o.type, o.shape) for o in sess.get_outputs()])
    ins, outs = sig(m.vision_s)
    expect(ins == {"pixel_values": ("tensor(float)", ["batch_size", 3, 768, 768])}, ins)
    expect(outs[0][0] == "image_features" and outs[0][2][0] == "batch_size"
           and outs[0][2][2] == d_model, outs)
    ins, outs = sig(m.embed_s)
    expect(ins == {"input_ids": ("tensor(int64)", ["batch_size", "sequence_length"])}, ins)
    expect(outs == [("inputs_embeds", "tensor(float)",
                     ["batch_size", "sequence_length", d_model])], outs)
    ins, outs = sig(m.encoder_s)
    expect(set(ins) == {"inputs_embeds", "attention_mask"}, ins)
    expect(ins["attention_mask"][0] == "tensor(int64)", ins)
    expect([o[0] for o in outs] == ["last_hidden_state"], outs)
    ins, outs = sig(m.decoder_s)
    want_in = {"inputs_embeds", "encoder_attention_mask", "encoder_hidden_states",
               "use_cache_branch"}
    want_out = ["logits"]
    for i in range(layers):
        for kind in ("decoder", "encoder"):
            for kv in ("key", "value"):
                want_in.add(f"past_key_values.{i}.{kind}.{kv}")
                want_out.append(f"present.{i}.{kind}.{kv}")
                shape = ins[f"past_key_values.{i}.{kind}.{kv}"][1]
                expect(shape[0] == "batch_size" and shape[1] == heads
                       and shape[3] == head_dim and isinstance(shape[2], str), shape)
    expect(set(ins) == want_in, sorted(set(ins) ^ want_in))
    expect(ins["use_cache_branch"] == ("tensor(bool)", [1]), ins["use_cache_branch"])
    expect([o[0] for o in outs] == want_out, [o[0] for o in outs])
    expect(outs[0][2] == ["batch_size", "decoder_sequence_length", vocab], outs[0])
    # one If node, weights only in the outer graph (shared by both branches)
    dec = onnx.load(str(m.dir / "onnx" / "decoder_model_merged.onnx"))
    expect([n.op_type for n in dec.graph.node].count("If") == 1, "decoder: no single If node")
    if_node = next(n for n in dec.graph.node if n.op_type == "If")
    expect(all(len(a.g.initializer) == 0 for a in if_node.attribute), "branch initializers")
    for name in ("vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged"):
        model = onnx.load(str(m.dir / "onnx" / f"{name}.onnx"), load_external_data=False)
        expect(model.ir_version == 8 and model.opset_import[0].version == 17, name)
    print(f"signatures OK: {layers} decoder layers, H={heads}, Dh={head_dim}, V={vocab}")


# ------------------------------------------------------------------------------------------------
# A loop with switchable server bugs. With no fault it must equal the reference loop.
# ------------------------------------------------------------------------------------------------
FAULTS = ["mask_ignored", "decoder_mask_ignored", "text_first", "left_pad", "trim_cache",
          "zero_past_values", "restart_positions", "no_ngram"]


def faulty_generate(m: Florence2, pixels, prompts, max_new, fault=None) -> list[list[int]]:
    batch = len(prompts)
    ids, mask, hidden = m.encoder_states(pixels, prompts, left_pad=fault == "left_pad",
                                         text_first=fault == "text_first")
    if fault == "mask_ignored":  # recompute the encoder with an all-ones mask
        text = m.embed(ids)
        image = m.vision(pixels)
        ones = np.ones((batch, image.shape[1] + ids.shape[1]), np.int64)
        hidden = m.encode(np.concatenate([image, text], 1), ones)
        mask = ones
    dec_mask = np.ones_like(mask) if fault == "decoder_mask_ignored" else mask
    gen = dict(m.gen)
    if fault == "no_ngram":
        m.gen["no_repeat_ngram_size"] = 0
    try:
        seqs = [[2] for _ in range(batch)]
        max_length = 1 + max_new
        logits, presents = m.decode(m.embed(np.array([[2]] * batch, np.int64)), dec_mask, hidden,
                                    m.empty_past(batch), False)
        enc_past = m.past_from(presents, "encoder")
        past = m.past_from(presents, "decoder")
        while True:
            for r in range(batch):
                seqs[r].append(int(np.argmax(m.process(logits[r, -1], seqs[r], max_length))))
            if all(2 in s[1:] for s in seqs) or len(seqs[0]) >= max_length:
                break
            last = m.embed(np.array([[s[-1]] for s in seqs], np.int64))
            if fault == "restart_positions":  # no cache at all: positions restart at 0
                logits, presents = m.decode(last, dec_mask, hidden, m.empty_past(batch), False)
                continue
            if fault == "trim_cache" and past["past_key_values.0.decoder.key"].shape[2] > 2:
                past = {k: v[:, :, 1:] for k, v in past.items()}
            if fault == "zero_past_values":
                past = {k: (np.zeros_like(v) if k.endswith("value") else v)
                        for k, v in past.items()}
            logits, presents = m.decode(last, dec_mask, hidden, {**past, **enc_past}, True)
            past = m.past_from(presents, "decoder")
    finally:
        m.gen = gen
    return [cut_after_eos(s, 2) for s in seqs]


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------
def run_fixture_set(m: Florence2, images, tasks):
    """Batch-1 runs of every (image, task): tokens, texts, margins, n-gram bans."""
    runs = {}
    for name, img in images:
        px = m.preprocess(img)[None]
        for task in tasks:
            res = m.generate(px, [task], MAX_NEW)
            runs[(name, task)] = {"ids": res.sequences[0], "steps": res.steps[0],
                                  "logits": res.last_logits[0], "px": px[0]}
    return runs


def check_outputs(m: Florence2, runs, images):
    margins = [s.margin for r in runs.values() for s in r["steps"] if np.isfinite(s.margin)]
    bans = sum(s.changed_by_ngram for r in runs.values() for s in r["steps"])
    lengths = []
    for (name, task), r in runs.items():
        ids = r["ids"]
        expect(ids[:2] == [2, 0], f"{name} {task}: does not start with 2, 0: {ids[:4]}")
        if task in CAPTION_TASKS:
            expect(ids[-1] == 2 and len(ids) < MAX_NEW + 1,
                   f"{name} {task}: ran to max_new_tokens without EOS")
            lengths.append(len(ids) - 3)  # content tokens: minus start, <s>, </s>
    for name, _ in images:
        texts = [m.texts(runs[(name, t)]["ids"])["text"] for t in CAPTION_TASKS]
        expect(len(set(texts)) == 3, f"{name}: caption prompts give equal texts")
    for t in CAPTION_TASKS:
        texts = [m.texts(runs[(n, t)]["ids"])["text"] for n, _ in images]
        expect(len(set(texts)) == len(texts), f"{t}: two images give equal texts")
    print(f"fixture set: {len(runs)} runs, {len(margins)} greedy decisions, "
          f"caption lengths {min(lengths)}..{max(lengths)} "
          f"({len(set(lengths))} distinct) content tokens, "
          f"{bans} n-gram bans changed a token")
    expect(len(set(lengths)) >= 8 and min(lengths) <= 10 and max(lengths) >= 25,
           f"caption lengths not varied enough: {sorted(lengths)}")
    expect(bans > 0, "the no-repeat-3-gram ban never mattered")
    min_margin = min(margins)
    print(f"min top1-top2 logit margin: {min_margin:.2f} (threshold {MIN_MARGIN}; "
          f"median {np.median(margins):.0f})")
    expect(min_margin >= MIN_MARGIN, f"min margin {min_margin} < {MIN_MARGIN}")
    return min_margin


def check_batch(m: Florence2, runs, images):
    """Rows of different images and prompt lengths, right-padded, in one batch of 3."""
    combos = [[(images[0][0], "<CAPTION>"), (images[5][0], "<MORE_DETAILED_CAPTION>"),
               (images[3][0], "<OCR>")],
              [(images[6][0], "<DETAILED_CAPTION>"), (images[1][0], "<CAPTION>"),
               (images[2][0], "<MORE_DETAILED_CAPTION>")]]
    max_diff, rows = 0.0, 0
    for combo in combos:
        px = np.stack([runs[c]["px"] for c in combo])
        prompts = [t for _, t in combo]
        lens = {len(m.tokenizer.encode(m.construct_prompt(t)).ids) for t in prompts}
        expect(len(lens) > 1, "batch prompts have equal lengths: no padding exercised")
        res = m.generate(px, prompts, MAX_NEW)
        for r, c in enumerate(combo):
            expect(res.sequences[r] == runs[c]["ids"],
                   f"batch row {c} differs from batch 1:\n{res.sequences[r]}\n{runs[c]['ids']}")
            n = min(len(res.last_logits[r]), len(runs[c]["logits"]))
            for a, b in zip(res.last_logits[r][:n], runs[c]["logits"][:n]):
                max_diff = max(max_diff, top_diff(b, a))
            rows += 1
    print(f"batch 3 (right-padded, mixed prompt lengths) == batch 1 for {rows} rows; "
          f"max |top-50 logit difference| {max_diff:.4f}")
    return max_diff


def check_cache(m: Florence2, runs):
    max_diff = 0.0
    for key in list(runs)[:8]:
        r = runs[key]
        res = m.generate(r["px"][None], [key[1]], MAX_NEW, use_cache=False)
        expect(res.sequences[0] == r["ids"], f"{key}: no-cache recomputation differs")
        for a, b in zip(res.last_logits[0], r["logits"]):
            max_diff = max(max_diff, top_diff(b, a))
    print(f"cached loop == no-cache recomputation (use_cache_branch=false, full prefix) on "
          f"8 runs; max |top-50 logit difference| {max_diff:.4f}")
    return max_diff


def check_branches(m: Florence2, runs):
    key = next(iter(runs))
    _, mask, hidden = m.encoder_states(runs[key]["px"][None], [key[1]])
    emb = m.embed(np.array([[2]], np.int64))
    logits0, pres0 = m.decode(emb, mask, hidden, m.empty_past(1), False)
    # the no-past branch ignores whatever past it is given (spec P12 fallback)
    junk = {k: np.full((1, m.heads, 3, m.head_dim), 7.0, np.float32) for k in m.past_names}
    logits_j, _ = m.decode(emb, mask, hidden, junk, False)
    expect(np.array_equal(logits0, logits_j), "no-past branch reads the past inputs")
    enc = m.past_from(pres0, "encoder")
    expect(all(v.shape == (1, m.heads, hidden.shape[1], m.head_dim) for v in enc.values()),
           "step-0 encoder presents have the wrong shape")
    emb1 = m.embed(np.array([[0]], np.int64))
    _, pres1 = m.decode(emb1, mask, hidden, {**m.past_from(pres0, "decoder"), **enc}, True)
    placeholders = m.past_from(pres1, "encoder")
    expect(all(v.shape == (0, m.heads, 1, m.head_dim) for v in placeholders.values()),
           f"cached-step encoder presents are not [0,H,1,Dh]: "
           f"{[v.shape for v in placeholders.values()]}")
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failures below are intended: keep ORT's log clean
    feeds = {"inputs_embeds": emb1, "encoder_attention_mask": mask,
             "encoder_hidden_states": hidden, "use_cache_branch": np.array([True])}
    try:
        m.decoder_s.run(None, {**feeds, **m.past_from(pres1, "decoder"), **placeholders}, quiet)
    except Exception as e:  # onnxruntime raises its own Fail/RuntimeException
        msg = str(e).replace("\n", " ")
        detail = msg[msg.rfind("Status Message:"):][:120]
        print(f"feeding the cached-step placeholders back fails as it should: ...{detail}")
    else:
        raise CheckFailed("feeding the [0,H,1,Dh] encoder placeholders back did not fail")
    # the cached branch needs real encoder K/V: feeding empty ones there fails as well
    try:
        m.decoder_s.run(None, {**feeds, **m.past_from(pres0, "decoder"),
                               **{k: v[:, :, :0] for k, v in enc.items()}}, quiet)
    except Exception:
        pass
    else:
        raise CheckFailed("cached branch ran with empty encoder K/V")


def check_faults(m: Florence2, runs, images):
    combos = [[(images[0][0], "<CAPTION>"), (images[4][0], "<MORE_DETAILED_CAPTION>"),
               (images[6][0], "<OCR>")],
              [(images[1][0], "<DETAILED_CAPTION>"), (images[5][0], "<CAPTION>"),
               (images[2][0], "<MORE_DETAILED_CAPTION>")]]
    batches = []
    for combo in combos:
        px = np.stack([runs[c]["px"] for c in combo])
        prompts = [t for _, t in combo]
        want = [runs[c]["ids"] for c in combo]
        expect(faulty_generate(m, px, prompts, MAX_NEW) == want,
               "fault-injection loop without a fault differs from the reference")
        width = max(len(m.tokenizer.encode(m.construct_prompt(t)).ids) for t in prompts)
        padded = [len(m.tokenizer.encode(m.construct_prompt(t)).ids) < width for t in prompts]
        batches.append((px, prompts, want, padded))
    print("fault injection (rows whose tokens change / rows that could change):")
    for fault in FAULTS:
        changed, total = 0, 0
        for px, prompts, want, padded in batches:
            got = faulty_generate(m, px, prompts, MAX_NEW, fault)
            for r in range(len(prompts)):
                # padding faults can only affect padded rows
                if fault in ("mask_ignored", "decoder_mask_ignored", "left_pad") \
                        and not padded[r]:
                    continue
                total += 1
                changed += got[r] != want[r]
        print(f"    {fault:22s} {changed}/{total}")
        need = 1 if fault == "no_ngram" else total  # bans matter only in some rows
        expect(changed >= need, f"fault {fault} left {total - changed} rows unchanged")


def run_all(model_dir: Path, result: dict) -> int:
    t0 = time.time()
    m = Florence2(model_dir, keep_logits=True)
    dims = result["dims"]
    try:
        check_signatures(m, dims.d_model, dims.vocab_size, dims.decoder_layers, dims.heads,
                         dims.head_dim)
        images = fixture_images()
        runs = run_fixture_set(m, images, CAPTION_TASKS + ["<OCR>"])
        min_margin = check_outputs(m, runs, images)
        batch_diff = check_batch(m, runs, images)
        cache_diff = check_cache(m, runs)
        noise = max(batch_diff, cache_diff)
        print(f"numerical noise / min margin = {noise / min_margin:.2e}")
        expect(noise * 20 < min_margin, "numerical noise is within 20x of the min margin")
        result["noise"], result["min_margin"] = noise, min_margin
        check_branches(m, runs)
        check_faults(m, runs, images)
    except CheckFailed as e:
        print(f"SELF-CHECK FAILED: {e}")
        return 1
    print("examples:")
    for key in [(images[0][0], t) for t in CAPTION_TASKS] + [(images[5][0], "<CAPTION>")]:
        ids = runs[key]["ids"]
        print(f"    {key[0]} {key[1]}: {ids}\n        -> {m.texts(ids)['text']!r}")
    print(f"self-check passed ({time.time() - t0:.1f} s)")
    return 0


def run_base(model_dir: Path) -> int:
    """Base-shaped model: it loads and runs one image end to end; prints the time per stage."""
    t0 = time.time()
    m = Florence2(model_dir)
    print(f"loaded 4 sessions in {time.time() - t0:.1f} s")
    name, img = fixture_images()[0]
    px = m.preprocess(img)[None]
    t = time.time()
    feats = m.vision(px)
    t_vision = time.time() - t
    t = time.time()
    feats = m.vision(px)
    t_vision2 = time.time() - t
    expect(feats.shape == (1, 577, 768), feats.shape)
    t = time.time()
    res = m.generate(px, ["<CAPTION>"], 20)
    t_total = time.time() - t
    ids = res.sequences[0]
    print(f"vision_encoder: {t_vision:.2f} s (first), {t_vision2:.2f} s (second) per image")
    print(f"full <CAPTION> generate (vision + encoder + {len(ids) - 1} decoder steps): "
          f"{t_total:.2f} s")
    print(f"tokens {ids}\n  -> {m.texts(ids)['text']!r}")
    return 0
