"""Independent NumPy (float64) reference of the diffusers AutoencoderKL for a tiny configuration.

Writes vae_tiny.npz next to this file: random weights under "w.<diffusers name>" (current attention names,
linear [C, C] projections), decoder input "z" [2,4,6,5] (RAW latents) and output "decoded" [2,3,12,10], encoder
input "x" [2,3,12,10] and posterior "enc_mean"/"enc_logvar" [2,4,6,5]. All float32 on disk.

Configuration (keep in sync with nodes/tests/vae.rs `golden_cfg`): in/out channels 3, latent 4,
block_out_channels [8, 16], layers_per_block 1, norm_num_groups 4, eps 1e-6, mid attention, quant convs.

Run once: python3 vae_tiny_reference.py (needs only numpy).
"""
import os

import numpy as np

IN_CH, OUT_CH, LAT = 3, 3, 4
BLOCKS = [8, 16]
LAYERS = 1
GROUPS = 4
EPS = 1e-6

rng = np.random.default_rng(20240611)
W = {}


def param(name, shape):
    if name.endswith(".bias"):
        v = 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1:
        v = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    W[name] = v.astype(np.float32).astype(np.float64)
    return W[name]


def conv_params(p, cin, cout, k):
    param(p + ".weight", (cout, cin, k, k))
    param(p + ".bias", (cout,))


def norm_params(p, c):
    param(p + ".weight", (c,))
    param(p + ".bias", (c,))


def resnet_params(p, cin, cout):
    norm_params(p + ".norm1", cin)
    conv_params(p + ".conv1", cin, cout, 3)
    norm_params(p + ".norm2", cout)
    conv_params(p + ".conv2", cout, cout, 3)
    if cin != cout:
        conv_params(p + ".conv_shortcut", cin, cout, 1)


def mid_params(p, c):
    resnet_params(p + ".resnets.0", c, c)
    a = p + ".attentions.0"
    norm_params(a + ".group_norm", c)
    for proj in ["to_q", "to_k", "to_v", "to_out.0"]:
        param(a + "." + proj + ".weight", (c, c))
        param(a + "." + proj + ".bias", (c,))
    resnet_params(p + ".resnets.1", c, c)


# ---- parameters (creation order only matters for the RNG stream) ----
top, first = BLOCKS[-1], BLOCKS[0]
conv_params("encoder.conv_in", IN_CH, first, 3)
cin = first
for i, cout in enumerate(BLOCKS):
    for j in range(LAYERS):
        resnet_params(f"encoder.down_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
    if i + 1 < len(BLOCKS):
        conv_params(f"encoder.down_blocks.{i}.downsamplers.0.conv", cout, cout, 3)
    cin = cout
mid_params("encoder.mid_block", top)
norm_params("encoder.conv_norm_out", top)
conv_params("encoder.conv_out", top, 2 * LAT, 3)
conv_params("quant_conv", 2 * LAT, 2 * LAT, 1)
conv_params("post_quant_conv", LAT, LAT, 1)
conv_params("decoder.conv_in", LAT, top, 3)
mid_params("decoder.mid_block", top)
rev = BLOCKS[::-1]
cin = top
for i, cout in enumerate(rev):
    for j in range(LAYERS + 1):
        resnet_params(f"decoder.up_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
    if i + 1 < len(BLOCKS):
        conv_params(f"decoder.up_blocks.{i}.upsamplers.0.conv", cout, cout, 3)
    cin = cout
norm_params("decoder.conv_norm_out", first)
conv_params("decoder.conv_out", first, OUT_CH, 3)


# ---- ops ----
def conv(x, p, stride=1, pad=None):
    w, b = W[p + ".weight"], W[p + ".bias"]
    k = w.shape[2]
    if pad is None:
        pad = k // 2
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    bsz, _, h, wd = x.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((bsz, w.shape[0], ho, wo))
    for di in range(k):
        for dj in range(k):
            patch = x[:, :, di:di + stride * (ho - 1) + 1:stride, dj:dj + stride * (wo - 1) + 1:stride]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, di, dj])
    return out + b[None, :, None, None]


