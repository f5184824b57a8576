"""DANet (Jiang et al., IJCAI 2022) and its high-accuracy configuration DANet◆ (MODELS_SPEC §5).

ELF's CNN-only predecessor, with the same two-stage layout (:mod:`.elf`):

* DSN (code ``DSNet``) predicts the half-resolution rain layer ``R_S`` from the halved image and the
  quadrant-tiled full-resolution image, each through conv + CAB; an ORB (stack of CABs + conv + skip)
  and an EDB run in parallel and an S2FB fuses them; ``I_B,S = ↓2(I) − R_S``.
* ALM (code ``STEM``) turns ``R_S`` into a C-channel sigmoid mask: ``f = y ⊙ m + y + conv(I_B,S)``
  with ``y`` a stride-2 conv of the rainy image.
* RSN (code ``SSNet``) refines ``f`` with another ORB ‖ EDB pair and reconstructs
  ``I_B = conv(shuffle_up(conv(g))) + ↑2(I_B,S)``.

``core`` returns ``(I_B, I_B,S)``; the clamp to [0, 1] is left to inference.

Configurations (§5.2):

* ``danet_plus`` = DANet◆ = the released ``DANet.py`` defaults: C = 64, 10 CABs per ORB, one block per
  EDB stage. 2,943,138 parameters and 130.48 conv GMACs at 512², exactly the paper's 2.943 M (130.91 G
  by thop).
* ``danet`` = the paper's 48-channel baseline. [UNKNOWN → default] Its exact composition is not in the
  public code and the paper's 1.547 M / 49.11 G cannot be reproduced: we take the spec's default, C = 48,
  5 CABs per ORB and the code's unused two-block ``Encoder_dn/Decoder_dn`` EDB (2 CAB_dsc per encoder
  stage, 2 ECAB per decoder stage), the closest in MACs: 1,661,978 parameters (+7.4 % over the paper) and
  49.27 G.

Sizes measured by ``benchmarks/model_complexity.py`` (``benchmarks/results/model_complexity.json``).

Other resolved points:

* ALM [DISAGREE → default]: the code's single conv + sigmoid mask, strided-conv embedding, ``+ y``
  residual and plain addition (the paper's bottleneck mask and SFB fusion give other sizes) (§5.5).
* Two PReLU slopes in the whole model: one shared by the DSN's CABs, one by the RSN's (§5.4).
* ``shuffle_up`` runs as conv + PixelShuffle with the conv's channels in PixelShuffle order
  (:class:`~.blocks.ShuffleUpConv`); bilinear ×0.5 runs as the identical 2x2 average pool.
* Input sides must be multiples of 16; ``DerainNet.forward`` reflect-pads other sizes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DerainNet
from .blocks import CAB, EDB, ORB, S2FB2, ShuffleUpConv, half_resolution
from .elf import quadrant_stack
from .registry import register_model

CA_REDUCTION = 4


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _orb(channels: int, cabs: int, act: nn.Module) -> ORB:
    return ORB([CAB(channels, act, CA_REDUCTION) for _ in range(cabs)], channels)


class DSN(nn.Module):
    """Derain sub-network at half resolution; returns ``(R_S, I_B,S)``."""

    def __init__(self, channels: int, cabs: int, edb_blocks: int):
        super().__init__()
        act = nn.PReLU()  # the DSN's own slope, shared by all its CABs (spec §5.4)
        self.shallow_half = nn.Sequential(_conv3(3, channels), CAB(channels, act, CA_REDUCTION))
        self.shallow_quadrants = nn.Sequential(_conv3(12, channels), CAB(channels, act, CA_REDUCTION))
        self.fuse = _conv3(2 * channels, channels)
        self.orb = _orb(channels, cabs, act)
        self.edb = EDB(channels, act, CA_REDUCTION, edb_blocks)
        self.merge = S2FB2(channels, CA_REDUCTION)
        self.tail = _conv3(channels, 3)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = half_resolution(image)
        features = self.fuse(torch.cat([self.shallow_half(half), self.shallow_quadrants(quadrant_stack(image))], 1))
        rain = self.tail(self.merge(self.orb(features), self.edb(features)))
        return rain, half - rain


class ALM(nn.Module):
    """Association module: ``y ⊙ σ(conv(R_S)) + y + conv(I_B,S)`` with ``y = conv_stride2(I_rain)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.embed_image = _conv3(3, channels, stride=2)
        self.embed_rain = _conv3(3, channels)
        self.embed_background = _conv3(3, channels)

    def forward(self, image: torch.Tensor, rain: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        y = self.embed_image(image)
        mask = torch.sigmoid(self.embed_rain(rain))
        return y * mask + y + self.embed_background(background)


class RSN(nn.Module):
    """Reconstruction sub-network: ORB ‖ EDB, S2FB, then the ×2 sub-pixel residual at full resolution."""

    def __init__(self, channels: int, cabs: int, edb_blocks: int):
        super().__init__()
        act = nn.PReLU()
        self.orb = _orb(channels, cabs, act)
        self.edb = EDB(channels, act, CA_REDUCTION, edb_blocks)
        self.merge = S2FB2(channels, CA_REDUCTION)
        self.upsample = ShuffleUpConv(channels, channels // 2)
        self.tail = _conv3(channels // 2, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.tail(self.upsample(self.merge(self.orb(features), self.edb(features))))


class DANet(DerainNet):
    """DSN → ALM → RSN; ``core`` returns ``(I_B, I_B,S)``."""

    input_multiple = 16

    def __init__(self, channels: int = 64, cabs: int = 10, edb_blocks: int = 1):
        super().__init__()
        if channels < CA_REDUCTION or channels % 2 or cabs < 1:
            raise ValueError(f"DANet needs an even channel count >= {CA_REDUCTION} and cabs >= 1, got {channels} "
                             f"and {cabs}; DANet◆ uses 64/10, DANet 48/5")
        self.dsn = DSN(channels, cabs, edb_blocks)
        self.alm = ALM(channels)
        self.rsn = RSN(channels, cabs, edb_blocks)

    def core(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rain, background_half = self.dsn(image)
        residual = self.rsn(self.alm(image, rain, background_half))
        upsampled = F.interpolate(background_half, scale_factor=2, mode="bilinear", align_corners=False)
        return residual + upsampled, background_half


@register_model("danet_plus", default_loss="two_stage",
                description="DANet◆: released DANet config, 64 channels, 10-CAB ORBs, 2.94 M params (IJCAI 2022)")
def danet_plus(channels: int = 64, cabs: int = 10, edb_blocks: int = 1) -> DANet:
    return DANet(channels, cabs, edb_blocks)


@register_model("danet", default_loss="two_stage",
                description="DANet baseline: 48 channels, 5-CAB ORBs, two-block EDB stages (~1.66 M params)")
def danet(channels: int = 48, cabs: int = 5, edb_blocks: int = 2) -> DANet:
    return DANet(channels, cabs, edb_blocks)
