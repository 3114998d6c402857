"""The three Qwen3.5 graphs (onnx-community `-ONNX-OPT` layout, spec qwen3_5-onnx.md 2.5 and 3)
with random weights: embed_tokens, vision_encoder, decoder_model_merged.

The decoder is a real hybrid stack: Gated DeltaNet layers through the fused
`com.microsoft::CausalConvWithState` + `com.microsoft::LinearAttention` ops (conv and recurrent
state in and out), and gated full-attention layers with a KV cache and interleaved M-RoPE over
the three rows of `position_ids`. SwiGLU MLPs, RMSNorm, `num_logits_to_keep`.

Random weights alone make a poor fixture (every step picks the same token). A few deliberate
structures make greedy output decisive and still sensitive to everything a server can get wrong;
each is described where it is built:

* MARKER CHANNELS 0..4 of the residual stream: FLAG (every text token), IMG (every image row),
  CLOCK (the EOS clock), SPECIAL (chat-frame tokens), BULK (makes every embedding row the same
  length). Only the designed paths read or write them.
* NEXT-TOKEN PATH: the output table is the embedding table with its rows moved along one random
  cycle through the generable tokens, so a hidden state close to E[id] scores "the token after
  id" highest: sequences walk and do not repeat. The context (states, image, positions) adds a
  vector of comparable size, so it decides the first token and deflects some later steps.
* IMAGE ATTENTION: half of the full-attention heads get a large score bonus for keys that carry
  the IMG offset, plus a constant rotary part on both sides, so text positions attend to a
  region of the image chosen by the M-RoPE (t, h, w) positions of its tokens.
* EOS CLOCK: one Gated DeltaNet head counts tokens since the last chat-frame token (its decay
  resets the recurrent state there), written into CLOCK; the `<|im_end|>` logit grows with it,
  plus an image-dependent term, so outputs end after ~10-40 tokens at lengths that vary.
* SUPPRESSION: tokens a fixture should never produce (specials, `<think>`, whitespace-only or
  partial-UTF-8 tokens, padding rows) get a large negative bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from florence2_graphs import Weights, gelu, on_grid
from onnx_builder import BOOL, FLOAT, INT64, Graph

FLAG, IMG, CLOCK, SPECIAL, BULK = 0, 1, 2, 3, 4
MARKERS = 5
MASKED = -1e9  # additive bias of a masked key: exp() underflows to exactly 0
INT64_MAX = 2 ** 63 - 1
MS = {"domain": "com.microsoft"}
PRODUCER = ("altimage make_qwen3_5", "1")


# ------------------------------------------------------------------------------------------------
# Dimensions and knobs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDims:
    hidden: int
    layer_types: tuple  # "linear_attention" | "full_attention" per layer
    vocab_size: int  # embedding rows = logits width
    intermediate: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    linear_num_key_heads: int
    linear_key_head_dim: int
    linear_num_value_heads: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int = 4
    partial_rotary_factor: float = 0.25
    mrope_section: tuple = (11, 11, 10)
    rope_theta: float = 1e7
    rms_norm_eps: float = 1e-6

    def __post_init__(self):
        assert self.linear_num_key_heads == self.linear_num_value_heads, \
            "LinearAttention is wired for equal key/value head counts"
        assert self.num_attention_heads % self.num_key_value_heads == 0
        assert sum(self.mrope_section) * 2 == self.rotary_dim, (self.mrope_section,
                                                                self.rotary_dim)
        assert self.rotary_dim < self.head_dim, "the image-bonus dim lies outside the rotary part"
        assert set(self.layer_types) <= {"linear_attention", "full_attention"}
        assert "full_attention" in self.layer_types, "tjs needs a past_key_values.* entry (P8)"
        assert "linear_attention" in self.layer_types, "the EOS clock lives in a linear layer"

    @property
    def layers(self) -> int:
        return len(self.layer_types)

    @property
    def key_dim(self) -> int:  # Hk * dk
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def value_dim(self) -> int:  # Hv * dv
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def conv_dim(self) -> int:  # q, k, v channels through the causal conv
        return 2 * self.key_dim + self.value_dim

    @property
    def rotary_dim(self) -> int:
        return int(round(self.head_dim * self.partial_rotary_factor))

    @property
    def clock_layer(self) -> int:
        return self.layer_types.index("linear_attention")


@dataclass(frozen=True)
class VisionDims:
    hidden: int  # ViT width
    depth: int
    heads: int
    intermediate: int
    out_hidden: int  # = text hidden
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    pos_freqs: tuple = (1.0, 0.5, 0.25, 0.125)  # sin/cos features of patch row and column

    @property
    def patch_dim(self) -> int:  # 3 * 2 * 16 * 16 = 1536
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def merge_dim(self) -> int:
        return self.hidden * self.spatial_merge_size ** 2


@dataclass(frozen=True)
class Vocab:
    """Token roles the graphs are built around (ids from the trained tokenizer)."""
    size: int  # embedding rows (>= tokenizer size: padding rows are never generated)
    generable: tuple  # ids the walk goes through
    special: tuple  # chat-frame tokens: SPECIAL marker (clock reset), never generated
    eos: int  # <|im_end|>: its logit is the clock's


@dataclass(frozen=True)
class Tuning:
    """Knobs that make random weights a useful fixture (see the module docstring)."""
    structural_scale: float = 0.25  # embedding content of tokens never generated
    flag_value: float = 2.0
    special_value: float = 3.0
    img_value: float = 3.0  # IMG channel of every image_features row
    linear_out_gain: float = 20.0
    full_out_gain: float = 5.0
    mlp_gain: float = 1.2
    conv_gain: float = 1.0
    attn_content: float = 1.0  # std of the content part of full-attention scores
    image_bonus: float = 6.0  # score bonus of image keys in the image heads
    pos_score: float = 2.0  # std of the constant rotary (position) part of the scores
    logit_scale: float = 20.0  # gain of the final RMSNorm (logits = scale * cos-like scores)
    suppress: float = 1.0e4  # negative bias of never-generated tokens
    clock_beta: float = 0.03  # count s_n = 1 - (1 - beta)^n tokens since the last frame token
    clock_theta: float = 0.48
    clock_gain: float = 60.0  # EOS logit per unit of (clock - theta), in units of logit_scale
    clock_image: float = 0.4  # std of the image-dependent term full attention adds to CLOCK
    clock_prompt: float = 2.0  # the same for the text-dependent term the linear layers add
    vision_gain: float = 1.0


# ------------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------------
def rand(W: Weights, name: str, shape, std: float) -> np.ndarray:
    return W.normal(name, shape, std)


def dense(W: Weights, name: str, d_in: int, d_out: int, gain: float = 1.0) -> np.ndarray:
    """[d_in, d_out] (x @ W) with output std ~gain for unit-RMS input; marker rows zeroed."""
    w = W.normal(name, (d_in, d_out), gain / math.sqrt(d_in))
    return w


def embedding_table(W: Weights, dims: TextDims, vocab: Vocab, tune: Tuning) -> np.ndarray:
    """Every row has the same length, so RMSNorm maps FLAG to the same value for every token
    (the EOS clock counts exact steps): content of unit RMS (generable tokens) or
    structural_scale of it (tokens never generated: the context, not their own embedding,
    decides what follows them), SPECIAL on chat-frame tokens, and BULK taking up the rest."""
    E = W.normal("model.language_model.embed_tokens.weight", (vocab.size, dims.hidden), 1.0)
    n = dims.hidden - MARKERS
    scale = np.full((vocab.size,), tune.structural_scale)
    scale[list(vocab.generable)] = 1.0
    special = np.zeros((vocab.size,))
    special[list(vocab.special)] = tune.special_value
    bulk = np.sqrt((1.0 - scale ** 2) * n + tune.special_value ** 2 - special ** 2)
    for r in range(0, vocab.size, 8192):  # in blocks: the 0.8B-shaped table is 1 GB
        rows = slice(r, r + 8192)
        c = E[rows, MARKERS:].astype(np.float64)
        c *= (scale[rows] / np.sqrt(np.einsum("ij,ij->i", c, c) / n))[:, None]
        E[rows, MARKERS:] = on_grid(c)
    E[:, :MARKERS] = 0.0
    E[:, FLAG] = tune.flag_value  # every token row is a text row
    E[:, SPECIAL] = on_grid(special)
    E[:, BULK] = on_grid(bulk)
    return E


def embedded_flag(dims: TextDims, tune: Tuning) -> float:
    """FLAG after the first RMSNorm, the same for every token (see embedding_table)."""
    n = dims.hidden - MARKERS
    return tune.flag_value / math.sqrt((n + tune.flag_value ** 2 + tune.special_value ** 2)
                                       / dims.hidden)


def next_token_cycle(W: Weights, vocab: Vocab) -> np.ndarray:
    """order[i] -> order[i+1]: one cycle through every generable token (no fixed points, no
    short loops)."""
    rng = W.rng("altimage.next_token_cycle")
    gen = np.asarray(sorted(vocab.generable), np.int64)
    return gen[rng.permutation(gen.size)]


def text_weights(W: Weights, dims: TextDims, vocab: Vocab, tune: Tuning) -> dict:
    """Every decoder tensor, by name (HF Qwen3.5 names where one exists)."""
    H = dims.hidden
    p: dict[str, np.ndarray] = {}
    E = embedding_table(W, dims, vocab, tune)
    p["embed"] = E
    pre = "model.language_model.layers"
    for i, kind in enumerate(dims.layer_types):
        p[f"{pre}.{i}.input_layernorm.weight"] = np.ones((H,), np.float32)
        p[f"{pre}.{i}.post_attention_layernorm.weight"] = np.ones((H,), np.float32)
        if kind == "linear_attention":
            linear_weights(W, f"{pre}.{i}.linear_attn", dims, tune, p,
                           clock=(i == dims.clock_layer))
        else:
            full_weights(W, f"{pre}.{i}.self_attn", dims, tune, p)
        mlp_weights(W, f"{pre}.{i}.mlp", dims, tune, p)

    # Final norm: the logit scale on content channels, markers dropped.
    w = np.full((H,), tune.logit_scale, np.float32)
    w[:MARKERS] = 0.0
    p["model.language_model.norm.weight"] = w
    # Output table: column order[i+1] is E[order[i]] (content channels), generable tokens only.
    order = next_token_cycle(W, vocab)
    head = np.zeros((H, vocab.size), np.float32)
    head[:, np.roll(order, -1)] = E[order].T
    head[:MARKERS] = 0.0
    p["lm_head.weight"] = head
    bias = np.full((vocab.size,), -tune.suppress, np.float32)
    bias[list(vocab.generable)] = 0.0
    bias[vocab.eos] = 0.0
    p["altimage.logits_bias"] = bias
    eos = np.zeros((vocab.size,), np.float32)
    eos[vocab.eos] = on_grid(tune.clock_gain * tune.logit_scale)
    p["altimage.eos_clock"] = eos
    p["altimage.next_token_cycle"] = order
    return p


def zero_markers(w: np.ndarray, rows=True, cols=False) -> np.ndarray:
    if rows:
        w[:MARKERS] = 0.0
    if cols:
        w[:, :MARKERS] = 0.0
    return w


def linear_weights(W: Weights, name: str, dims: TextDims, tune: Tuning, p: dict, clock: bool):
    """Gated DeltaNet layer. With clock=True, head 0 is the EOS clock:
    q = k = a constant unit vector and v = a constant on one dim (both from FLAG, through a
    pass-through conv tap), beta constant, decay ~0 except on SPECIAL tokens where it resets the
    state; so its output is s_n = 1 - (1 - beta)^n times a constant, written only into CLOCK."""
    H, Hk, dk, Hv, dv = (dims.hidden, dims.linear_num_key_heads, dims.linear_key_head_dim,
                         dims.linear_num_value_heads, dims.linear_value_head_dim)
    K = dims.linear_conv_kernel_dim
    C = dims.conv_dim
    w_qkv = zero_markers(dense(W, name + ".in_proj_qkv.weight", H, C))
    w_z = zero_markers(dense(W, name + ".in_proj_z.weight", H, Hv * dv))
    w_z[FLAG] = 1.0  # gate silu(z) centred on silu(a_FLAG): open for every token
    w_b = zero_markers(dense(W, name + ".in_proj_b.weight", H, Hv))
    w_a = zero_markers(dense(W, name + ".in_proj_a.weight", H, Hv))
    b_b = rand(W, name + ".b_bias", (Hv,), 0.5)
    w_a *= np.float32(0.5)
    # decay -softplus(a.w + b): b around -4 (memory of ~50 tokens), spread over heads
    b_a = (rand(W, name + ".dt_bias", (Hv,), 1.5) - np.float32(4.0)).astype(np.float32)
    conv = rand(W, name + ".conv1d.weight", (C, 1, K), tune.conv_gain / math.sqrt(K))
    w_o = zero_markers(dense(W, name + ".out_proj.weight", Hv * dv, H,
                             tune.linear_out_gain / math.sqrt(Hv)), rows=False, cols=True)
    # every head also writes a text-dependent term into CLOCK: lengths vary with the prompt
    w_o[:, CLOCK] = rand(W, name + ".out_proj.clock", (Hv * dv,),
                         tune.clock_prompt / math.sqrt(Hv * dv))
    if clock:
        q0, k0, v0 = slice(0, dk), slice(Hk * dk, Hk * dk + dk), 2 * Hk * dk
        u = on_grid(np.abs(rand(W, name + ".clock.u", (dk,), 1.0)) + 0.5)
        w_qkv[:, q0] = 0.0
        w_qkv[:, k0] = 0.0
        w_qkv[:, v0:v0 + dv] = 0.0
        w_qkv[FLAG, q0] = u
        w_qkv[FLAG, k0] = u
        w_qkv[FLAG, v0] = 1.0
        for ch in list(range(q0.start, q0.stop)) + list(range(k0.start, k0.stop)) \
                + list(range(v0, v0 + dv)):
            conv[ch, 0, :] = 0.0
            conv[ch, 0, K - 1] = 1.0  # the current position's tap only
        w_z[:, :dv] = 0.0
        w_z[FLAG, :dv] = 2.0
        w_b[:, 0] = 0.0
        b_b[0] = on_grid(math.log(tune.clock_beta / (1.0 - tune.clock_beta)))
        w_a[:, 0] = 0.0
        w_a[SPECIAL, 0] = 10.0
        b_a[0] = -8.0
        # Output of head 0 for a text token: o = s_n * silu(a) / sqrt(dk), gated by silu(2a)
        # (a = FLAG after the norm, the same for every token in the first layer). CLOCK = s_n.
        a = embedded_flag(dims, tune)
        silu = lambda x: x / (1.0 + math.exp(-x))  # noqa: E731
        unit = silu(a) * silu(2.0 * a) / math.sqrt(dk)
        w_o[:dv, :] = 0.0
        w_o[0, CLOCK] = on_grid(1.0 / unit)
    p[name + ".in_proj_qkv.weight"] = w_qkv
    p[name + ".in_proj_z.weight"] = w_z
    p[name + ".in_proj_b.weight"] = w_b
    p[name + ".in_proj_a.weight"] = w_a
    p[name + ".b_bias"] = b_b
    p[name + ".dt_bias"] = b_a
    p[name + ".conv1d.weight"] = conv
    p[name + ".out_proj.weight"] = w_o


def full_weights(W: Weights, name: str, dims: TextDims, tune: Tuning, p: dict):
    """Gated full attention (q and an output gate from q_proj, as Qwen3.5). KV head 0's query
    heads are "image" heads: a bonus dim outside the rotary part (q from FLAG, k from IMG) makes
    image keys win. Every head also gets constant rotary parts (q from FLAG; k from FLAG and, in
    the image heads, IMG) so scores depend on M-RoPE positions."""
    H, Hq, Hkv, hd, rot = (dims.hidden, dims.num_attention_heads, dims.num_key_value_heads,
                           dims.head_dim, dims.rotary_dim)
    n_rep = Hq // Hkv
    content = math.sqrt(tune.attn_content)  # q.k / sqrt(hd) has std attn_content
    w_q = zero_markers(dense(W, name + ".q_proj.weight", H, Hq * 2 * hd, content))
    w_k = zero_markers(dense(W, name + ".k_proj.weight", H, Hkv * hd, content))
    w_v = zero_markers(dense(W, name + ".v_proj.weight", H, Hkv * hd))
    w_o = zero_markers(dense(W, name + ".o_proj.weight", Hq * hd, H,
                             tune.full_out_gain / math.sqrt(Hq / 2)), rows=False, cols=True)
    bonus = hd - 1
    # constant rotary parts: sum over rot dims of (c_q a)(c_k a) / sqrt(hd) ~ pos_score
    a = tune.flag_value
    amp = math.sqrt(tune.pos_score * math.sqrt(hd) / math.sqrt(rot)) / a
    for h in range(Hq):
        qc = h * 2 * hd
        w_q[:, qc + bonus] = 0.0
        w_q[FLAG, qc:qc + rot] = on_grid(rand(W, f"{name}.pos_q.{h}", (rot,), amp))
        if h // n_rep == 0:
            w_q[FLAG, qc + bonus] = 1.0
    a_img = tune.img_value
    for kvh in range(Hkv):
        kc = kvh * hd
        w_k[:, kc + bonus] = 0.0
        w_k[FLAG, kc:kc + rot] = on_grid(rand(W, f"{name}.pos_k.{kvh}", (rot,), amp))
        if kvh == 0:
            w_k[IMG, kc + bonus] = on_grid(tune.image_bonus * math.sqrt(hd) / (a * a_img))
            w_k[IMG, kc:kc + rot] = on_grid(rand(W, f"{name}.pos_k_img", (rot,), amp * a / a_img))
    # The image heads also write an image-dependent term into CLOCK (lengths vary by image).
    rows = slice(0, n_rep * hd)
    w_o[rows, CLOCK] = rand(W, name + ".o_proj.clock", (n_rep * hd,),
                            tune.clock_image / math.sqrt(n_rep * hd / 2))
    p[name + ".q_proj.weight"] = w_q
    p[name + ".k_proj.weight"] = w_k
    p[name + ".v_proj.weight"] = w_v
    p[name + ".o_proj.weight"] = w_o


def mlp_weights(W: Weights, name: str, dims: TextDims, tune: Tuning, p: dict):
    H, I = dims.hidden, dims.intermediate
    p[name + ".gate_proj.weight"] = zero_markers(dense(W, name + ".gate_proj.weight", H, I))
    p[name + ".up_proj.weight"] = zero_markers(dense(W, name + ".up_proj.weight", H, I))
    p[name + ".down_proj.weight"] = zero_markers(
        dense(W, name + ".down_proj.weight", I, H, tune.mlp_gain), rows=False, cols=True)


def mrope_selection(dims: TextDims) -> np.ndarray:
    """[3, rot/2]: row r, column i holds inv_freq[i] when frequency i follows position row r.
    Interleaved M-RoPE (Qwen3-VL/3.5 apply_interleaved_mrope): i % 3 == 1 and i < 3*sec[1] -> h,
    i % 3 == 2 and i < 3*sec[2] -> w, everything else t."""
    half = dims.rotary_dim // 2
    inv = [dims.rope_theta ** (-2.0 * i / dims.rotary_dim) for i in range(half)]
    sel = np.zeros((3, half), np.float64)
    sec = dims.mrope_section
    for i in range(half):
        row = 0
        if i % 3 == 1 and i < 3 * sec[1]:
            row = 1
        elif i % 3 == 2 and i < 3 * sec[2]:
            row = 2
        sel[row, i] = inv[i]
    return sel.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Graph pieces
# ------------------------------------------------------------------------------------------------
class Blocks:
    def __init__(self, g: Graph, p: dict, eps: float = 1e-6):
        self.g, self.p, self.eps = g, p, eps

    def w(self, name: str) -> str:
        return self.g.weight(name, self.p[name])

    def dim(self, x: str, axis: int) -> str:
        g = self.g
        return g.Squeeze(g.Shape(x, start=axis, end=axis + 1), g.i64(0))

    def rms_norm(self, x: str, weight: str) -> str:
        g = self.g
        ms = g.ReduceMean(g.Mul(x, x), axes=[-1], keepdims=1)
        return g.Mul(g.Div(x, g.Sqrt(g.Add(ms, g.const(self.eps)))), self.w(weight))

    def slice_last(self, x: str, start: int, end: int, axis: int = -1) -> str:
        g = self.g
        return g.Slice(x, g.i64(start), g.i64(end), g.i64(axis))

    def silu(self, x: str) -> str:
        return self.g.Mul(x, self.g.Sigmoid(x))

    def l2_normalize_heads(self, x: str, heads: int, d: int) -> str:
        """[B,S,heads*d]: each head's vector / sqrt(sum sq + 1e-6) (HF l2norm)."""
        g = self.g
        xh = g.Reshape(x, g.i64(0, 0, heads, d))
        ss = g.ReduceSumSquare(xh, axes=[-1], keepdims=1)
        return g.Reshape(g.Div(xh, g.Sqrt(g.Add(ss, g.const(1e-6)))), g.i64(0, 0, heads * d))