def group_norm(x, p):
    bsz, c, h, w = x.shape
    g = x.reshape(bsz, GROUPS, -1)
    mean = g.mean(axis=2, keepdims=True)
    var = ((g - mean) ** 2).mean(axis=2, keepdims=True)
    g = (g - mean) / np.sqrt(var + EPS)
    x = g.reshape(bsz, c, h, w)
    return x * W[p + ".weight"][None, :, None, None] + W[p + ".bias"][None, :, None, None]


def silu(x):
    return x / (1.0 + np.exp(-x))


def resnet(x, p):
    h = conv(silu(group_norm(x, p + ".norm1")), p + ".conv1")
    h = conv(silu(group_norm(h, p + ".norm2")), p + ".conv2")
    skip = conv(x, p + ".conv_shortcut") if (p + ".conv_shortcut.weight") in W else x
    return skip + h


def linear(t, p):
    return t @ W[p + ".weight"].T + W[p + ".bias"]


def attention(x, p):
    bsz, c, h, w = x.shape
    t = group_norm(x, p + ".group_norm").reshape(bsz, c, h * w).transpose(0, 2, 1)
    q, k, v = linear(t, p + ".to_q"), linear(t, p + ".to_k"), linear(t, p + ".to_v")
    s = q @ k.transpose(0, 2, 1) / np.sqrt(c)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    s = s / s.sum(axis=-1, keepdims=True)
    o = linear(s @ v, p + ".to_out.0")
    return x + o.transpose(0, 2, 1).reshape(bsz, c, h, w)


def mid(x, p):
    return resnet(attention(resnet(x, p + ".resnets.0"), p + ".attentions.0"), p + ".resnets.1")


def decode(z):
    x = conv(z, "post_quant_conv")
    x = conv(x, "decoder.conv_in")
    x = mid(x, "decoder.mid_block")
    for i in range(len(BLOCKS)):
        for j in range(LAYERS + 1):
            x = resnet(x, f"decoder.up_blocks.{i}.resnets.{j}")
        if i + 1 < len(BLOCKS):
            x = x.repeat(2, axis=2).repeat(2, axis=3)
            x = conv(x, f"decoder.up_blocks.{i}.upsamplers.0.conv")
    x = silu(group_norm(x, "decoder.conv_norm_out"))
    return conv(x, "decoder.conv_out")


def encode(x):
    x = conv(x, "encoder.conv_in")
    for i in range(len(BLOCKS)):
        for j in range(LAYERS):
            x = resnet(x, f"encoder.down_blocks.{i}.resnets.{j}")
        if i + 1 < len(BLOCKS):
            x = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
            x = conv(x, f"encoder.down_blocks.{i}.downsamplers.0.conv", stride=2, pad=0)
    x = mid(x, "encoder.mid_block")
    x = silu(group_norm(x, "encoder.conv_norm_out"))
    x = conv(x, "encoder.conv_out")
    x = conv(x, "quant_conv")
    return x[:, :LAT], np.clip(x[:, LAT:], -30.0, 20.0)


z = rng.standard_normal((2, LAT, 6, 5)).astype(np.float32).astype(np.float64)
x = rng.uniform(-1.0, 1.0, (2, IN_CH, 12, 10)).astype(np.float32).astype(np.float64)
decoded = decode(z)
mean, logvar = encode(x)
out = {"w." + k: v.astype(np.float32) for k, v in W.items()}
out.update(
    z=z.astype(np.float32),
    decoded=decoded.astype(np.float32),
    x=x.astype(np.float32),
    enc_mean=mean.astype(np.float32),
    enc_logvar=logvar.astype(np.float32),
)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae_tiny.npz")
np.savez(path, **out)
print(f"wrote {path}: {len(W)} weights, decoded std {decoded.std():.4f}, mean std {mean.std():.4f}")
