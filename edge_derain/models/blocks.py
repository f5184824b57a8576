"""Building blocks shared by the Transformer/CNN deraining nets (MODELS_SPEC §0).

* Restormer blocks: :class:`LayerNorm2d` (§0.1), :class:`MDTA` (§0.2), :class:`GDFN` (§0.3) and the
  pre-norm :class:`TransformerBlock` (§0.4). MDTA runs through
  :func:`edge_derain.ops.transposed_attention`, so ONNX export emits the TransposedAttention node.
* Kui Jiang's CNN blocks (ELF, DANet): :class:`CALayer`, :class:`DSC`, :class:`CAB`, :class:`CABdsc`
  (§0.5), :class:`ECAB`, the fusion blocks :class:`S2FB2` / :class:`S2FBp` (§0.6), the branches
  :class:`ORB` and :class:`EDB` (§3.4, §5.4), the resamplers :class:`Down`,
  :class:`Down4`, :class:`Up`, :class:`Up4` (§0.7) and the sub-pixel up-sampler (§0.8):
  :func:`shuffle_up` is the official channel layout, :class:`ShuffleUpConv` the deployable
  conv + DepthToSpace form of ``shuffle_up(conv(x))``.

The CAB family takes its activation as a module argument because the official code shares one PReLU
instance (one slope) across every CAB of a sub-network (§0.5); pass the same instance to all of them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.transposed_attention import transposed_attention

__all__ = ["LayerNorm2d", "MDTA", "GDFN", "TransformerBlock", "CALayer", "DSC", "CAB", "CABdsc", "ECAB",
           "S2FB2", "S2FBp", "ORB", "EDB", "Down", "Down4", "Up", "Up4", "half_resolution", "shuffle_up",
           "shuffle_up_permutation", "ShuffleUpConv", "LAYERNORM_EPS"]

LAYERNORM_EPS = 1e-5


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over the channel axis of an NCHW tensor (Restormer, §0.1).

    ``bias=True`` is Restormer's WithBias form ``(x − μ)/σ · γ + β``; ``bias=False`` its BiasFree form
    ``x/σ · γ`` (not mean-centred, although σ² is taken around the mean). Reducing over axis 1 avoids the
    reference code's (B, HW, C) transposes in the exported graph.
    """

    def __init__(self, channels: int, bias: bool = True, eps: float = LAYERNORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        centred = x - mean if self.bias is not None else x
        out = centred * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, bias={self.bias is not None}, eps={self.eps}"


def _check_heads(channels: int, heads: int) -> None:
    if heads < 1 or channels % heads:
        raise ValueError(f"heads must be a positive divisor of the channel count {channels}, got {heads}; "
                         "choose heads with C % heads == 0")


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (§0.2): ``PW(attn(split(DW3x3(PW(x, C→3C)))))``, all bias=F.

    The temperature τ (one per head, init 1) multiplies the L2-normalised channel Gram matrix.
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        _check_heads(channels, heads)
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(transposed_attention(q, k, v, self.temperature, self.heads))

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


def _gating_activation(act: str) -> nn.Module:
    if act == "gelu":
        return nn.GELU()
    if act == "prelu":
        return nn.PReLU()  # one slope per FFN instance, init 0.25 (ELF main config)
    raise ValueError(f"unknown GDFN activation {act!r}; choose 'gelu' (Restormer, ELF-LW) or 'prelu' (ELF)")


class GDFN(nn.Module):
    """Gated-Dconv feed-forward (§0.3): ``PW(act(t1) ⊙ t2)`` with ``t1, t2 = split(DW3x3(PW(x, C→2c_h)))``.

    ``c_h = int(C·expansion)``; all convs bias=F. ``act`` is ``"gelu"`` (erf form) or ``"prelu"``.
    """

    def __init__(self, channels: int, expansion: float = 2.66, act: str = "gelu"):
        super().__init__()
        hidden = int(channels * expansion)
        self.act = _gating_activation(act)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(self.act(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block (§0.4): ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``, WithBias LayerNorms."""

    def __init__(self, channels: int, heads: int, act: str = "gelu", expansion: float = 2.66):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = MDTA(channels, heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GDFN(channels, expansion, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class CALayer(nn.Module):
    """SE-style channel attention (§0.5): ``x ⊙ σ(PW(ReLU(PW(GAP(x), C→C/r)), C/r→C))``, both PW bias=F."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"CALayer reduction must be in [1, {channels}] for {channels} channels, "
                             f"got {reduction}; ELF/DANet use 4")
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.excite = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(s))))