# ------------------------------------------------------------------------------------------------
# embed_tokens
# ------------------------------------------------------------------------------------------------
def build_embed_tokens(p: dict, dims: TextDims, external=None):
    g = Graph("embed_tokens", external=external)
    g.Gather(g.weight("model.language_model.embed_tokens.weight", p["embed"]), "input_ids",
             axis=0, outputs=["inputs_embeds"])
    return g.to_model(
        [g.value_info("input_ids", INT64, ["batch_size", "sequence_length"])],
        [g.value_info("inputs_embeds", FLOAT, ["batch_size", "sequence_length", dims.hidden])],
        producer=PRODUCER, check=external is None)


# ------------------------------------------------------------------------------------------------
# decoder_model_merged
# ------------------------------------------------------------------------------------------------
def state_inputs(dims: TextDims):
    """(name, shape) of every state input, in graph order (per layer: conv, recurrent or
    key, value). The batch dim is `batch_size`; every other dim is concrete except the KV
    past length (spec 2.5, P8)."""
    out = []
    for i, kind in enumerate(dims.layer_types):
        if kind == "linear_attention":
            out.append((f"past_conv.{i}", ["batch_size", dims.conv_dim,
                                           dims.linear_conv_kernel_dim - 1]))
            out.append((f"past_recurrent.{i}", ["batch_size", dims.linear_num_value_heads,
                                                dims.linear_key_head_dim,
                                                dims.linear_value_head_dim]))
        else:
            for kv in ("key", "value"):
                out.append((f"past_key_values.{i}.{kv}",
                            ["batch_size", dims.num_key_value_heads, "past_sequence_length",
                             dims.head_dim]))
    return out


