"""The four Florence-2 graphs (onnx-community layout, spec section 2) with random weights.

Architecture: a pre-LN BART (mBART-style: layernorm_embedding, pre-LN layers, final layer_norm)
with learned positions (offset 2), real multi-head attention, GELU FFNs and an lm_head tied to
the token-embedding table plus `final_logits_bias`. Vision: a cheap patchify tower (tiny) or a
DaViT-base-shaped tower (base).

Random weights alone make a poor test fixture: 577 image rows drown a few prompt/padding rows,
every token wins by a hair, and captions never end. A few deliberate structures fix that; each is
described where it is built:

* TEXT FLAG (`FLAG` channel): text rows carry a constant in one residual channel, image rows carry
  zero, and every attention head reads it through one dedicated query/key dim. Half the heads
  prefer text keys, half prefer image keys. So the prompt and any unmasked padding row weigh as
  much as the whole image in "text" heads (a mask bug changes tokens), while "image" heads keep
  the caption image-dependent.
* DECISIVE LOGITS: the final LayerNorm's gain scales logits to a std of `logit_std`, and tokens a
  caption should never contain are pushed far down by `final_logits_bias`.
* EOS CLOCK: the EOS logit gets `logit_std * (eos_slope * n - theta)`, where n is the number of
  decoder tokens so far (from the past length, so a trimmed cache shifts it) and theta depends on
  a masked mean of the encoder output (image + prompt). Captions end at varied lengths.
* NO HUBS, NO SELF-REPETITION: nothing adds the same vector to every row (no v/out biases, the
  GELU mean is cancelled, the flag channel is read only by the flag dims), and the decoder keeps
  the input token out of its residual (a tied lm_head would pick it again); "local" self-attention
  heads carry it instead, rotated.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from onnx_builder import BOOL, FLOAT, INT64, Graph

FLAG = 0  # residual channel that marks text rows
MASKED = -1e9  # additive attention bias of a masked key: exp() underflows to exactly 0
POS_OFFSET = 2  # BART's learned positional embedding starts at index 2
EOS_ID = 2


# ------------------------------------------------------------------------------------------------
# Dimensions and knobs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDims:
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    vocab_size: int
    max_positions: int = 1024

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


@dataclass(frozen=True)
class Tuning:
    """Knobs that make random weights a useful fixture (see the module docstring)."""
    embed_std: float = 1.0
    pos_std: float = 0.7
    bias_std: float = 0.1
    flag_value: float = 3.0  # channel FLAG of every token embedding
    flag_query: float = 2.5  # query bias on each head's flag dim; x LN'd flag (~2) = bonus
    attn_sharpness: float = 2.0  # std of the content part of attention logits
    cross_sharpness: float = 3.0  # sharper cross-attention: fewer, more image-specific rows
    cross_out_gain: float = 1.5  # weight of image/prompt information in the decoder residual
    ffn_gain: float = 1.4
    decoder_ffn_gain: float = 2.5  # the FFN "hashes" token, position and context per step
    decoder_embed_gain: float = 0.02  # input token barely in the residual: no self-repetition
    logit_std: float = 1.0e4
    suppress: float = 30.0  # final_logits_bias of never-wanted tokens, in units of logit_std
    eos_slope: float = 0.4  # EOS bonus per decoder token, in units of logit_std
    # theta = theta0 + theta1 * tanh(gain * LN(masked mean of encoder rows) . w + centre);
    # gain/centre were calibrated on the default seed so tanh's argument is roughly N(0, 1).
    eos_theta0: float = 6.0
    eos_theta1: float = 6.0
    eos_gain: float = 2.0
    eos_centre: float = -1.1


@dataclass(frozen=True)
class TinyVision:
    channels: int = 24  # patch features before the projection
    patch: int = 32  # 768 / 32 = 24 -> 576 patch tokens + 1 pooled token
    image_size: int = 768
    pos_table: int = 50  # learned 2-D position table rows (Florence: 50), sliced to the grid


@dataclass(frozen=True)
class DavitVision:
    """DaViT-base as in Florence-2-base (spec section 6)."""
    dims: tuple = (128, 256, 512, 1024)
    depths: tuple = (1, 1, 9, 1)
    heads: tuple = (4, 8, 16, 32)  # window-attention heads and channel groups (head dim 32)
    window: int = 12
    stem_kernel: int = 7
    stem_stride: int = 4
    mlp_ratio: int = 4
    image_size: int = 768
    pos_table: int = 50

    def resolutions(self):
        r = self.image_size // self.stem_stride
        return [r >> i for i in range(len(self.dims))]


# ------------------------------------------------------------------------------------------------
# Random weights
# ------------------------------------------------------------------------------------------------
class Weights:
    """Named random tensors. Each tensor has its own RNG stream seeded by (seed, name), so its
    values do not depend on which graph asks first or in which order."""

    def __init__(self, seed: int):
        self.seed = seed

    def rng(self, name: str) -> np.random.Generator:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, key])

    def normal(self, name: str, shape, std: float) -> np.ndarray:
        return self.rng(name).standard_normal(shape, dtype=np.float32) * np.float32(std)

    def linear(self, name: str, d_in: int, d_out: int, gain=1.0, bias_std=0.1):
        """[d_in, d_out] weight (x @ W) with unit-ish output for unit-ish input."""
        w = self.normal(name + ".weight", (d_in, d_out), gain / math.sqrt(d_in))
        b = self.normal(name + ".bias", (d_out,), bias_std)
        return w, b


def layer_norm_params(d: int, gain: float = 1.0, zero_flag: bool = False):
    gamma = np.full((d,), gain, np.float32)
    beta = np.zeros((d,), np.float32)
    if zero_flag:
        gamma[FLAG] = 0.0
    return gamma, beta


# ------------------------------------------------------------------------------------------------
# Text-model weights (shared by embed_tokens, encoder_model and decoder_model_merged)
# ------------------------------------------------------------------------------------------------
def head_signs(heads: int):
    """+1: the head prefers text keys; -1: it prefers image keys. Alternating halves."""
    return [1.0 if h < (heads + 1) // 2 else -1.0 for h in range(heads)]


def attention_weights(W: Weights, name: str, dims: TextDims, tune: Tuning, p: dict,
                      sharpness: float, out_gain: float = 1.0, local_heads: bool = False):
    """q/k/v/out projections of one multi-head attention, with the text-flag dim per head.
    v and out have no bias: a bias there is a constant vector added to every row, which pushes
    every step towards the same few "hub" tokens.

    local_heads (decoder self-attention): in the "text" half of the heads k = q, so a token
    mostly attends to itself and the step's own token and position reach the residual through
    a random rotation (v, out) - not as its own embedding, which the tied lm_head would
    favour. The other half attends over the whole history, so the decoder cache matters."""
    D, Dh = dims.d_model, dims.head_dim
    scale = sharpness / math.sqrt(Dh)  # BART scales q by Dh^-0.5; we also sharpen
    wq, bq = W.linear(name + ".q_proj", D, D, bias_std=tune.bias_std)
    wk, bk = W.linear(name + ".k_proj", D, D, bias_std=tune.bias_std)
    wv, bv = W.linear(name + ".v_proj", D, D, bias_std=0.0)
    wo, bo = W.linear(name + ".out_proj", D, D, gain=out_gain, bias_std=0.0)
    for h, sign in enumerate(head_signs(dims.heads)):
        if local_heads and sign > 0:
            cols = slice(h * Dh, (h + 1) * Dh)
            wk[:, cols], bk[cols] = wq[:, cols], bq[cols]
    # Only the flag dims read the flag channel: elsewhere it would be a constant shared by all
    # text rows, i.e. another "hub" vector.
    wq[FLAG], wk[FLAG], wv[FLAG] = 0.0, 0.0, 0.0
    wq, bq = wq * np.float32(scale), bq * np.float32(scale)
    for h, sign in enumerate(head_signs(dims.heads)):
        c = h * Dh  # this head's flag dim: q is a constant, k reads the LN'd flag channel
        wq[:, c], bq[c] = 0.0, sign * tune.flag_query
        wk[:, c], bk[c] = 0.0, 0.0
        wk[FLAG, c] = 1.0
    wo[:, FLAG] = 0.0  # sublayers never write the flag channel
    for part, (w, b) in dict(q_proj=(wq, bq), k_proj=(wk, bk), v_proj=(wv, bv),
                             out_proj=(wo, bo)).items():
        p[f"{name}.{part}.weight"], p[f"{name}.{part}.bias"] = w, b


def on_grid(x, bits: int = 16) -> np.ndarray:
    """Rounds derived (not drawn) values to a 2^-bits grid: a last-bit difference between
    machines in how they were computed cannot then change the written bytes."""
    scale = float(2 ** bits)
    return (np.round(np.asarray(x, np.float64) * scale) / scale).astype(np.float32)


def mean_gelu(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """E[gelu(X)] for X ~ N(mu, sigma^2), i.e. E[X Phi(X)], rounded to a 2^-16 grid so that
    last-bit differences between libm builds cannot change the written bytes."""
    out = []
    for m, sg in zip(mu.tolist(), sigma.tolist()):
        s = math.sqrt(1.0 + sg * sg)
        z = m / s
        v = m * 0.5 * (1.0 + math.erf(z / math.sqrt(2.0))) \
            + sg * sg / s * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        out.append(round(v * 65536.0) / 65536.0)
    return np.asarray(out, np.float64)


def ffn_weights(W: Weights, name: str, dims: TextDims, tune: Tuning, p: dict, gain: float):
    w1, b1 = W.linear(name + ".fc1", dims.d_model, dims.ffn_dim, bias_std=tune.bias_std)
    w1[FLAG] = 0.0
    w2, _ = W.linear(name + ".fc2", dims.ffn_dim, dims.d_model, gain=gain, bias_std=0.0)
    # GELU outputs have a positive mean; cancel its image through fc2 (for unit-variance
    # LayerNorm'd inputs) so the FFN adds no constant "hub" vector to every row.
    sigma = np.sqrt((w1.astype(np.float64) ** 2).sum(axis=0))
    mean = mean_gelu(b1.astype(np.float64), sigma)
    # row-by-row sums, not BLAS: BLAS kernels differ between CPUs, the bytes must not
    b2 = on_grid(-(mean[:, None] * w2.astype(np.float64)).sum(axis=0))
    w2[:, FLAG], b2[FLAG] = 0.0, 0.0
    p[name + ".fc1.weight"], p[name + ".fc1.bias"] = w1, b1
    p[name + ".fc2.weight"], p[name + ".fc2.bias"] = w2, b2


def ln_weights(name: str, d: int, p: dict, gain=1.0, zero_flag=False):
    p[name + ".weight"], p[name + ".bias"] = layer_norm_params(d, gain, zero_flag)


def embedding_table(W: Weights, dims: TextDims, tune: Tuning) -> np.ndarray:
    table = W.normal("model.shared.weight", (dims.vocab_size, dims.d_model), tune.embed_std)
    table[:, FLAG] = tune.flag_value  # every token row is a text row
    return table


def text_weights(W: Weights, dims: TextDims, tune: Tuning, suppressed_ids) -> dict:
    D = dims.d_model
    p: dict[str, np.ndarray] = {}
    table = embedding_table(W, dims, tune)
    p["model.shared.weight"] = table
    for side, layers in (("encoder", dims.encoder_layers), ("decoder", dims.decoder_layers)):
        pos = W.normal(f"model.{side}.embed_positions.weight",
                       (dims.max_positions + POS_OFFSET, D), tune.pos_std)
        pos[:, FLAG] = 0.0
        p[f"model.{side}.embed_positions.weight"] = pos
        gain = 1.0 if side == "encoder" else tune.decoder_embed_gain
        ln_weights(f"model.{side}.layernorm_embedding", D, p, gain=gain)
        for i in range(layers):
            pre = f"model.{side}.layers.{i}"
            attention_weights(W, pre + ".self_attn", dims, tune, p, tune.attn_sharpness,
                              local_heads=side == "decoder")
            ln_weights(pre + ".self_attn_layer_norm", D, p)
            if side == "decoder":
                attention_weights(W, pre + ".encoder_attn", dims, tune, p,
                                  tune.cross_sharpness, tune.cross_out_gain)
                ln_weights(pre + ".encoder_attn_layer_norm", D, p)
            ffn_weights(W, pre, dims, tune, p,
                        tune.ffn_gain if side == "encoder" else tune.decoder_ffn_gain)
            ln_weights(pre + ".final_layer_norm", D, p)
    ln_weights("model.encoder.layer_norm", D, p)
    # Decisive logits: the final LayerNorm's gain sets the logit std (the flag channel, equal in
    # every table row, is dropped so it adds no common offset).
    logit_gain = tune.logit_std / (math.sqrt(D - 1) * tune.embed_std)
    ln_weights("model.decoder.layer_norm", D, p, gain=logit_gain, zero_flag=True)
    p["lm_head.weight"] = np.ascontiguousarray(table.T)  # tied to the embedding table
    bias = np.zeros((dims.vocab_size,), np.float32)
    bias[list(suppressed_ids)] = -tune.suppress * tune.logit_std
    p["final_logits_bias"] = bias
    w_clock = W.normal("altimage.eos_clock.weight", (D, 1), 1.0 / math.sqrt(D))
    w_clock[FLAG] = 0.0
    p["altimage.eos_clock.weight"] = w_clock
    onehot = np.zeros((dims.vocab_size,), np.float32)
    onehot[EOS_ID] = 1.0
    p["altimage.eos_clock.onehot"] = onehot
    return p


def gelu(g: Graph, x: str) -> str:
    """Exact (erf) GELU in the form torch exports, x * (1 + erf(x / sqrt 2)) * 0.5: opset 17
    has no Gelu op, and ORT's GeluFusion recognises this form (not a Mul by 1/sqrt 2)."""
    inner = g.Add(g.Erf(g.Div(x, g.const(math.sqrt(2.0)))), g.const(1.0))
    return g.Mul(g.Mul(x, inner), g.const(0.5))


