#!/usr/bin/env python3
"""Independent NumPy (float64) reference of the ODE_t(ODE_l) DiT forward, written from the spec text
(/work/shared/docs/paper-spec.md §1.2-§1.6, §1.8) only, for configurations the official golden does not cover:
patch 4 / 1 channel / odd head count, 3 channels / a single class / depth not a multiple of the group, and the
conventional (no BlockEmbedder) path.

Writes dit_configs.npz (param/<cfg>/<flax path> stored float16 -- exact values, the reference computes in float64
from the decoded values -- and in/<cfg>/*, out/<cfg>/* stored float32) and dit_configs.json (configs and cases).
Run: python3 dit_reference.py   (numpy only; deterministic seed)
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    # (a) patch 4, 1 channel, odd head count (3), lengths on the group grid, training path.
    "a": dict(input_size=16, in_channels=1, patch_size=4, hidden_size=48, depth=6, num_heads=3, mlp_hidden=72,
              num_classes=10, depth_group=2, depth_min=2, length_embedding=True, latent_scale=1.0),
    # (b) 3 channels, depth 5 not a multiple of the group 2, 5 heads, a single class (null = 1).
    "b": dict(input_size=8, in_channels=3, patch_size=2, hidden_size=40, depth=5, num_heads=5, mlp_hidden=80,
              num_classes=1, depth_group=2, depth_min=1, length_embedding=True, latent_scale=1.0),
    # (c) conventional shortcut-models path: no BlockEmbedder, plain sequential blocks on c.
    "c": dict(input_size=8, in_channels=4, patch_size=2, hidden_size=32, depth=3, num_heads=1, mlp_hidden=64,
              num_classes=5, depth_group=1, depth_min=1, length_embedding=False, latent_scale=1.0),
}


# ----------------------------------------------------------------------------------------------- parameters
def param_shapes(cfg):
    h, p, C, m = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"], cfg["mlp_hidden"]
    s = {
        "PatchEmbed_0/Conv_0/kernel": (p, p, C, h),
        "PatchEmbed_0/Conv_0/bias": (h,),
        "LabelEmbedder_0/Embed_0/embedding": (cfg["num_classes"] + 1, h),
        "FinalLayer_0/Dense_0/kernel": (h, 2 * h),
        "FinalLayer_0/Dense_0/bias": (2 * h,),
        "FinalLayer_0/Dense_1/kernel": (h, p * p * C),
        "FinalLayer_0/Dense_1/bias": (p * p * C,),
    }
    for te in ("TimestepEmbedder_0", "TimestepEmbedder_1"):
        s[f"{te}/Dense_0/kernel"] = (256, h)
        s[f"{te}/Dense_0/bias"] = (h,)
        s[f"{te}/Dense_1/kernel"] = (h, h)
        s[f"{te}/Dense_1/bias"] = (h,)
    if cfg["length_embedding"]:
        s["BlockEmbedder_0/Embed_0/embedding"] = (cfg["depth"] + 1, h)
    for i in range(cfg["depth"]):
        b = f"DiTBlock_{i}"
        s[f"{b}/Dense_0/kernel"] = (h, 6 * h)
        s[f"{b}/Dense_0/bias"] = (6 * h,)
        for d in range(1, 5):
            s[f"{b}/Dense_{d}/kernel"] = (h, h)
            s[f"{b}/Dense_{d}/bias"] = (h,)
        s[f"{b}/MlpBlock_0/Dense_0/kernel"] = (h, m)
        s[f"{b}/MlpBlock_0/Dense_0/bias"] = (m,)
        s[f"{b}/MlpBlock_0/Dense_1/kernel"] = (m, h)
        s[f"{b}/MlpBlock_0/Dense_1/bias"] = (h,)
    return s


def random_params(cfg, rng):
    """Random values with O(1) activations; rounded to float16 so the stored file holds them exactly."""
    out = {}
    for name, shape in sorted(param_shapes(cfg).items()):
        if name.endswith("/kernel"):
            fan_in = int(np.prod(shape[:-1]))
            v = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif name.endswith("/bias"):
            v = 0.1 * rng.standard_normal(shape)
        else:  # embedding tables
            v = 0.5 * rng.standard_normal(shape)
        out[name] = v.astype(np.float16)
    return out


# ----------------------------------------------------------------------------------------------- model (§1)
def pos_embed(D, G):
    """§1.2: token p = i*G + j (i row, j column); first half encodes the column j, each half [sin, cos]."""
    K = D // 4
    omega = 1.0 / 10000.0 ** (np.arange(K, dtype=np.float64) / K)
    i, j = np.meshgrid(np.arange(G), np.arange(G), indexing="ij")
    i = i.reshape(-1).astype(np.float64)
    j = j.reshape(-1).astype(np.float64)
    aj = j[:, None] * omega[None]
    ai = i[:, None] * omega[None]
    return np.concatenate([np.sin(aj), np.cos(aj), np.sin(ai), np.cos(ai)], axis=1)  # [G*G, D]


def timestep_features(t):
    """§1.3: raw t, 128 frequencies exp(-ln(1e4) k/128), cos FIRST then sin -> [B, 256]."""
    freqs = np.exp(-np.log(10000.0) * np.arange(128, dtype=np.float64) / 128.0)
    args = np.asarray(t, np.float64)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=1)


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def dense(P, prefix, x):
    return x @ P[f"{prefix}/kernel"] + P[f"{prefix}/bias"]


def timestep_embedder(P, prefix, t):
    return dense(P, f"{prefix}/Dense_1", silu(dense(P, f"{prefix}/Dense_0", timestep_features(t))))


def patch_embed(P, x, p):
    """Conv p x p, stride p, VALID, NHWC input, HWIO kernel."""
    B, S, _, C = x.shape
    G = S // p
    k = P["PatchEmbed_0/Conv_0/kernel"]  # [p, p, C, H]
    H = k.shape[-1]
    tok = np.zeros((B, G, G, H))
    for a in range(p):
        for b in range(p):
            tok += np.einsum("bijc,co->bijo", x[:, a::p, b::p, :], k[a, b])
    tok += P["PatchEmbed_0/Conv_0/bias"]
    return tok.reshape(B, G * G, H)


def dit_block(P, i, x, cond, heads):
    b = f"DiTBlock_{i}"
    B, T, H = x.shape
    hd = H // heads
    m = dense(P, f"{b}/Dense_0", silu(cond))  # [B, 6H]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = np.split(m, 6, axis=-1)
    h = layer_norm(x) * (1.0 + scale_msa[:, None]) + shift_msa[:, None]
    k = dense(P, f"{b}/Dense_1", h).reshape(B, T, heads, hd)
    q = dense(P, f"{b}/Dense_2", h).reshape(B, T, heads, hd)
    v = dense(P, f"{b}/Dense_3", h).reshape(B, T, heads, hd)
    q = q / hd
    logits = np.einsum("bqhc,bkhc->bhqk", q, k)
    logits = logits - logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w = w / w.sum(-1, keepdims=True)
    y = np.einsum("bhqk,bkhc->bqhc", w, v).reshape(B, T, H)
    x = x + gate_msa[:, None] * dense(P, f"{b}/Dense_4", y)
    h2 = layer_norm(x) * (1.0 + scale_mlp[:, None]) + shift_mlp[:, None]
    mlp = dense(P, f"{b}/MlpBlock_0/Dense_1", gelu_tanh(dense(P, f"{b}/MlpBlock_0/Dense_0", h2)))
    return x + gate_mlp[:, None] * mlp


def final_layer(P, x, c):
    m = dense(P, "FinalLayer_0/Dense_0", silu(c))
    shift, scale = np.split(m, 2, axis=-1)  # shift FIRST
    x = layer_norm(x) * (1.0 + scale[:, None]) + shift[:, None]
    return dense(P, "FinalLayer_0/Dense_1", x)


def unpatchify(out, p, C):
    """§1.4: v[b, p*h + a, p*w + q, c] = out[b, h*G + w, (a*p + q)*C + c]."""
    B, T, _ = out.shape
    G = int(round(np.sqrt(T)))
    o = out.reshape(B, G, G, p, p, C).transpose(0, 1, 3, 2, 4, 5)
    return o.reshape(B, G * p, G * p, C)


def forward(cfg, P, t, x, dt_base, y, length=None, blocks=None):
    """length: inference path (depth_wise = length, blocks 0..length-1); blocks: per-sample training path."""
    p, C, H = cfg["patch_size"], cfg["in_channels"], cfg["hidden_size"]
    G = cfg["input_size"] // p
    tok = patch_embed(P, x, p) + pos_embed(H, G)[None]
    c = (timestep_embedder(P, "TimestepEmbedder_0", t)
         + P["LabelEmbedder_0/Embed_0/embedding"][np.asarray(y)]
         + timestep_embedder(P, "TimestepEmbedder_1", dt_base))
    B = x.shape[0]
    if cfg["length_embedding"]:
        if blocks is None:
            n_loop = length
            block = np.full(B, length)
        else:
            n_loop = cfg["depth"]
            block = np.asarray(blocks)
        cb = c + P["BlockEmbedder_0/Embed_0/embedding"][block]
        g = cfg["depth_group"]
        xr = tok
        vr = np.zeros_like(tok)
        for i in range(n_loop):
            delta = (i < block).astype(np.float64)[:, None, None]
            vb = dit_block(P, i, xr, cb, cfg["num_heads"])
            if i % g == g - 1:
                xr = xr + delta * vb
                vr = vr + delta * vb
            else:
                xr = vb
        h = vr
    else:
        h = tok
        for i in range(cfg["depth"]):
            h = dit_block(P, i, h, c, cfg["num_heads"])
    return unpatchify(final_layer(P, h, c), p, C)


# ----------------------------------------------------------------------------------------------- self-checks
def self_check():
    pe = pos_embed(768, 16)
    assert abs(pe[1, 0] - 0.84147096) < 1e-7 and abs(pe[1, 192] - 0.54030228) < 1e-7
    assert abs(pe[1, 384]) < 1e-12 and abs(pe[1, 576] - 1) < 1e-12
    assert abs(pe[16, 0]) < 1e-12 and abs(pe[16, 384] - 0.84147096) < 1e-7
    assert abs(pe[17, 1] - 0.81525064) < 1e-7 and abs(pe[17, 385] - 0.81525064) < 1e-7
    assert abs(pe[255, 100] - 0.12349458) < 1e-6 and abs(pe[255, 500] - 0.05743616) < 1e-6
    e = timestep_features([0.5, 7.0])
    assert abs(e[0, 0] - 0.87758255) < 1e-7 and abs(e[0, 1] - 0.89369327) < 1e-7
    assert abs(e[0, 127] - 1.0) < 1e-6 and abs(e[0, 128] - 0.47942555) < 1e-7
    assert abs(e[0, 129] - 0.44867843) < 1e-7
    # (the spec's values come from float32 frequencies: ~3e-7 away from float64 at t = 7)
    assert abs(e[1, 0] - 0.75390226) < 1e-6 and abs(e[1, 5] - 0.17157170) < 1e-6
    assert abs(e[1, 133] + 0.98517162) < 1e-6
    # Unpatchify index rule against an explicit loop.
    p, C, G = 3, 2, 2
    out = np.arange(1 * G * G * p * p * C, dtype=np.float64).reshape(1, G * G, p * p * C)
    v = unpatchify(out, p, C)
    for hh in range(G):
        for ww in range(G):
            for a in range(p):
                for q in range(p):
                    for cc in range(C):
                        assert v[0, p * hh + a, p * ww + q, cc] == out[0, hh * G + ww, (a * p + q) * C + cc]


# ----------------------------------------------------------------------------------------------- cases
def main():
    self_check()
    rng = np.random.default_rng(20261127)
    arrays = {}
    meta = {"description": "independent NumPy float64 reference (dit_reference.py) of the DiT forward; "
                           "params float16 (exact), inputs/outputs float32; dt_base as float",
            "configs": {}, "cases": []}
    B = 3
    for name, cfg in CONFIGS.items():
        P16 = random_params(cfg, rng)
        P = {k: v.astype(np.float64) for k, v in P16.items()}
        for k, v in P16.items():
            arrays[f"param/{name}/{k}"] = v
        S, C = cfg["input_size"], cfg["in_channels"]
        x = rng.standard_normal((B, S, S, C)).astype(np.float32)
        t = rng.uniform(0.0, 1.0, B).astype(np.float32)
        dt = rng.integers(0, 8, B).astype(np.float32)
        nc = cfg["num_classes"]
        y = np.array([nc, 0, rng.integers(0, nc + 1)], dtype=np.int64)  # null, class 0, random
        for k, v in (("x", x), ("t", t), ("dt_base", dt), ("y", y)):
            arrays[f"in/{name}/{k}"] = v
        args = (t.astype(np.float64), x.astype(np.float64), dt.astype(np.float64), y.astype(np.int64))
        meta["configs"][name] = cfg
        if name == "b":
            # Block 4 of config b is dead (4 % 2 != 1, no later group end): perturbing it changes nothing at
            # length 5. (Length 5 does NOT equal length 4: BlockEmbedder row 5 vs row 4 conditions blocks 0..3.)
            Q = dict(P)
            for k in [k for k in P if k.startswith("DiTBlock_4/")]:
                Q[k] = P[k] + 1.0
            assert np.array_equal(forward(cfg, P, *args, length=5), forward(cfg, Q, *args, length=5))
            # Length 1 reaches no group end: the output is the final layer on zeros, whatever the blocks.
            Z = {k: (v * 0 if k.startswith("DiTBlock_") else v) for k, v in P.items()}
            assert np.array_equal(forward(cfg, P, *args, length=1), forward(cfg, Z, *args, length=1))
        if cfg["length_embedding"]:
            for l in range(1, cfg["depth"] + 1):
                if name == "a" and l % 2 == 1:
                    continue
                v = forward(cfg, P, *args, length=l)
                key = f"out/{name}/l{l}"
                arrays[key] = v.astype(np.float32)
                meta["cases"].append({"config": name, "kind": "length", "l": l, "key": key})
            blocks = {"a": [2, 6, 4], "b": [5, 1, 3]}[name]
            v = forward(cfg, P, *args, blocks=blocks)
            key = f"out/{name}/blocks"
            arrays[key] = v.astype(np.float32)
            arrays[f"in/{name}/blocks"] = np.array(blocks, dtype=np.int64)
            meta["cases"].append({"config": name, "kind": "blocks", "blocks": blocks, "key": key})
            # Consistency of the reference with itself: training sample i == inference at blocks[i].
            for i, l in enumerate(blocks):
                vi = forward(cfg, P, *args, length=l)
                assert np.abs(vi[i] - v[i]).max() < 1e-12, (name, i, l)
        else:
            v = forward(cfg, P, *args)
            key = f"out/{name}/full"
            arrays[key] = v.astype(np.float32)
            meta["cases"].append({"config": name, "kind": "length", "l": cfg["depth"], "key": key})
    np.savez(os.path.join(HERE, "dit_configs.npz"), **arrays)
    with open(os.path.join(HERE, "dit_configs.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for c in meta["cases"]:
        a = arrays[c["key"]]
        print(c["key"], a.shape, "abs mean %.4f" % np.abs(a).mean())


if __name__ == "__main__":
    main()