def present_name(past: str) -> str:
    if past.startswith("past_key_values."):
        return "present." + past[len("past_key_values."):]
    return past.replace("past_", "present_", 1)


def present_shape(past: str, shape):
    if past.startswith("past_key_values."):
        return [shape[0], shape[1], "total_sequence_length", shape[3]]
    return shape


def build_decoder(p: dict, dims: TextDims, tune: Tuning, external=None, taps=None):
    """taps: a list that receives (label, value name) of the residual stream after every
    sublayer, for tuning and debugging (add them as graph outputs to read them)."""
    g = Graph("decoder_model_merged", external=external)
    t = Blocks(g, p, dims.rms_norm_eps)
    H = dims.hidden
    x = "inputs_embeds"
    S = t.dim(x, 1)
    Tot = t.dim("attention_mask", 1)
    P = g.Sub(Tot, S)

    # Full-attention mask [B,1,S,Tot]: causal (key j <= P + i) and attention_mask[b, j].
    j = g.Range(g.const(0, np.int64), Tot, g.const(1, np.int64))
    i = g.Add(g.Range(g.const(0, np.int64), S, g.const(1, np.int64)), P)
    causal = g.LessOrEqual(g.Unsqueeze(j, g.i64(0)), g.Unsqueeze(i, g.i64(1)))
    keep = g.And(g.Unsqueeze(causal, g.i64(0, 1)),
                 g.Unsqueeze(g.Cast("attention_mask", to=BOOL), g.i64(1, 2)))
    mask_bias = g.Where(keep, g.const(0.0), g.const(MASKED))

    # Interleaved M-RoPE tables [B,1,S,rot] from the three position rows.
    pos = g.Transpose(g.Cast("position_ids", to=FLOAT), perm=[1, 2, 0])  # [B,S,3]
    ang = g.MatMul(pos, g.weight("altimage.mrope_inv_freq", mrope_selection(dims)))
    emb = g.Concat(ang, ang, axis=-1)
    cos = g.Unsqueeze(g.Cos(emb), g.i64(1))
    sin = g.Unsqueeze(g.Sin(emb), g.i64(1))

    presents = []
    pre = "model.language_model.layers"
    for li, kind in enumerate(dims.layer_types):
        a = t.rms_norm(x, f"{pre}.{li}.input_layernorm.weight")
        if kind == "linear_attention":
            out = linear_layer(t, a, f"{pre}.{li}.linear_attn", li, dims)
            presents += [f"present_conv.{li}", f"present_recurrent.{li}"]
        else:
            out = full_layer(t, a, f"{pre}.{li}.self_attn", li, dims, cos, sin, mask_bias)
            presents += [f"present.{li}.key", f"present.{li}.value"]
        x = g.Add(x, out)
        m = t.rms_norm(x, f"{pre}.{li}.post_attention_layernorm.weight")
        mo = mlp(t, m, f"{pre}.{li}.mlp")
        x = g.Add(x, mo)
        if taps is not None:
            taps += [(f"{li}.{kind.split('_')[0]}", out), (f"{li}.mlp", mo), (f"{li}.x", x)]

    # num_logits_to_keep: keep the last k positions (k = 0 keeps all).
    start = g.Unsqueeze(g.Neg("num_logits_to_keep"), g.i64(0))
    xs = g.Slice(x, start, g.i64(INT64_MAX), g.i64(1))
    hn = t.rms_norm(xs, "model.language_model.norm.weight")
    scores = g.MatMul(hn, t.w("lm_head.weight"))
    clock = t.slice_last(xs, CLOCK, CLOCK + 1)
    eos = g.Mul(g.Sub(clock, g.const(on_grid(tune.clock_theta))), t.w("altimage.eos_clock"))
    g.Add(g.Add(scores, t.w("altimage.logits_bias")), eos, outputs=["logits"])

    inputs = [g.value_info("inputs_embeds", FLOAT, ["batch_size", "sequence_length", H]),
              g.value_info("attention_mask", INT64, ["batch_size", "total_sequence_length"]),
              g.value_info("position_ids", INT64, [3, "batch_size", "sequence_length"]),
              g.value_info("num_logits_to_keep", INT64, [])]
    outputs = [g.value_info("logits", FLOAT, ["batch_size", "logits_sequence_length",
                                              dims.vocab_size])]
    for name, shape in state_inputs(dims):
        inputs.append(g.value_info(name, FLOAT, shape))
        outputs.append(g.value_info(present_name(name), FLOAT, present_shape(name, shape)))
    assert [o.name for o in outputs[1:]] == presents
    return g.to_model(inputs, outputs, opsets={"com.microsoft": 1}, producer=PRODUCER,
                      check=external is None)