# ------------------------------------------------------------------------------------------------
# Graph pieces shared by the text graphs
# ------------------------------------------------------------------------------------------------
class TextBlocks:
    """Builds BART pieces into a Graph, reading weights by name from `p`."""

    def __init__(self, g: Graph, p: dict, dims: TextDims, tune: Tuning):
        self.g, self.p, self.dims, self.tune = g, p, dims, tune

    def w(self, name: str) -> str:
        return self.g.weight(name, self.p[name])

    def layer_norm(self, x: str, name: str) -> str:
        return self.g.LayerNormalization(x, self.w(name + ".weight"), self.w(name + ".bias"),
                                         axis=-1, epsilon=1e-5)

    def linear(self, x: str, name: str) -> str:
        return self.g.Add(self.g.MatMul(x, self.w(name + ".weight")), self.w(name + ".bias"))

    def gelu(self, x: str) -> str:
        return gelu(self.g, x)

    def split_heads(self, x: str) -> str:  # [B, L, D] -> [B, H, L, Dh]
        g, d = self.g, self.dims
        return g.Transpose(g.Reshape(x, g.i64(0, 0, d.heads, d.head_dim)), perm=[0, 2, 1, 3])

    def merge_heads(self, x: str) -> str:  # [B, H, L, Dh] -> [B, L, D]
        g = self.g
        return g.Reshape(g.Transpose(x, perm=[0, 2, 1, 3]), g.i64(0, 0, self.dims.d_model))

    def attend(self, q: str, k: str, v: str, bias: str) -> str:
        """softmax(q k^T + bias) v. q already carries the 1/sqrt(Dh) scale. With the cached-step
        encoder placeholders ([0, H, 1, Dh]) fed back as k/v this fails (spec 11.7)."""
        g = self.g
        scores = g.Add(g.MatMul(q, g.Transpose(k, perm=[0, 1, 3, 2])), bias)
        return g.MatMul(g.Softmax(scores, axis=-1), v)

    def ffn(self, x: str, name: str) -> str:
        h = self.layer_norm(x, name + ".final_layer_norm")
        h = self.linear(self.gelu(self.linear(h, name + ".fc1")), name + ".fc2")
        return self.g.Add(x, h)

    def key_mask_bias(self, mask: str) -> str:
        """int64 [B, L] (1 = attend) -> float [B, 1, 1, L]: 0 or MASKED."""
        g = self.g
        m = g.Cast(mask, to=FLOAT)
        bias = g.Mul(g.Sub(g.const(1.0), m), g.const(MASKED))
        return g.Unsqueeze(bias, g.i64(1, 2))

    def positions(self, side: str, start: str, length: str) -> str:
        """Learned positions start..start+length (scalars, int64), BART offset 2 -> [L, D]."""
        g = self.g
        ids = g.Add(g.Range(start, g.Add(start, length), g.const(1, np.int64)),
                    g.const(POS_OFFSET, np.int64))
        return g.Gather(self.w(f"model.{side}.embed_positions.weight"), ids, axis=0)

    def dim(self, x: str, axis: int) -> str:
        """Scalar int64 size of one axis."""
        g = self.g
        return g.Squeeze(g.Shape(x, start=axis, end=axis + 1), g.i64(0))


