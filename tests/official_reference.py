"""Independent reference for the official-checkpoint import: the papers' networks as plain functions of
their *official* state dicts, written with ``torch.nn.functional`` from the official code's semantics.

Nothing here uses ``edge_derain.models``: tensors are looked up by the official names (the keys of
``tests/fixtures/official_keys_<model>.json``), so a wrong rename or a swapped pair of same-shaped
tensors in the importer shows up as a numeric difference. The configuration (heads, PReLU or GELU,
number of blocks) is read from the names and shapes, as the importer does, but independently.

Deliberately different formulations from our modules: bilinear ×0.5 is ``interpolate`` (ours: average
pool), LayerNorm is ``F.layer_norm`` on NHWC, the sub-pixel shuffle is written out by its index formula,
the dilation filter is a sum of shifted zero-padded copies.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Weights = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Random weights of a sensible scale under the official names
# --------------------------------------------------------------------------------------------------

def random_official_state(shapes: dict[str, list[int]], seed: int = 0) -> Weights:
    """Random tensors for every (name, shape); shared official names (one PReLU saved under many
    names) get one value, as the official code's state dict has."""
    gen = torch.Generator().manual_seed(seed)
    state: Weights = {}
    prelu = {}
    for name, shape in shapes.items():
        shape = tuple(shape)
        if name.endswith("temperature"):
            value = 0.75 + 0.5 * torch.rand(shape, generator=gen)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        elif shape == (1,) and name.endswith(".weight"):  # a PReLU slope
            owner = _prelu_owner(name)
            if owner not in prelu:
                prelu[owner] = 0.5 * torch.rand(shape, generator=gen)
            value = prelu[owner]
        elif name.endswith(".body.weight"):  # LayerNorm gamma
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:  # biases, LayerNorm beta
            value = 0.1 * torch.randn(shape, generator=gen)
        state[name] = value.clone()
    return state


def _prelu_owner(name: str) -> str:
    """The official code shares one PReLU per sub-network (``dsnet``/``ssnet``); FeedForward PReLUs
    (``act1``) are their own."""
    return name if ".act1." in name else name.split(".")[0]


# --------------------------------------------------------------------------------------------------
# Layers by official name
# --------------------------------------------------------------------------------------------------