def linear_layer(t: Blocks, a: str, name: str, li: int, dims: TextDims) -> str:
    g = t.g
    Hk, dk, Hv, dv = (dims.linear_num_key_heads, dims.linear_key_head_dim,
                      dims.linear_num_value_heads, dims.linear_value_head_dim)
    qkv = g.MatMul(a, t.w(name + ".in_proj_qkv.weight"))  # [B,S,C]
    z = g.MatMul(a, t.w(name + ".in_proj_z.weight"))
    beta = g.Sigmoid(g.Add(g.MatMul(a, t.w(name + ".in_proj_b.weight")), t.w(name + ".b_bias")))
    decay = g.Neg(g.Softplus(g.Add(g.MatMul(a, t.w(name + ".in_proj_a.weight")),
                                   t.w(name + ".dt_bias"))))
    conv, _ = g.op("CausalConvWithState", g.Transpose(qkv, perm=[0, 2, 1]),
                   t.w(name + ".conv1d.weight"), "", f"past_conv.{li}",
                   outputs=[g.fresh("conv"), f"present_conv.{li}"], activation="silu", **MS)
    mixed = g.Transpose(conv, perm=[0, 2, 1])  # [B,S,C]
    kd = Hk * dk
    q = t.l2_normalize_heads(t.slice_last(mixed, 0, kd), Hk, dk)
    k = t.l2_normalize_heads(t.slice_last(mixed, kd, 2 * kd), Hk, dk)
    v = t.slice_last(mixed, 2 * kd, 2 * kd + Hv * dv)
    o, _ = g.op("LinearAttention", q, k, v, f"past_recurrent.{li}", decay, beta,
                outputs=[g.fresh("linear_attention"), f"present_recurrent.{li}"],
                q_num_heads=Hk, kv_num_heads=Hv, update_rule="gated_delta", **MS)
    return g.MatMul(g.Mul(o, t.silu(z)), t.w(name + ".out_proj.weight"))