class DSC(nn.Module):
    """Depth-wise separable conv (§0.5): ``PW(DW3x3(x), Cin→Cout)``, both with bias, no activation between."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class CAB(nn.Module):
    """Residual channel-attention block (RCAB, §0.5): ``CALayer(conv3x3(act(conv3x3(x)))) + x``, convs bias=F."""

    def __init__(self, channels: int, act: nn.Module, reduction: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.act = act
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.ca = CALayer(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.conv2(self.act(self.conv1(x)))) + x


class S2FB2(nn.Module):
    """Two-input fusion (§0.6, paper HFB/SFB): ``CALayer(DSC([x1, x2], 2C→C)) + x1``."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fuse = DSC(2 * channels, channels)
        self.ca = CALayer(channels, reduction)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.ca(self.fuse(torch.cat([x1, x2], dim=1))) + x1


class S2FBp(nn.Module):
    """Progressive four-input fusion (§0.6): fuse (x3, x4), then x2, then x1; ``CALayer(c) + c``."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fuse34 = DSC(2 * channels, channels)
        self.fuse2 = DSC(2 * channels, channels)
        self.fuse1 = DSC(2 * channels, channels)
        self.ca = CALayer(channels, reduction)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        a = self.fuse34(torch.cat([x3, x4], dim=1))
        b = self.fuse2(torch.cat([x2, a], dim=1))
        c = self.fuse1(torch.cat([x1, b], dim=1))
        return self.ca(c) + c


class _FusedCAB(nn.Module):
    """CAB whose residual is an S2FB2 fusion: ``S2FB2(CALayer(conv(act(conv(x)))), x)``."""

    def __init__(self, channels: int, act: nn.Module, reduction: int, separable: bool):
        super().__init__()
        make = (lambda: DSC(channels, channels)) if separable else (
            lambda: nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        self.conv1 = make()
        self.act = act
        self.conv2 = make()
        self.ca = CALayer(channels, reduction)
        self.fuse = S2FB2(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.ca(self.conv2(self.act(self.conv1(x)))), x)


class CABdsc(_FusedCAB):
    """Depth-wise separable CAB (§0.5, code ``CAB_dsc``): ``S2FB2(CALayer(DSC(act(DSC(x)))), x)``."""

    def __init__(self, channels: int, act: nn.Module, reduction: int = 4):
        super().__init__(channels, act, reduction, separable=True)


class ECAB(_FusedCAB):
    """DANet's "enhanced" CAB (two-block decoder): ``S2FB2(CALayer(conv3x3(act(conv3x3(x)))), x)``, convs bias=F."""

    def __init__(self, channels: int, act: nn.Module, reduction: int = 4):
        super().__init__(channels, act, reduction, separable=False)


