"""ELF ("Magic ELF", Jiang et al., ACM MM 2022) and its light variant ELF-LW (MODELS_SPEC §3).

Two stages at half resolution, then a learned ×2 reconstruction:

* IDN (code ``DSNet``) predicts the rain layer ``R_S`` of the bilinearly halved image ``x2`` from two
  views — ``x2`` itself and the full-resolution image tiled into its four quadrants (12 channels) — and
  returns ``I_B,S = x2 − R_S``.
* MAM (code ``STEM``) associates the rain residual with the rainy image by cross channel attention:
  the queries come from ``R_S`` features, keys and values from a stride-2 conv of the rainy image.
* BRN (code ``SSNet``) refines the fused feature and returns ``I_B = conv(shuffle_up(...)) + ↑2(I_B,S)``.

Each of IDN and BRN runs an RTB (residual stack of Restormer blocks) and an EDB (CNN encoder-decoder,
:class:`~.blocks.EDB`) in parallel and fuses them with an S2FB. ``core`` returns ``(I_B, I_B,S)``;
the clamp to [0, 1] is left to inference (spec §3.3).

Defaults and resolved spec points:

* Topology = the repository's ``ALformer3.py`` (RTB of 10 blocks, 48 channels; LW: 5 blocks, 32 channels),
  the variant that reproduces the paper's size: 1,536,785 parameters (1,532,131 thop-style, i.e. without
  LayerNorm γ/β and attention τ) and 66.13 conv GMACs at 512² (paper: 1.532 M, 66.39 G); ELF-LW 568,308 /
  566,500 and 21.35 G (§3.2). Measured by ``benchmarks/model_complexity.py``.
* GDFN activation [DISAGREE → default]: PReLU for ELF, GELU for ELF-LW, as in the released files (§3.8).
* RTB heads 2 (LW: 1), the two extra single RBs 1 head, MAM 4 heads (§3.4, §3.8).
* ``shuffle_up`` is implemented as conv + PixelShuffle with the conv's output channels stored in
  PixelShuffle order (:class:`~.blocks.ShuffleUpConv`), so the export is Conv + DepthToSpace (§0.8).
* Bilinear ×0.5 is computed as the identical 2x2 average pool (§0.7).
* H and W must be multiples of 16; ``DerainNet.forward`` reflect-pads other sizes (the official test
  script does not pad).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.transposed_attention import transposed_attention
from .base import DerainNet
from .blocks import CAB, EDB, GDFN, ORB, S2FB2, LayerNorm2d, ShuffleUpConv, TransformerBlock, half_resolution
from .registry import register_model

CA_REDUCTION = 4
MAM_HEADS = 4


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def quadrant_stack(image: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, 4C, H/2, W/2): top-left, top-right, bottom-left, bottom-right tiles (not a pixel-unshuffle)."""
    h, w = image.shape[-2] // 2, image.shape[-1] // 2
    top, bottom = image[..., :h, :], image[..., h:, :]
    return torch.cat([top[..., :w], top[..., w:], bottom[..., :w], bottom[..., w:]], dim=1)


class IDN(nn.Module):
    """Image deraining network at half resolution; returns ``(R_S, I_B,S)``."""

    def __init__(self, channels: int, rtb_blocks: int, rtb_heads: int, ffn_act: str):
        super().__init__()
        act = nn.PReLU()  # one slope shared by every CAB of this sub-network (spec §0.5)
        self.shallow_half = nn.Sequential(_conv3(3, channels), CAB(channels, act, CA_REDUCTION))
        self.shallow_quadrants = nn.Sequential(_conv3(12, channels), CAB(channels, act, CA_REDUCTION),
                                               TransformerBlock(channels, 1, ffn_act))
        self.fuse = _conv3(2 * channels, channels)
        self.rtb = ORB([TransformerBlock(channels, rtb_heads, ffn_act) for _ in range(rtb_blocks)], channels)
        self.edb = EDB(channels, act, CA_REDUCTION)
        self.merge = S2FB2(channels, CA_REDUCTION)
        self.tail = _conv3(channels, 3)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = half_resolution(image)
        features = self.fuse(torch.cat([self.shallow_half(half), self.shallow_quadrants(quadrant_stack(image))], 1))
        rain = self.tail(self.merge(self.rtb(features), self.edb(features)))
        return rain, half - rain