def rotate(t: Blocks, x: str, cos: str, sin: str, rot: int, hd: int) -> str:
    """Rotary on the first `rot` dims of [B,heads,S,hd] (rotate_half form), rest unchanged."""
    g = t.g
    xr = t.slice_last(x, 0, rot)
    half = rot // 2
    rh = g.Concat(g.Neg(t.slice_last(xr, half, rot)), t.slice_last(xr, 0, half), axis=-1)
    xr = g.Add(g.Mul(xr, cos), g.Mul(rh, sin))
    return g.Concat(xr, t.slice_last(x, rot, hd), axis=-1)


def full_layer(t: Blocks, a: str, name: str, li: int, dims: TextDims, cos, sin, mask_bias):
    g = t.g
    Hq, Hkv, hd, rot = (dims.num_attention_heads, dims.num_key_value_heads, dims.head_dim,
                        dims.rotary_dim)
    qg = g.Reshape(g.MatMul(a, t.w(name + ".q_proj.weight")), g.i64(0, 0, Hq, 2 * hd))
    q = g.Transpose(t.slice_last(qg, 0, hd), perm=[0, 2, 1, 3])
    gate = g.Reshape(t.slice_last(qg, hd, 2 * hd), g.i64(0, 0, Hq * hd))

    def heads(w):
        return g.Transpose(g.Reshape(g.MatMul(a, t.w(w)), g.i64(0, 0, Hkv, hd)),
                           perm=[0, 2, 1, 3])
    k = heads(name + ".k_proj.weight")
    v = heads(name + ".v_proj.weight")
    q = rotate(t, q, cos, sin, rot, hd)
    k = rotate(t, k, cos, sin, rot, hd)
    k_all = g.Concat(f"past_key_values.{li}.key", k, axis=2, outputs=[f"present.{li}.key"])
    v_all = g.Concat(f"past_key_values.{li}.value", v, axis=2, outputs=[f"present.{li}.value"])
    n_rep = Hq // Hkv
    if n_rep > 1:  # GQA: query head h reads KV head h // n_rep
        def expand(x):
            return g.Reshape(g.Expand(g.Unsqueeze(x, g.i64(2)), g.i64(1, 1, n_rep, 1, 1)),
                             g.i64(0, Hq, -1, hd))
        k_all, v_all = expand(k_all), expand(v_all)
    scores = g.Add(g.Mul(g.MatMul(q, g.Transpose(k_all, perm=[0, 1, 3, 2])),
                         g.const(1.0 / math.sqrt(hd))), mask_bias)
    o = g.MatMul(g.Softmax(scores, axis=-1), v_all)
    o = g.Reshape(g.Transpose(o, perm=[0, 2, 1, 3]), g.i64(0, 0, Hq * hd))
    return g.MatMul(g.Mul(o, g.Sigmoid(gate)), t.w(name + ".o_proj.weight"))


