"""DDSA: a Restormer-shaped deraining Transformer with dynamic dual (dense + top-k sparse) self-attention
and a spatially enhanced feed-forward network (arXiv 2308.07781; MODELS_SPEC §4).

No official code exists; the spec reconstructs the model from the paper, Restormer (U-shape,
projections, LayerNorm) and DRSformer (top-k masking). Every block is a DATB:
``x = x + DualAttention(LN(x)); x = x + SEFN(LN(x))`` with the WithBias channel LayerNorm.

Layout (base width C = 48, all convs bias-free except the spatial gate, spec §4.2 table): 3x3
embedding; encoder levels of 4, 6, 6 DATBs (C/2C/4C channels, 1/2/4 heads) and an 8-block latent (8C,
8 heads), each level change a 3x3 conv halving the channels + PixelUnshuffle(2); mirrored decoder with
3x3 conv + PixelShuffle(2) up-sampling, skip concatenation and a 1x1 channel reduction (none at full
resolution, which keeps 2C channels); 2 refinement DATBs; 3x3 output conv plus the global residual
``I_derain = I_rain + I_res``. Three down-samplings: H, W must be multiples of 8. The output is not
clamped inside the net (clamp at test time).

Choices the paper leaves open, all [UNKNOWN → default] (spec §4.2, §4.5):

* The paper's ``N = {2, 4, 6, 6, 8}`` with heads ``{1, 1, 2, 4, 8}``: N1..N4 are the four levels
  (encoder and decoder), N0 = 2 single-head blocks are the full-resolution refinement stage.
* Attention scores are Restormer's ``τ·q̂k̂ᵀ`` (L2-normalised q, k over H·W; learnable τ per head,
  init 1) rather than the paper's ``QKᵀ/√d`` [DISAGREE]. The sparse branch keeps the top
  ``k = int(0.7·C_h)`` scores of each row (threshold semantics, −∞ fill, spec §2.3); the dense and
  sparse maps are summed with two free learnable weights initialised to 0.5. Computed by operator B
  (``transposed_attention``, mode ``"dual"``), so the export carries TransposedAttention nodes.
* SEFN: 1x1 conv C→3w with ``w = int(2.66·C/3)``; Res2Net split (scale 3, 3x3 depth-wise convs, the
  last group passes through); GELU; CBAM spatial gate (7x7 conv with bias = BatchNorm folded); 1x1 conv
  3w→C.

The default model has 20,879,336 parameters and 98.98 conv GMACs at 256x256 (≈ 396 at 512x512;
``benchmarks/model_complexity.py``): the 20.88 M and 99.0 G spec §4.2 verified for this reconstruction (the
paper reports none). Loss: L1 (spec §4.3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.transposed_attention import topk_from_ratios, transposed_attention
from .base import DerainNet
from .blocks import LayerNorm2d
from .registry import register_model

RES2NET_SCALE = 3


class DualAttention(nn.Module):
    """Dense + top-k sparse transposed channel attention with Restormer's MDTA projections.

    ``q, k, v = split(DW3x3(PW(x, C→3C)))``; ``A = w_d·softmax(P) + w_s·softmax(top-k(P))`` per head
    with ``P = τ·q̂k̂ᵀ``; ``out = PW(A·v)``.
    """

    def __init__(self, channels: int, num_heads: int, topk_ratio: float = 0.7, branch_init: float = 0.5):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the channel count {channels}; "
                             "pick heads with C % heads == 0")
        self.num_heads = num_heads
        # A Python int fixed at build time, so the exported TopK/plugin gets a constant k (spec §2.5).
        (self.topk,) = topk_from_ratios(channels // num_heads, [topk_ratio])
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_dw = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=False)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.branch_weights = nn.Parameter(torch.full((2,), float(branch_init)))
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        out = transposed_attention(q, k, v, self.temperature, self.num_heads, mode="dual", topk=[self.topk],
                                   branch_weights=self.branch_weights)
        return self.project_out(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, topk={self.topk}"


class SpatialGate(nn.Module):
    """CBAM spatial attention (spec §0.9): ``x * sigmoid(conv7x7([max_c x, mean_c x]))``, BN folded into the bias."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class SEFN(nn.Module):
    """Spatially enhanced feed-forward: PW → Res2Net multi-scale DW convs → GELU → spatial gate → PW."""

    def __init__(self, channels: int, expansion: float = 2.66):
        super().__init__()
        width = int(expansion * channels / RES2NET_SCALE)
        self.project_in = nn.Conv2d(channels, RES2NET_SCALE * width, 1, bias=False)
        # Res2Net "normal" split: every group but the last gets a DW conv fed with the previous output.
        self.group_convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
                                         for _ in range(RES2NET_SCALE - 1))
        self.spatial_gate = SpatialGate()
        self.project_out = nn.Conv2d(RES2NET_SCALE * width, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.project_in(x).chunk(RES2NET_SCALE, dim=1)
        outputs = []
        for conv, group in zip(self.group_convs, groups):
            outputs.append(conv(group if not outputs else group + outputs[-1]))
        outputs.append(groups[-1])
        return self.project_out(self.spatial_gate(F.gelu(torch.cat(outputs, dim=1))))


class DATB(nn.Module):
    """Dual-attention Transformer block (paper Eq. 1-2), pre-norm."""

    def __init__(self, channels: int, num_heads: int, topk_ratio: float, branch_init: float, expansion: float):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attention = DualAttention(channels, num_heads, topk_ratio, branch_init)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = SEFN(channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


@register_model("ddsa", default_loss="l1",
                description="DDSA: Restormer-style U-Net, dense + top-k sparse dual attention, SEFN (2023)")
class DDSA(DerainNet):
    input_multiple = 8

    def __init__(self, dim: int = 48, num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8),
                 num_heads: tuple[int, int, int, int] = (1, 2, 4, 8), refinement_blocks: int = 2,
                 topk_ratio: float = 0.7, branch_init: float = 0.5, ffn_expansion: float = 2.66):
        """``num_blocks``/``num_heads``: levels 1-3 (encoder and decoder alike) and the latent."""
        super().__init__()
        if len(num_blocks) != 4 or len(num_heads) != 4:
            raise ValueError(f"num_blocks and num_heads need 4 entries (3 levels + latent), got "
                             f"{list(num_blocks)} and {list(num_heads)}; the default is (4, 6, 6, 8) / (1, 2, 4, 8)")
        if dim % 2 or dim < 2:
            raise ValueError(f"dim must be a positive even number (down-sampling halves it before "
                             f"PixelUnshuffle), got {dim}; the paper's model uses 48")
        widths = [dim, 2 * dim, 4 * dim, 8 * dim]

        def stage(channels: int, heads: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*(DATB(channels, heads, topk_ratio, branch_init, ffn_expansion)
                                   for _ in range(depth)))

        self.embed = nn.Conv2d(3, dim, 3, padding=1, bias=False)
        self.encoders = nn.ModuleList(stage(widths[i], num_heads[i], num_blocks[i]) for i in range(3))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(widths[i], widths[i] // 2, 3, padding=1, bias=False),
                                                 nn.PixelUnshuffle(2)) for i in range(3))
        self.latent = stage(widths[3], num_heads[3], num_blocks[3])
        self.ups = nn.ModuleList(nn.Sequential(nn.Conv2d(widths[i + 1], 2 * widths[i + 1], 3, padding=1, bias=False),
                                               nn.PixelShuffle(2)) for i in range(3))
        # Skip fusion 2C→C at levels 2-3; full resolution keeps the 2C concatenation (Restormer).
        self.reduces = nn.ModuleList([nn.Identity(), *(nn.Conv2d(2 * widths[i], widths[i], 1, bias=False)
                                                       for i in (1, 2))])
        self.decoders = nn.ModuleList([stage(2 * dim, num_heads[0], num_blocks[0]),
                                       *(stage(widths[i], num_heads[i], num_blocks[i]) for i in (1, 2))])
        self.refinement = stage(2 * dim, num_heads[0], refinement_blocks)
        self.output = nn.Conv2d(2 * dim, 3, 3, padding=1, bias=False)

    def core(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.embed(image)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.latent(x)
        for level in (2, 1, 0):
            x = torch.cat([self.ups[level](x), skips[level]], dim=1)
            x = self.decoders[level](self.reduces[level](x))
        return (image + self.output(self.refinement(x)),)