def conv(w: Weights, name: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    weight = w[f"{name}.weight"]
    groups = x.shape[1] // weight.shape[1]
    return F.conv2d(x, weight, w.get(f"{name}.bias"), stride=stride, padding=weight.shape[-1] // 2, groups=groups)


def prelu(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.prelu(x, w[f"{name}.weight"])


def bilinear(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def calayer(w, name, x):
    y = x.mean(dim=(2, 3), keepdim=True)
    y = torch.sigmoid(conv(w, f"{name}.conv_du.2", F.relu(conv(w, f"{name}.conv_du.0", y))))
    return x * y


def dsc(w, name, x):
    return conv(w, f"{name}.point_conv", conv(w, f"{name}.depth_conv", x))


def s2fb_2(w, name, x1, x2):
    return calayer(w, f"{name}.CA_fea", dsc(w, f"{name}.DSC", torch.cat([x1, x2], 1))) + x1


def s2fb_p(w, name, x1, x2, x3, x4):
    a = dsc(w, f"{name}.DSC1", torch.cat([x3, x4], 1))
    b = dsc(w, f"{name}.DSC2", torch.cat([x2, a], 1))
    c = dsc(w, f"{name}.DSC3", torch.cat([x1, b], 1))
    return calayer(w, f"{name}.CA_fea", c) + c


def cab(w, name, x, layer=conv, fused=False):
    """CAB; with ``layer=dsc, fused=True`` CAB_dsc, with ``fused=True`` ECAB."""
    res = layer(w, f"{name}.body.2", prelu(w, f"{name}.body.1", layer(w, f"{name}.body.0", x)))
    res = calayer(w, f"{name}.CA", res)
    return s2fb_2(w, f"{name}.S2FB2", res, x) if fused else res + x


def resample(w, name, x, scale):
    """DownSample/UpSample{,4}: ``Sequential(Upsample(scale), conv1x1)``, the conv at index 1."""
    kind = "down" if scale < 1 else "up"
    return conv(w, f"{name}.{kind}.1", bilinear(x, scale))


def _blocks(w, prefix):
    count = 0
    while f"{prefix}.CAB{count + 1}.CA.conv_du.0.weight" in w:
        count += 1
    return count


def encoder(w, name, x):
    outs = []
    for level in (1, 2, 3):
        x = resample(w, f"{name}.down_stage{level}", x, 0.5)
        stage = f"{name}.encoder_level{level}"
        y = x
        for b in range(_blocks(w, stage)):
            y = cab(w, f"{stage}.CAB{b + 1}", y, layer=dsc, fused=True)
        x = s2fb_2(w, f"{stage}.S2FB2", x, y)
        outs.append(x)
    return outs


def _decoder_stage(w, stage, x, s1, s2, s3):
    f = s2fb_p(w, f"{stage}.S2FB0", x, s1, s2, s3)
    blocks = _blocks(w, stage)
    y = f
    for b in range(blocks):
        y = cab(w, f"{stage}.CAB{b + 1}", y, fused=blocks == 2)
    return s2fb_2(w, f"{stage}.S2FB2", f, y)


def decoder(w, name, enc1, enc2, enc3):
    dec3 = _decoder_stage(w, f"{name}.decoder_level3", enc3, enc3, resample(w, f"{name}.down_23", enc2, 0.5),
                          resample(w, f"{name}.down_13", enc1, 0.25))
    dec2 = _decoder_stage(w, f"{name}.decoder_level2", resample(w, f"{name}.up_stage3", dec3, 2), enc2,
                          resample(w, f"{name}.down_12", enc1, 0.5), resample(w, f"{name}.up_32", enc3, 2))
    dec1 = _decoder_stage(w, f"{name}.decoder_level1", resample(w, f"{name}.up_stage2", dec2, 2), enc1,
                          resample(w, f"{name}.up_21", enc2, 2), resample(w, f"{name}.up_31", enc3, 4))
    return resample(w, f"{name}.up_stage1", dec1, 2)


def layernorm(w, name, x):
    """WithBias LayerNorm over channels of each pixel."""
    weight = w[f"{name}.body.weight"]
    y = F.layer_norm(x.permute(0, 2, 3, 1), weight.shape, weight, w[f"{name}.body.bias"], eps=1e-5)
    return y.permute(0, 3, 1, 2)


def feedforward(w, name, x):
    x1, x2 = conv(w, f"{name}.dwconv", conv(w, f"{name}.project_in", x)).chunk(2, dim=1)
    gate = prelu(w, f"{name}.act1", x1) if f"{name}.act1.weight" in w else F.gelu(x1)
    return conv(w, f"{name}.project_out", gate * x2)


def channel_attention(q, k, v, temperature):
    b, c, h, wd = q.shape
    heads = temperature.shape[0]
    q, k, v = (t.reshape(b, heads, c // heads, h * wd) for t in (q, k, v))
    attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * temperature
    return (attn.softmax(dim=-1) @ v).reshape(b, c, h, wd)


def restormer_block(w, name, x):
    qkv = conv(w, f"{name}.attn.qkv_dwconv", conv(w, f"{name}.attn.qkv", layernorm(w, f"{name}.norm1", x)))
    x = x + conv(w, f"{name}.attn.project_out", channel_attention(*qkv.chunk(3, dim=1), w[f"{name}.attn.temperature"]))
    return x + feedforward(w, f"{name}.ffn", layernorm(w, f"{name}.norm2", x))


def cross_block(w, name, key, query, value):
    """ELF's ``TransformerBlock(key, query, value)``: its Attention takes (q, k, v) positionally, so the
    queries come from ``norm_key(key)``."""
    q = conv(w, f"{name}.attn.q", layernorm(w, f"{name}.norm_key", key))
    k = conv(w, f"{name}.attn.k", layernorm(w, f"{name}.norm_query", query))
    v = conv(w, f"{name}.attn.v", layernorm(w, f"{name}.norm_value", value))
    x = value + conv(w, f"{name}.attn.project_out", channel_attention(q, k, v, w[f"{name}.attn.temperature"]))
    return x + feedforward(w, f"{name}.ffn", layernorm(w, f"{name}.norm2", x))


def shuffle_up(x):
    """The code's sub-pixel ×2: ``out[c, 2y+dy, 2x+dx] = in[4c + 2dx + dy, y, x]``."""
    n, c4, h, wd = x.shape
    out = x.new_empty(n, c4 // 4, 2 * h, 2 * wd)
    for dy in (0, 1):
        for dx in (0, 1):
            out[:, :, dy::2, dx::2] = x[:, 2 * dx + dy::4]
    return out


# --------------------------------------------------------------------------------------------------
# Whole networks
# --------------------------------------------------------------------------------------------------

def efderain_forward(w: Weights, image: torch.Tensor) -> torch.Tensor:
    """KPN + KernelConv at rates 1-4 + conv_final. Kernels: 27 channels = 3 colours x 9 taps."""
    def basic(name, x):
        for i in (0, 2, 4):
            x = F.relu(conv(w, f"{name}.conv1.{i}", x))
        return x

    c1 = basic("conv1", image)
    c2 = basic("conv2", F.avg_pool2d(c1, 2))
    c3 = basic("conv3", F.avg_pool2d(c2, 2))
    c4 = basic("conv4", F.avg_pool2d(c3, 2))
    c5 = basic("conv5", F.avg_pool2d(c4, 2))
    c6 = basic("conv6", torch.cat([c4, bilinear(c5, 2)], 1))
    c7 = basic("conv7", torch.cat([c3, bilinear(c6, 2)], 1))
    c8 = basic("conv8", torch.cat([c2, bilinear(c7, 2)], 1))
    core = conv(w, "outc", bilinear(c8, 2))
    n, c, h, wd = image.shape
    kernels = core.reshape(n, c, 3, 3, h, wd)
    filtered = []
    for rate in (1, 2, 3, 4):
        padded = F.pad(image, (rate, rate, rate, rate))
        out = torch.zeros_like(image)
        for i in range(3):
            for j in range(3):
                out = out + kernels[:, :, i, j] * padded[..., i * rate:i * rate + h, j * rate:j * rate + wd]
        filtered.append(out)
    return conv(w, "conv_final", torch.cat(filtered, 1))


def _quadrants(x):
    h, wd = x.shape[2] // 2, x.shape[3] // 2
    return torch.cat([x[..., :h, :wd], x[..., :h, wd:], x[..., h:, :wd], x[..., h:, wd:]], 1)


def _chain(w, name, x, block, probe):
    """Apply ``block`` at ``name.0``, ``name.1``, ... while ``name.i.probe`` exists; return (x, count)."""
    i = 0
    while f"{name}.{i}.{probe}" in w:
        x = block(w, f"{name}.{i}", x)
        i += 1
    return x, i


def _orb(w, name, x):
    """ELF's ORB is ``modules_body`` (Restormer blocks) + ``conv``; DANet's ``body`` = CABs + conv."""
    if f"{name}.conv.weight" in w:
        y, _ = _chain(w, f"{name}.modules_body", x, restormer_block, "norm1.body.weight")
        return conv(w, f"{name}.conv", y) + x
    y, cabs = _chain(w, f"{name}.body", x, cab, "CA.conv_du.0.weight")
    return conv(w, f"{name}.body.{cabs}", y) + x


def _two_branch(w, net, prefix, x):
    """``S2FB_fuse(orsnet(x), decoder(encoder(x)))``."""
    enc = encoder(w, f"{net}.{prefix}_encoder", x)
    return s2fb_2(w, f"{net}.S2FB_fuse", _orb(w, f"{net}.orsnet.orb", x), decoder(w, f"{net}.{prefix}_decoder", *enc))


def two_stage_forward(w: Weights, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ALformer (ELF) or DANet: ``[full-resolution output, half-resolution background]``."""
    elf = "ssnet.stem.former.attn.temperature" in w
    # dsnet
    half = bilinear(image, 0.5)
    f_half = cab(w, "dsnet.shallow_feat1.1", conv(w, "dsnet.shallow_feat1.0", half))
    f_quad = cab(w, "dsnet.shallow_feat2.1", conv(w, "dsnet.shallow_feat2.0", _quadrants(image)))
    if elf:
        f_quad = restormer_block(w, "dsnet.former.0", f_quad)
    fused = conv(w, "dsnet.fuse_conv", torch.cat([f_half, f_quad], 1))
    rain = conv(w, "dsnet.tail", _two_branch(w, "dsnet", "dsnnet", fused))
    background = half - rain
    # ssnet.stem
    img_down = conv(w, "ssnet.stem.conv_stem0", image, stride=2)
    res_fea = conv(w, "ssnet.stem.conv_stem2", rain)
    img_fea = conv(w, "ssnet.stem.conv_stem3", background)
    if elf:
        enhanced = s2fb_2(w, "ssnet.stem.S2FB", img_fea,
                          cross_block(w, "ssnet.stem.former", res_fea, img_down, img_down))
    else:
        enhanced = img_down * torch.sigmoid(res_fea) + img_down + img_fea
    # ssnet
    g = _two_branch(w, "ssnet", "ssnnet", enhanced)
    if elf:
        g = restormer_block(w, "ssnet.former.0", g)
    out = conv(w, "ssnet.tail", shuffle_up(conv(w, "ssnet.deep_conv", g))) + bilinear(background, 2)
    return out, background