def mlp(t: Blocks, a: str, name: str) -> str:
    g = t.g
    gate = t.silu(g.MatMul(a, t.w(name + ".gate_proj.weight")))
    return g.MatMul(g.Mul(gate, g.MatMul(a, t.w(name + ".up_proj.weight"))),
                    t.w(name + ".down_proj.weight"))


# ------------------------------------------------------------------------------------------------
# vision_encoder
# ------------------------------------------------------------------------------------------------
def vision_weights(W: Weights, v: VisionDims, tune: Tuning) -> dict:
    p = {}
    d = v.hidden
    pre = "model.visual"
    p[f"{pre}.patch_embed.proj.weight"] = dense(W, f"{pre}.patch_embed.proj.weight",
                                                v.patch_dim, d, 2.0)
    p[f"{pre}.patch_embed.proj.bias"] = rand(W, f"{pre}.patch_embed.proj.bias", (d,), 0.1)
    p[f"{pre}.pos_embed.weight"] = dense(W, f"{pre}.pos_embed.weight", 4 * len(v.pos_freqs), d)
    for b in range(v.depth):
        bp = f"{pre}.blocks.{b}"
        for ln in ("norm1", "norm2"):
            p[f"{bp}.{ln}.weight"] = np.ones((d,), np.float32)
            p[f"{bp}.{ln}.bias"] = np.zeros((d,), np.float32)
        p[f"{bp}.attn.qkv.weight"] = dense(W, f"{bp}.attn.qkv.weight", d, 3 * d, 1.5)
        p[f"{bp}.attn.qkv.bias"] = rand(W, f"{bp}.attn.qkv.bias", (3 * d,), 0.1)
        p[f"{bp}.attn.proj.weight"] = dense(W, f"{bp}.attn.proj.weight", d, d, 0.7)
        p[f"{bp}.attn.proj.bias"] = np.zeros((d,), np.float32)
        p[f"{bp}.mlp.linear_fc1.weight"] = dense(W, f"{bp}.mlp.linear_fc1.weight", d,
                                                 v.intermediate)
        p[f"{bp}.mlp.linear_fc1.bias"] = rand(W, f"{bp}.mlp.linear_fc1.bias",
                                              (v.intermediate,), 0.1)
        p[f"{bp}.mlp.linear_fc2.weight"] = dense(W, f"{bp}.mlp.linear_fc2.weight",
                                                 v.intermediate, d, 0.7)
        p[f"{bp}.mlp.linear_fc2.bias"] = np.zeros((d,), np.float32)
    mp = f"{pre}.merger"
    p[f"{mp}.norm.weight"] = np.ones((d,), np.float32)
    p[f"{mp}.norm.bias"] = np.zeros((d,), np.float32)
    p[f"{mp}.linear_fc1.weight"] = dense(W, f"{mp}.linear_fc1.weight", v.merge_dim, v.merge_dim,
                                         1.5)
    p[f"{mp}.linear_fc1.bias"] = rand(W, f"{mp}.linear_fc1.bias", (v.merge_dim,), 0.1)
    fc2 = dense(W, f"{mp}.linear_fc2.weight", v.merge_dim, v.out_hidden, tune.vision_gain * 1.7)
    fc2[:, :MARKERS] = 0.0
    p[f"{mp}.linear_fc2.weight"] = fc2
    bias = np.zeros((v.out_hidden,), np.float32)
    bias[IMG] = tune.img_value  # the image offset the image heads' keys look for
    p[f"{mp}.linear_fc2.bias"] = bias
    return p