# ------------------------------------------------------------------------------------------------
# embed_tokens, encoder_model
# ------------------------------------------------------------------------------------------------
def build_embed_tokens(p: dict, dims: TextDims, tune: Tuning):
    g = Graph("embed_tokens")
    t = TextBlocks(g, p, dims, tune)
    # a plain lookup: Florence's scale_embedding is false, so no sqrt(D) factor (spec 2.2)
    g.Gather(t.w("model.shared.weight"), "input_ids", axis=0, outputs=["inputs_embeds"])
    return g.to_model(
        [g.value_info("input_ids", INT64, ["batch_size", "sequence_length"])],
        [g.value_info("inputs_embeds", FLOAT, ["batch_size", "sequence_length", dims.d_model])])


def build_encoder(p: dict, dims: TextDims, tune: Tuning):
    g = Graph("encoder_model")
    t = TextBlocks(g, p, dims, tune)
    x = "inputs_embeds"
    pos = t.positions("encoder", g.const(0, np.int64), t.dim(x, 1))
    h = t.layer_norm(g.Add(x, pos), "model.encoder.layernorm_embedding")
    bias = t.key_mask_bias("attention_mask")  # padded keys contribute exactly nothing
    for i in range(dims.encoder_layers):
        name = f"model.encoder.layers.{i}"
        a = t.layer_norm(h, name + ".self_attn_layer_norm")
        q, k, v = (t.split_heads(t.linear(a, f"{name}.self_attn.{n}_proj")) for n in "qkv")
        out = t.linear(t.merge_heads(t.attend(q, k, v, bias)), name + ".self_attn.out_proj")
        h = t.ffn(g.Add(h, out), name)
    g.LayerNormalization(h, t.w("model.encoder.layer_norm.weight"),
                         t.w("model.encoder.layer_norm.bias"), axis=-1, epsilon=1e-5,
                         outputs=["last_hidden_state"])
    seq = ["batch_size", "encoder_sequence_length"]
    return g.to_model(
        [g.value_info("inputs_embeds", FLOAT, seq + [dims.d_model]),
         g.value_info("attention_mask", INT64, seq)],
        [g.value_info("last_hidden_state", FLOAT, seq + [dims.d_model])])