def _bilinear(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def half_resolution(x: torch.Tensor) -> torch.Tensor:
    """Bilinear ×0.5 (align_corners=False), computed as the identical 2x2 average pool (§0.7).

    The pool exports as AveragePool, which every backend runs exactly, instead of a down-sampling Resize.
    """
    return F.avg_pool2d(x, 2)


class _Resample(nn.Module):
    """Bilinear resampling by ``scale`` followed by a bias-free 1x1 conv C→C (§0.7)."""

    scale: float = 1.0

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        return _bilinear(x, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.resample(x))


class Down(_Resample):
    """Bilinear ×0.5 (as the identical 2x2 average pool) then PW."""

    scale = 0.5

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        return half_resolution(x)


class Down4(_Resample):
    """Bilinear ×0.25 then PW."""

    scale = 0.25


class Up(_Resample):
    """Bilinear ×2 then PW."""

    scale = 2.0


class Up4(_Resample):
    """Bilinear ×4 then PW."""

    scale = 4.0


def shuffle_up(x: torch.Tensor) -> torch.Tensor:
    """Kui Jiang's sub-pixel ×2 up-sampler (§0.8): (B, 4C, h, w) → (B, C, 2h, 2w).

    ``out[b, c, 2y+dy, 2x+dx] = x[b, 4c + 2·dx + dy, y, x]`` — the first sub-index picks the *column*
    offset, unlike ``PixelShuffle`` (``4c + 2·dy + dx``).
    """
    b, c4, h, w = x.shape
    if c4 % 4:
        raise ValueError(f"shuffle_up needs a channel count divisible by 4, got {c4}; the conv before it "
                         "must output 4x the wanted channels")
    # Split channels as (c, dx, dy), then interleave dy with rows and dx with columns.
    t = x.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 3, 5, 2)
    return t.reshape(b, c4 // 4, 2 * h, 2 * w)


def shuffle_up_permutation(channels: int) -> list[int]:
    """``perm`` with ``shuffle_up(t) == pixel_shuffle(t[:, perm], 2)`` for ``t`` with ``channels`` channels."""
    if channels % 4:
        raise ValueError(f"channels must be divisible by 4, got {channels}")
    return [4 * c + 2 * j + i for c in range(channels // 4) for i in range(2) for j in range(2)]


class ShuffleUpConv(nn.Module):
    """``shuffle_up(conv3x3(x, Cin→4·Cout))`` as conv3x3 + PixelShuffle (ONNX DepthToSpace, CRD).

    The conv's output channels are stored in PixelShuffle order, i.e. official weights ``w`` map to
    ``w[shuffle_up_permutation(4·Cout)]`` (:meth:`from_official_weight`). For a fresh, randomly
    initialised layer the two parameterisations are the same model.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1, bias=False)

    @staticmethod
    def from_official_weight(weight: torch.Tensor) -> torch.Tensor:
        """Reorder an official (4·Cout, Cin, 3, 3) conv weight (followed by ``shuffle_up``) for this layer."""
        return weight[shuffle_up_permutation(weight.shape[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class ORB(nn.Module):
    """Original-resolution branch (ELF's RTB, DANet's ORB): ``conv3x3(body(x)) + x``, conv bias=F."""

    def __init__(self, body: list[nn.Module], channels: int):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.body(x)) + x


class _EncoderStage(nn.Module):
    """``S2FB2(x, CABdsc^n(x))``."""

    def __init__(self, channels: int, act: nn.Module, reduction: int, blocks: int):
        super().__init__()
        self.blocks = nn.Sequential(*(CABdsc(channels, act, reduction) for _ in range(blocks)))
        self.fuse = S2FB2(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(x, self.blocks(x))


class _DecoderStage(nn.Module):
    """``f = S2FBp(a, s1, s2, s3)``; ``S2FB2(f, blocks(f))`` with one CAB, or two ECABs in the two-block form."""

    def __init__(self, channels: int, act: nn.Module, reduction: int, blocks: int):
        super().__init__()
        self.gather = S2FBp(channels, reduction)
        block = CAB if blocks == 1 else ECAB
        self.blocks = nn.Sequential(*(block(channels, act, reduction) for _ in range(blocks)))
        self.fuse = S2FB2(channels, reduction)

    def forward(self, a: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, s3: torch.Tensor) -> torch.Tensor:
        f = self.gather(a, s1, s2, s3)
        return self.fuse(f, self.blocks(f))


class EDB(nn.Module):
    """Kui Jiang's encoder-decoder branch (ELF §3.4, DANet §5.4): three ×0.5 encoder stages, three decoder
    stages with cross-scale skips, output back at the input resolution.

    ``blocks_per_stage=1`` is the released code (one CAB_dsc per encoder stage, one CAB per decoder
    stage); ``2`` is the code's unused ``Encoder_dn/Decoder_dn`` (two CAB_dsc / two ECAB), the DANet
    paper's "2 blocks per stage". Each resampler has its own 1x1 conv. Input sides must be multiples of 8.
    """

    def __init__(self, channels: int, act: nn.Module, reduction: int = 4, blocks_per_stage: int = 1):
        super().__init__()
        if blocks_per_stage not in (1, 2):
            raise ValueError(f"blocks_per_stage must be 1 (released code) or 2 (Encoder_dn/Decoder_dn), "
                             f"got {blocks_per_stage}")
        self.down1, self.down2, self.down3 = Down(channels), Down(channels), Down(channels)
        self.encoders = nn.ModuleList(_EncoderStage(channels, act, reduction, blocks_per_stage) for _ in range(3))
        self.decoders = nn.ModuleList(_DecoderStage(channels, act, reduction, blocks_per_stage) for _ in range(3))
        # Skip resamplers, named source->target level.
        self.down_1to3, self.down_2to3, self.down_1to2 = Down4(channels), Down(channels), Down(channels)
        self.up_3to2, self.up_3to1, self.up_2to1 = Up(channels), Up4(channels), Up(channels)
        self.up_dec3, self.up_dec2, self.up_dec1 = Up(channels), Up(channels), Up(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc1 = self.encoders[0](self.down1(x))
        enc2 = self.encoders[1](self.down2(enc1))
        enc3 = self.encoders[2](self.down3(enc2))
        dec3 = self.decoders[2](enc3, enc3, self.down_2to3(enc2), self.down_1to3(enc1))
        dec2 = self.decoders[1](self.up_dec3(dec3), enc2, self.down_1to2(enc1), self.up_3to2(enc3))
        dec1 = self.decoders[0](self.up_dec2(dec2), enc1, self.up_2to1(enc2), self.up_3to1(enc3))
        return self.up_dec1(dec1)