def build_vision(p: dict, v: VisionDims, external=None):
    """pixel_values [Np, 1536] + image_grid_thw [n, 3] -> image_features [Np/4, H].

    Per patch, from the grid (several images concatenated in order): its image, and within
    its frame the merge block (bh, bw) and slot (mh, mw) of spec 2.8 step 6, hence its row
    bh*2+mh and column bw*2+mw. Those give sin/cos position features. Attention is block-diagonal
    per image, so a wrong grid (split or order) changes the output. Groups of 4 consecutive
    patches are merged into one token."""
    g = Graph("vision_encoder", external=external)
    t = Blocks(g, p)
    d, m = v.hidden, v.spatial_merge_size
    pre = "model.visual"
    px = "pixel_values"
    x = g.Add(g.MatMul(px, t.w(f"{pre}.patch_embed.proj.weight")),
              t.w(f"{pre}.patch_embed.proj.bias"))

    grid = "image_grid_thw"
    gt, gh, gw = (g.Squeeze(t.slice_last(grid, c, c + 1), g.i64(1)) for c in range(3))
    counts = g.Mul(g.Mul(gt, gh), gw)  # [n]
    ends = g.CumSum(counts, g.const(0, np.int64))
    n_patches = t.dim(px, 0)
    pidx = g.Range(g.const(0, np.int64), n_patches, g.const(1, np.int64))  # [Np]
    img = g.ReduceSum(g.Cast(g.GreaterOrEqual(g.Unsqueeze(pidx, g.i64(1)),
                                              g.Unsqueeze(ends, g.i64(0))), to=INT64),
                      g.i64(1), keepdims=0)  # [Np] image index of each patch
    local = g.Sub(pidx, g.Gather(g.Sub(ends, counts), img, axis=0))
    ph, pw = g.Gather(gh, img, axis=0), g.Gather(gw, img, axis=0)
    j = g.Mod(local, g.Mul(ph, pw))  # index within the frame
    mm = g.const(m * m, np.int64)
    block, slot = g.Div(j, mm), g.Mod(j, mm)
    bw_count = g.Div(pw, g.const(m, np.int64))
    mc = g.const(m, np.int64)
    row = g.Add(g.Mul(g.Div(block, bw_count), mc), g.Div(slot, mc))
    col = g.Add(g.Mul(g.Mod(block, bw_count), mc), g.Mod(slot, mc))
    freqs = g.const(np.asarray(v.pos_freqs, np.float32)[None, :])
    feats = []
    for coord in (row, col):
        angle = g.Mul(g.Unsqueeze(g.Cast(coord, to=FLOAT), g.i64(1)), freqs)
        feats += [g.Sin(angle), g.Cos(angle)]
    x = g.Add(x, g.MatMul(g.Concat(*feats, axis=1), t.w(f"{pre}.pos_embed.weight")))

    same = g.Equal(g.Unsqueeze(img, g.i64(1)), g.Unsqueeze(img, g.i64(0)))  # [Np, Np]
    attn_bias = g.Where(same, g.const(0.0), g.const(MASKED))
    hd = d // v.heads
    for b in range(v.depth):
        bp = f"{pre}.blocks.{b}"
        a = g.LayerNormalization(x, t.w(f"{bp}.norm1.weight"), t.w(f"{bp}.norm1.bias"),
                                 axis=-1, epsilon=1e-6)
        qkv = g.Add(g.MatMul(a, t.w(f"{bp}.attn.qkv.weight")), t.w(f"{bp}.attn.qkv.bias"))
        qkv = g.Transpose(g.Reshape(qkv, g.i64(0, 3, v.heads, hd)), perm=[1, 2, 0, 3])
        q, k, vv = (g.Squeeze(g.Slice(qkv, g.i64(c), g.i64(c + 1), g.i64(0)), g.i64(0))
                    for c in range(3))  # [heads, Np, hd]
        s = g.Add(g.Mul(g.MatMul(q, g.Transpose(k, perm=[0, 2, 1])),
                        g.const(1.0 / math.sqrt(hd))), attn_bias)
        o = g.MatMul(g.Softmax(s, axis=-1), vv)
        o = g.Reshape(g.Transpose(o, perm=[1, 0, 2]), g.i64(0, d))
        x = g.Add(x, g.Add(g.MatMul(o, t.w(f"{bp}.attn.proj.weight")),
                           t.w(f"{bp}.attn.proj.bias")))
        a = g.LayerNormalization(x, t.w(f"{bp}.norm2.weight"), t.w(f"{bp}.norm2.bias"),
                                 axis=-1, epsilon=1e-6)
        h = gelu(g, g.Add(g.MatMul(a, t.w(f"{bp}.mlp.linear_fc1.weight")),
                          t.w(f"{bp}.mlp.linear_fc1.bias")))
        x = g.Add(x, g.Add(g.MatMul(h, t.w(f"{bp}.mlp.linear_fc2.weight")),
                           t.w(f"{bp}.mlp.linear_fc2.bias")))
    mp = f"{pre}.merger"
    x = g.LayerNormalization(x, t.w(f"{mp}.norm.weight"), t.w(f"{mp}.norm.bias"), axis=-1,
                             epsilon=1e-6)
    x = g.Reshape(x, g.i64(-1, v.merge_dim))
    h = gelu(g, g.Add(g.MatMul(x, t.w(f"{mp}.linear_fc1.weight")),
                      t.w(f"{mp}.linear_fc1.bias")))
    g.Add(g.MatMul(h, t.w(f"{mp}.linear_fc2.weight")), t.w(f"{mp}.linear_fc2.bias"),
          outputs=["image_features"])
    return g.to_model(
        [g.value_info("pixel_values", FLOAT, ["num_patches", v.patch_dim]),
         g.value_info("image_grid_thw", INT64, ["num_images", 3])],
        [g.value_info("image_features", FLOAT, ["num_image_tokens", v.out_hidden])],
        producer=PRODUCER, check=external is None)