class MAM(nn.Module):
    """Multi-input attention module: cross channel attention of rain-residual queries over rainy-image keys/values.

    ``t = y + PW(attn(DWq(LN(z)), DWk(LN(y)), DWv(LN(y))))``, ``t = t + GDFN(LN(t))`` with ``y`` the
    stride-2 rainy-image feature and ``z`` the rain-residual feature (projections are 3x3 depth-wise
    only, bias=F); the result is fused with the half-resolution background feature by an S2FB.
    """

    def __init__(self, channels: int, heads: int, ffn_act: str):
        super().__init__()
        if channels % heads:
            raise ValueError(f"MAM heads {heads} must divide the channel count {channels}; pick C % heads == 0")
        self.heads = heads
        self.embed_image = _conv3(3, channels, stride=2)
        self.embed_rain = _conv3(3, channels)
        self.embed_background = _conv3(3, channels)
        self.norm_rain, self.norm_key, self.norm_value = (LayerNorm2d(channels) for _ in range(3))
        self.query = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.key = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.value = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm_ffn = LayerNorm2d(channels)
        self.ffn = GDFN(channels, act=ffn_act)
        self.fuse = S2FB2(channels, CA_REDUCTION)

    def forward(self, image: torch.Tensor, rain: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        y = self.embed_image(image)
        z = self.embed_rain(rain)
        attended = transposed_attention(self.query(self.norm_rain(z)), self.key(self.norm_key(y)),
                                        self.value(self.norm_value(y)), self.temperature, self.heads)
        t = y + self.project_out(attended)
        t = t + self.ffn(self.norm_ffn(t))
        return self.fuse(self.embed_background(background), t)


class BRN(nn.Module):
    """Background recovery network: refines the MAM feature and reconstructs the full-resolution residual."""

    def __init__(self, channels: int, rtb_blocks: int, rtb_heads: int, ffn_act: str):
        super().__init__()
        if channels % 2:
            raise ValueError(f"ELF needs an even channel count for the ×2 sub-pixel reconstruction, got {channels}")
        act = nn.PReLU()
        self.rtb = ORB([TransformerBlock(channels, rtb_heads, ffn_act) for _ in range(rtb_blocks)], channels)
        self.edb = EDB(channels, act, CA_REDUCTION)
        self.merge = S2FB2(channels, CA_REDUCTION)
        self.refine = TransformerBlock(channels, 1, ffn_act)
        self.upsample = ShuffleUpConv(channels, channels // 2)
        self.tail = _conv3(channels // 2, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        g = self.refine(self.merge(self.rtb(features), self.edb(features)))
        return self.tail(self.upsample(g))


class ELF(DerainNet):
    """IDN → MAM → BRN; ``core`` returns ``(I_B, I_B,S)`` (full- and half-resolution derained images)."""

    input_multiple = 16

    def __init__(self, channels: int = 48, rtb_blocks: int = 10, rtb_heads: int = 2, ffn_act: str = "prelu",
                 mam_heads: int = MAM_HEADS):
        super().__init__()
        if channels < CA_REDUCTION or rtb_blocks < 1:
            raise ValueError(f"ELF needs channels >= {CA_REDUCTION} and rtb_blocks >= 1, got {channels} and "
                             f"{rtb_blocks}; the paper uses 48/10 (ELF) and 32/5 (ELF-LW)")
        self.idn = IDN(channels, rtb_blocks, rtb_heads, ffn_act)
        self.mam = MAM(channels, mam_heads, ffn_act)
        self.brn = BRN(channels, rtb_blocks, rtb_heads, ffn_act)

    def core(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rain, background_half = self.idn(image)
        residual = self.brn(self.mam(image, rain, background_half))
        upsampled = F.interpolate(background_half, scale_factor=2, mode="bilinear", align_corners=False)
        return residual + upsampled, background_half


@register_model("elf", default_loss="two_stage",
                description="ELF (Magic ELF): half-res IDN + MAM cross attention + BRN, 1.54 M params (ACM MM 2022)")
def elf(channels: int = 48, rtb_blocks: int = 10, rtb_heads: int = 2, ffn_act: str = "prelu") -> ELF:
    return ELF(channels, rtb_blocks, rtb_heads, ffn_act)


@register_model("elf_lw", default_loss="two_stage",
                description="ELF-LW: light ELF, 32 channels, 5-block RTBs, GELU FFN, 0.57 M params")
def elf_lw(channels: int = 32, rtb_blocks: int = 5, rtb_heads: int = 1, ffn_act: str = "gelu") -> ELF:
    return ELF(channels, rtb_blocks, rtb_heads, ffn_act)