# ------------------------------------------------------------------------------------------------
# decoder_model_merged: one If over a no-past branch and a with-past branch (optimum style)
# ------------------------------------------------------------------------------------------------
def past_name(i, kind, kv):
    return f"past_key_values.{i}.{kind}.{kv}"


def present_name(i, kind, kv):
    return f"present.{i}.{kind}.{kv}"


def decoder_branch(parent: Graph, p, dims: TextDims, tune: Tuning, with_past: bool,
                   cross_bias: str, theta: str):
    """One branch of the merged decoder, as a GraphProto whose outputs are logits, then per
    layer decoder key/value and encoder key/value (the If node's output order).

    no-past: ignores every past input, runs causal self-attention over the fed tokens (positions
      from 0) and computes cross-attention K/V from encoder_hidden_states, returned as
      present.*.encoder.*.
    with-past: positions continue after the past decoder length; self-attention concatenates the
      past decoder K/V; cross-attention uses the past encoder K/V; present.*.encoder.* are
      constant EMPTY [0, H, 1, Dh] tensors, like optimum's merge (spec P1, 11.7)."""
    tag = "with_past" if with_past else "no_past"
    g = Graph(tag, parent=parent, prefix=tag + "/")
    t = TextBlocks(g, p, dims, tune)
    x = "inputs_embeds"
    T = t.dim(x, 1)
    P = t.dim(past_name(0, "decoder", "key"), 2) if with_past else g.const(0, np.int64)
    h = t.layer_norm(g.Add(x, t.positions("decoder", P, T)), "model.decoder.layernorm_embedding")

    # causal bias [T, P+T]: query i (absolute P+i) may see keys 0..P+i
    q_pos = g.Unsqueeze(g.Range(P, g.Add(P, T), g.const(1, np.int64)), g.i64(1))
    k_pos = g.Unsqueeze(g.Range(g.const(0, np.int64), g.Add(P, T), g.const(1, np.int64)), g.i64(0))
    self_bias = g.Where(g.Greater(k_pos, q_pos), g.const(MASKED), g.const(0.0))

    outputs = []
    for i in range(dims.decoder_layers):
        name = f"model.decoder.layers.{i}"
        a = t.layer_norm(h, name + ".self_attn_layer_norm")
        q, k, v = (t.split_heads(t.linear(a, f"{name}.self_attn.{n}_proj")) for n in "qkv")
        if with_past:
            k = g.Concat(past_name(i, "decoder", "key"), k, axis=2)
            v = g.Concat(past_name(i, "decoder", "value"), v, axis=2)
        out = t.linear(t.merge_heads(t.attend(q, k, v, self_bias)), name + ".self_attn.out_proj")
        h = g.Add(h, out)

        a = t.layer_norm(h, name + ".encoder_attn_layer_norm")
        q = t.split_heads(t.linear(a, name + ".encoder_attn.q_proj"))
        if with_past:
            ck, cv = past_name(i, "encoder", "key"), past_name(i, "encoder", "value")
            empty = np.zeros((0, dims.heads, 1, dims.head_dim), np.float32)
            pk = g.local_constant(empty, f"present_{i}_encoder_key_placeholder")
            pv = g.local_constant(empty, f"present_{i}_encoder_value_placeholder")
        else:
            ck = t.split_heads(t.linear("encoder_hidden_states", name + ".encoder_attn.k_proj"))
            cv = t.split_heads(t.linear("encoder_hidden_states", name + ".encoder_attn.v_proj"))
            pk, pv = ck, cv
        out = t.linear(t.merge_heads(t.attend(q, ck, cv, cross_bias)),
                       name + ".encoder_attn.out_proj")
        h = t.ffn(g.Add(h, out), name)
        outputs += [k, v, pk, pv]

    hf = t.layer_norm(h, "model.decoder.layer_norm")  # gain = decisive-logit scale
    logits = g.Add(g.MatMul(hf, t.w("lm_head.weight")), t.w("final_logits_bias"))
    # EOS clock: n = tokens so far including this one = P + 1 .. P + T
    n = g.Cast(g.Range(g.Add(P, g.const(1, np.int64)), g.Add(g.Add(P, T), g.const(1, np.int64)),
                       g.const(1, np.int64)), to=FLOAT)
    n = g.Unsqueeze(n, g.i64(0, 2))  # [1, T, 1]
    clock = g.Mul(g.Sub(g.Mul(n, g.const(tune.eos_slope)), theta), g.const(tune.logit_std))
    logits = g.Add(logits, g.Mul(clock, t.w("altimage.eos_clock.onehot")))
    return g.to_graph([], [g.value_info(o, FLOAT, None) for o in [logits] + outputs])