# ------------------------------------------------------------------------------------------------
# Cost (analytic, for the log and the README)
# ------------------------------------------------------------------------------------------------
def text_params(dims: TextDims) -> dict:
    H, I = dims.hidden, dims.intermediate
    lin = H * dims.conv_dim + H * dims.value_dim + 2 * H * dims.linear_num_value_heads \
        + dims.conv_dim * dims.linear_conv_kernel_dim + dims.value_dim * H
    full = H * dims.num_attention_heads * dims.head_dim * 2 \
        + 2 * H * dims.num_key_value_heads * dims.head_dim \
        + dims.num_attention_heads * dims.head_dim * H
    mlp_p = 3 * H * I
    layers = sum(lin if k == "linear_attention" else full for k in dims.layer_types)
    layers += dims.layers * mlp_p
    return {"embed_tokens": dims.vocab_size * H,
            "decoder_model_merged": layers + dims.vocab_size * H}


def vision_cost(v: VisionDims, patches: int) -> tuple[int, int]:
    """(params, MACs for one image of `patches` patches)."""
    d = v.hidden
    block = 4 * d * d + 2 * d * v.intermediate
    params = v.patch_dim * d + v.depth * block + v.merge_dim ** 2 + v.merge_dim * v.out_hidden
    macs = patches * (v.patch_dim * d + v.depth * block) + v.depth * 2 * patches * patches * d \
        + patches // 4 * (v.merge_dim ** 2 + v.merge_dim * v.out_hidden)
    return params, macs