def build_decoder_merged(p: dict, dims: TextDims, tune: Tuning):
    g = Graph("decoder_model_merged")
    t = TextBlocks(g, p, dims, tune)
    H, Dh, D = dims.heads, dims.head_dim, dims.d_model

    # shared by both branches (outer scope): cross-attention key bias and the EOS clock's theta
    cross_bias = t.key_mask_bias("encoder_attention_mask")
    m = g.Unsqueeze(g.Cast("encoder_attention_mask", to=FLOAT), g.i64(2))  # [B, L, 1]
    total = g.ReduceSum(g.Mul("encoder_hidden_states", m), g.i64(1), keepdims=1)
    mean = g.Div(total, g.ReduceSum(m, g.i64(1), keepdims=1))  # [B, 1, D], padding excluded
    ones, zeros = layer_norm_params(D)
    mean = g.LayerNormalization(mean, g.const(ones), g.const(zeros), axis=-1, epsilon=1e-5)
    u = g.MatMul(mean, t.w("altimage.eos_clock.weight"))  # [B, 1, 1]
    u = g.Tanh(g.Add(g.Mul(u, g.const(tune.eos_gain)), g.const(tune.eos_centre)))
    theta = g.Add(g.Mul(u, g.const(tune.eos_theta1)), g.const(tune.eos_theta0))

    then_branch = decoder_branch(g, p, dims, tune, True, cross_bias, theta)
    else_branch = decoder_branch(g, p, dims, tune, False, cross_bias, theta)
    out_names = ["logits"]
    for i in range(dims.decoder_layers):
        out_names += [present_name(i, kind, kv) for kind in ("decoder", "encoder")
                      for kv in ("key", "value")]
    g.If("use_cache_branch", outputs=out_names, then_branch=then_branch, else_branch=else_branch)

    inputs = [g.value_info("inputs_embeds", FLOAT, ["batch_size", "decoder_sequence_length", D]),
              g.value_info("encoder_attention_mask", INT64,
                           ["batch_size", "encoder_sequence_length"]),
              g.value_info("encoder_hidden_states", FLOAT,
                           ["batch_size", "encoder_sequence_length", D])]
    for i in range(dims.decoder_layers):
        for kind, axis in (("decoder", "past_decoder_sequence_length"),
                           ("encoder", "encoder_sequence_length_out")):
            for kv in ("key", "value"):
                inputs.append(g.value_info(past_name(i, kind, kv), FLOAT,
                                           ["batch_size", H, axis, Dh]))
    inputs.append(g.value_info("use_cache_branch", BOOL, [1]))
    outputs = [g.value_info("logits", FLOAT,
                            ["batch_size", "decoder_sequence_length", dims.vocab_size])]
    for i in range(dims.decoder_layers):
        for kind, axis in (("decoder", "past_decoder_sequence_length + 1"),
                           ("encoder", "encoder_sequence_length_out")):
            for kv in ("key", "value"):
                outputs.append(g.value_info(present_name(i, kind, kv), FLOAT,
                                            ["batch_size", H, axis, Dh]))
    return g.to_model(inputs, outputs)


# ------------------------------------------------------------------------------------------------
# Vision towers
# ------------------------------------------------------------------------------------------------
class VisionBlocks:
    """Layer helpers for the vision graphs; weights are drawn on demand by name."""

    def __init__(self, g: Graph, W: Weights):
        self.g, self.W = g, W
        self.params = 0  # counted as weights are created (cross-check of the analytic count)

    def w(self, name: str, array: np.ndarray) -> str:
        self.params += array.size
        return self.g.weight(name, array)

    def linear(self, x, name, d_in, d_out, gain=1.0, scale_cols=None, bias=None):
        w, b = self.W.linear(name, d_in, d_out, gain=gain)
        if bias is not None:
            b = bias(w)
        if scale_cols is not None:  # fold a constant scale (e.g. q * head_dim^-0.5) into columns
            cols, s = scale_cols
            w[:, cols] *= np.float32(s)
            b[cols] *= np.float32(s)
        return self.g.Add(self.g.MatMul(x, self.w(name + ".weight", w)), self.w(name + ".bias", b))

    def layer_norm(self, x, name, d, zero_flag=False):
        gamma, beta = layer_norm_params(d, zero_flag=zero_flag)
        return self.g.LayerNormalization(x, self.w(name + ".weight", gamma),
                                         self.w(name + ".bias", beta), axis=-1, epsilon=1e-5)

    def conv(self, x, name, c_in, c_out, k, stride, pad, groups=1, gain=1.0):
        fan_in = c_in // groups * k * k
        w = self.W.normal(name + ".weight", (c_out, c_in // groups, k, k), gain / math.sqrt(fan_in))
        b = np.zeros((c_out,), np.float32)  # a bias would be a vector shared by every patch
        return self.g.Conv(x, self.w(name + ".weight", w), self.w(name + ".bias", b),
                           kernel_shape=[k, k], strides=[stride, stride],
                           pads=[pad] * 4, group=groups)

    def gelu(self, x):
        return gelu(self.g, x)

    def mlp(self, x, name, d, hidden, gain=1.0):
        """GELU MLP on LayerNorm'd input; fc2's bias cancels the mean of the GELU outputs."""
        sigma = {}

        def fc1_bias(w):
            sigma["s"] = np.sqrt((w.astype(np.float64) ** 2).sum(axis=0))
            return np.zeros((hidden,), np.float32)

        def fc2_bias(w):
            mean = mean_gelu(np.zeros(hidden), sigma["s"])
            return on_grid(-(mean[:, None] * w.astype(np.float64)).sum(axis=0))
        h = self.gelu(self.linear(x, name + ".fc1", d, hidden, bias=fc1_bias))
        return self.linear(h, name + ".fc2", hidden, d, gain=gain, bias=fc2_bias)

    def to_tokens(self, x, c):  # [B, C, R, R] -> [B, R*R, C]
        g = self.g
        return g.Transpose(g.Reshape(x, g.i64(0, c, -1)), perm=[0, 2, 1])

    def to_image(self, x, c, r):  # [B, R*R, C] -> [B, C, R, R]
        g = self.g
        return g.Reshape(g.Transpose(x, perm=[0, 2, 1]), g.i64(0, c, r, r))

    def florence_head(self, x, c, grid, pos_table, d_model):
        """Florence's _encode_image tail: learned 2-D positions, a spatially pooled token
        first, then the grid tokens (577 rows), image_projection, image_proj_norm. The norm's
        flag channel is zeroed: image rows are the "not text" rows of the TEXT FLAG scheme."""
        g, W = self.g, self.W
        half = c // 2
        rows = W.normal("image_pos_embed.row_embeddings.weight", (pos_table, half), 0.5)
        cols = W.normal("image_pos_embed.column_embeddings.weight", (pos_table, c - half), 0.5)
        row = g.Slice(self.w("image_pos_embed.row_embeddings.weight", rows),
                      g.i64(0), g.i64(grid), g.i64(0))
        col = g.Slice(self.w("image_pos_embed.column_embeddings.weight", cols),
                      g.i64(0), g.i64(grid), g.i64(0))
        row = g.Expand(g.Unsqueeze(row, g.i64(1)), g.i64(grid, grid, half))
        col = g.Expand(g.Unsqueeze(col, g.i64(0)), g.i64(grid, grid, c - half))
        pos = g.Reshape(g.Concat(row, col, axis=2), g.i64(grid * grid, c))
        x = g.Add(x, pos)
        pooled = g.ReduceMean(x, axes=[1], keepdims=1)  # "spatial_avg_pool"
        x = g.Concat(pooled, x, axis=1)  # [B, 1 + grid^2, C]
        w = self.W.normal("image_projection", (c, d_model), 1.0 / math.sqrt(c))
        x = g.MatMul(x, self.w("image_projection", w))
        gamma, beta = layer_norm_params(d_model, zero_flag=True)
        return g.LayerNormalization(x, self.w("image_proj_norm.weight", gamma),
                                    self.w("image_proj_norm.bias", beta), axis=-1, epsilon=1e-5,
                                    outputs=["image_features"])


def vision_io(g: Graph, size: int, d_model: int, model):
    inputs = [g.value_info("pixel_values", FLOAT, ["batch_size", 3, size, size])]
    # The token axis is symbolic on purpose: a server must take the image-token count from the
    # output at run time, not from metadata (spec 11.9).
    outputs = [g.value_info("image_features", FLOAT,
                            ["batch_size", "image_sequence_length", d_model])]
    return model(inputs, outputs)


def build_tiny_vision(W: Weights, cfg: TinyVision, d_model: int):
    """Patchify conv (32x32/32) -> 24x24 tokens, one residual MLP for non-linearity, then the
    Florence head. Cheap, but every pixel reaches the features."""
    g = Graph("vision_encoder")
    v = VisionBlocks(g, W)
    c, grid = cfg.channels, cfg.image_size // cfg.patch
    x = v.conv("pixel_values", "vision_tower.patch_embed", 3, c, cfg.patch, cfg.patch, 0)
    x = v.to_tokens(x, c)
    x = g.Add(x, v.mlp(v.layer_norm(x, "vision_tower.norm", c), "vision_tower.mlp", c, 2 * c))
    v.florence_head(x, c, grid, cfg.pos_table, d_model)
    return vision_io(g, cfg.image_size, d_model, g.to_model), v.params


def build_davit_vision(W: Weights, cfg: DavitVision, d_model: int):
    """DaViT-base-shaped tower: conv stem 7x7/4, four stages of (window-attention block +
    channel-group-attention block) units with 3x3/2 conv downsampling, then the Florence head.
    Built for realistic cost (params, MACs), not for accuracy."""
    g = Graph("vision_encoder")
    v = VisionBlocks(g, W)
    res = cfg.resolutions()
    c0 = cfg.dims[0]
    x = v.conv("pixel_values", "vision_tower.convs.0.proj", 3, c0, cfg.stem_kernel,
               cfg.stem_stride, cfg.stem_kernel // 2)
    x = v.layer_norm(v.to_tokens(x, c0), "vision_tower.convs.0.norm", c0)
    for s, (c, depth, heads, r) in enumerate(zip(cfg.dims, cfg.depths, cfg.heads, res)):
        if s > 0:
            prev = cfg.dims[s - 1]
            x = v.layer_norm(x, f"vision_tower.convs.{s}.norm", prev)
            x = v.conv(v.to_image(x, prev, res[s - 1]), f"vision_tower.convs.{s}.proj",
                       prev, c, 3, 2, 1)
            x = v.to_tokens(x, c)
        for d in range(depth):
            name = f"vision_tower.blocks.{s}.{d}"
            x = davit_block(v, x, name + ".spatial", c, r, heads, cfg, window=True)
            x = davit_block(v, x, name + ".channel", c, r, heads, cfg, window=False)
    grid = res[-1]
    v.florence_head(x, cfg.dims[-1], grid, cfg.pos_table, d_model)
    return vision_io(g, cfg.image_size, d_model, g.to_model), v.params


def davit_block(v: VisionBlocks, x, name, c, r, heads, cfg: DavitVision, window: bool):
    """x + cpe; x + attn(LN x); x + cpe; x + mlp(LN x). cpe = depthwise 3x3 conv position
    encoding. Residual branches use gain 0.5 so 24 blocks keep activations in range."""
    g = v.g
    x = g.Add(x, v.to_tokens(v.conv(v.to_image(x, c, r), name + ".cpe.0", c, c, 3, 1, 1,
                                    groups=c, gain=0.5), c))
    a = v.layer_norm(x, name + ".norm1", c)
    a = window_attention(v, a, name + ".attn", c, r, heads, cfg.window) if window \
        else channel_attention(v, a, name + ".attn", c, r, heads)
    x = g.Add(x, a)
    x = g.Add(x, v.to_tokens(v.conv(v.to_image(x, c, r), name + ".cpe.1", c, c, 3, 1, 1,
                                    groups=c, gain=0.5), c))
    return g.Add(x, v.mlp(v.layer_norm(x, name + ".norm2", c), name + ".mlp", c,
                          cfg.mlp_ratio * c, gain=0.5))


def qkv_split(v: VisionBlocks, x, name, c, heads, q_scale):
    """x [N0, L, C] -> q, k, v each [N0, heads, L, C/heads] (q pre-scaled)."""
    g = v.g
    qkv = v.linear(x, name + ".qkv", c, 3 * c, scale_cols=(slice(0, c), q_scale))
    qkv = g.Transpose(g.Reshape(qkv, g.i64(0, 0, 3, heads, c // heads)), perm=[2, 0, 3, 1, 4])
    return g.Split(qkv, axis=0, outputs=3)


def squeeze0(g: Graph, x):
    return g.Squeeze(x, g.i64(0))


def window_attention(v: VisionBlocks, x, name, c, r, heads, win):
    """Multi-head self-attention inside non-overlapping win x win windows."""
    g = v.g
    n = r // win
    w = g.Reshape(x, g.i64(-1, n, win, n, win, c))
    w = g.Reshape(g.Transpose(w, perm=[0, 1, 3, 2, 4, 5]), g.i64(-1, win * win, c))
    q, k, val = (squeeze0(g, t) for t in qkv_split(v, w, name, c, heads, (c // heads) ** -0.5))
    a = g.MatMul(g.Softmax(g.MatMul(q, g.Transpose(k, perm=[0, 1, 3, 2])), axis=-1), val)
    a = g.Reshape(g.Transpose(a, perm=[0, 2, 1, 3]), g.i64(0, 0, c))
    a = v.linear(a, name + ".proj", c, c, gain=0.5)
    a = g.Transpose(g.Reshape(a, g.i64(-1, n, n, win, win, c)), perm=[0, 1, 3, 2, 4, 5])
    return g.Reshape(a, g.i64(-1, r * r, c))


def channel_attention(v: VisionBlocks, x, name, c, r, groups):
    """DaViT channel-group attention: per group, a (C/g x C/g) attention over channels, computed
    from all N tokens (q scaled by N^-0.5)."""
    g = v.g
    q, k, val = (squeeze0(g, t) for t in qkv_split(v, x, name, c, groups, (r * r) ** -0.5))
    attn = g.Softmax(g.MatMul(g.Transpose(q, perm=[0, 1, 3, 2]), k), axis=-1)  # [B, g, Cg, Cg]
    out = g.MatMul(attn, g.Transpose(val, perm=[0, 1, 3, 2]))  # [B, g, Cg, N]
    out = g.Reshape(g.Transpose(out, perm=[0, 3, 1, 2]), g.i64(0, 0, c))
    return v.linear(out, name + ".proj", c, c, gain=0.5)


# ------------------------------------------------------------------------------------------------
# Analytic cost of the vision towers (printed and stated in models/README.md)
# ------------------------------------------------------------------------------------------------
@dataclass
class Cost:
    params: int = 0
    macs: int = 0
    parts: dict = field(default_factory=dict)

    def add(self, part, params=0, macs=0):
        self.params += params
        self.macs += macs
        pp, pm = self.parts.get(part, (0, 0))
        self.parts[part] = (pp + params, pm + macs)


def head_cost(cost: Cost, c, grid, pos_table, d_model):
    tokens = grid * grid + 1
    cost.add("florence head", params=pos_table * c + c * d_model + 2 * d_model,
             macs=tokens * c * d_model)


def tiny_vision_cost(cfg: TinyVision, d_model: int) -> Cost:
    cost = Cost()
    c, grid = cfg.channels, cfg.image_size // cfg.patch
    n = grid * grid
    k = 3 * cfg.patch * cfg.patch
    cost.add("patch conv", params=k * c + c, macs=n * k * c)
    cost.add("mlp", params=2 * c + (c * 2 * c + 2 * c) + (2 * c * c + c), macs=n * 4 * c * c)
    head_cost(cost, c, grid, cfg.pos_table, d_model)
    return cost


def davit_cost(cfg: DavitVision, d_model: int) -> Cost:
    """Multiply-accumulates of convs, linears and attention matmuls (elementwise ops, norms and
    softmax are ignored, as usual for MAC counts)."""
    cost = Cost()
    res = cfg.resolutions()
    k, c0 = cfg.stem_kernel, cfg.dims[0]
    cost.add("stem", params=3 * k * k * c0 + c0 + 2 * c0, macs=res[0] ** 2 * 3 * k * k * c0)
    for s, (c, depth, heads, r) in enumerate(zip(cfg.dims, cfg.depths, cfg.heads, res)):
        n = r * r
        part = f"stage {s + 1} ({c} ch, {r}x{r})"
        if s > 0:
            prev = cfg.dims[s - 1]
            cost.add(part, params=2 * prev + 9 * prev * c + c, macs=n * 9 * prev * c)
        hidden = cfg.mlp_ratio * c
        block_params = (2 * (9 * c + c)  # two depthwise cpe convs
                        + 4 * c  # two layer norms
                        + 3 * c * c + 3 * c + c * c + c  # qkv, proj
                        + c * hidden + hidden + hidden * c + c)  # mlp
        block_linear_macs = n * (4 * c * c + 2 * c * hidden) + 2 * n * 9 * c
        window_attn_macs = 2 * n * cfg.window * cfg.window * c  # q k^T and a v, per window
        channel_attn_macs = 2 * n * c * (c // heads)  # q^T k and a v^T, per group
        cost.add(part, params=depth * 2 * block_params,
                 macs=depth * (2 * block_linear_macs + window_attn_macs + channel_attn_macs))
    head_cost(cost, cfg.dims[-1], res[-1], cfg.pos_table, d_model)
    return cost


def text_cost(dims: TextDims) -> dict:
    """Parameter counts of the text graphs (tied lm_head counted in the decoder file too)."""
    D, F, V = dims.d_model, dims.ffn_dim, dims.vocab_size
    attn = 4 * D * D + 4 * D
    ffn = 2 * D * F + F + D
    pos = (dims.max_positions + POS_OFFSET) * D
    enc = pos + 2 * D + dims.encoder_layers * (attn + ffn + 4 * D) + 2 * D
    dec = pos + 2 * D + dims.decoder_layers * (2 * attn + ffn + 6 * D) + 2 * D + V * D + V
    return {"embed_tokens": V * D, "encoder_model": enc, "decoder_model_merged": dec}
