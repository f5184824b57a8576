"""RECA-Net: ECNet with an RLCN input, channel attention in the encoder, MSPAM skip attention and a
rain-embedding consistency loss (K.-H. Huang's NTNU thesis; MODELS_SPEC §6).

The thesis extends ECNet (Li et al., WACV 2022); the spec fills the garbled thesis with ECNet's code.
Interface here (``DerainNet``): RGB in [0, 1] in, derained RGB in [0, 1] out. Inside ``core``:

* RLCN map of the [0, 1] image (9x9 window, pooling ops only — no parameters, exportable);
* the image is normalised to [-1, 1] and concatenated with the RLCN map (6 channels);
* a four-level encoder of residual blocks (RB) with squeeze-excitation channel attention (CA), three
  2x2 max-pools (so H, W must be multiples of 8);
* a decoder whose skips go through MSPAM (multi-scale pixel attention) and two RBs per level;
* a 1x1 conv predicts the rain layer ``R`` (in the [-1, 1] scale); derained = ``I - R``, mapped back to
  [0, 1] as ``(I - R + 1) / 2 = x - R / 2``. No clamp inside the net.

In training mode ``core`` also returns the bottleneck embedding ``Z`` (E4, 256 ch at H/8) and the three
MSPAM attention maps (full, 1/2, 1/4 resolution) for :class:`RECANetLoss`; in eval mode (and in the
exported graph) only the image, so the inference path is plain convolutions, pooling and norms.

Spec choices, all [UNKNOWN → default] unless noted:

* CA reduction r = 16, 1x1 convs with bias, placed inside each encoder RB after the second BN and
  before the residual add (full RCABs would overshoot the thesis's parameter count).
* MSPAM width m = 64 / 32 / 32 at the 128 / 64 / 32-channel levels (ECNet's gate widths); the branch
  convs are 3x3 with dilation 3, 5, 7; the output to the decoder is ``F_E * M_att`` (ECNet's gate).
* Activations are ReLU (spec §6.2; ECNet's code can also run LeakyReLU 0.2).
* The default model has 2,818,852 parameters (spec §6.2 [VERIFIED for our reconstruction]; the thesis
  reports 2.883 M; ``benchmarks/model_complexity.py``).

Losses (spec §6.3, :class:`RECANetLoss`): ``λ_image·(1 − SSIM) + λ_embed·L1(Z_ideal, Z) + λ_att·Σ MSE(M_i,
mask_i)`` with λ = 1, 0.02, 0.1. ``Z_ideal`` is the bottleneck of a frozen, separately pre-trained
rain-to-rain :class:`RainAutoencoder` applied to the ground-truth rain layer; the attention target is
the rain mask ``max_c(rainy − clean) > 1e-3``, 2x2 max-pooled per coarser level [UNKNOWN → default].
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import LOSSES, ssim_torch
from .base import DerainNet
from .registry import register_model

RLCN_WINDOW = 9
RLCN_EPS = 1e-5
RAIN_MASK_THRESHOLD = 1e-3  # on [0, 1] images (ECNet: 1e-3 on (I - B) / 2 in the [-1, 1] scale, the same)


def rlcn(image: torch.Tensor, window: int = RLCN_WINDOW) -> torch.Tensor:
    """Rectified local contrast normalisation of a [0, 1] (N, C, H, W) image, per channel (spec §6.1).

    ``(x − μ) / (σ + 1e-5)`` clamped to [0, 1], with the local mean μ and unbiased standard deviation σ
    over a ``window``x``window`` box that ignores out-of-image pixels. Written with average pools so it
    exports as AveragePool / Mul / Sqrt / Div / Clip (spec §6.6).
    """
    pad = window // 2
    mean = F.avg_pool2d(image, window, stride=1, padding=pad, count_include_pad=False)
    mean_sq = F.avg_pool2d(image * image, window, stride=1, padding=pad, count_include_pad=False)
    # Pixels inside the image under each window (< window² near borders): the box sum of a ones map.
    count = F.avg_pool2d(torch.ones_like(image[:, :1]), window, stride=1, padding=pad,
                         count_include_pad=True) * (window * window)
    # clamp: m2 − μ² can dip below 0 by rounding in flat regions.
    variance = (mean_sq - mean * mean).clamp_min(0) * count / (count - 1)
    sigma = torch.sqrt(variance + RLCN_EPS)
    return ((image - mean) / (sigma + RLCN_EPS)).clamp(0, 1)


def rain_layer(rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Ground-truth rain layer ``R = I − B`` of [0, 1] images, in the network's [-1, 1] scale (× 2)."""
    return 2 * (rainy - clean)


def rain_mask(rainy: torch.Tensor, clean: torch.Tensor, threshold: float = RAIN_MASK_THRESHOLD) -> torch.Tensor:
    """(N, 1, H, W) float mask of rain pixels: ``max_c(rainy − clean) > threshold`` on [0, 1] images."""
    return ((rainy - clean).amax(dim=1, keepdim=True) > threshold).to(rainy.dtype)


class ChannelAttention(nn.Module):
    """Squeeze-excitation: ``x * sigmoid(PW(ReLU(PW(GAP(x), C→C/r)), C/r→C))``, 1x1 convs with bias."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class ResidualBlock(nn.Module):
    """ECNet's RB: conv3x3-BN-ReLU-conv3x3-BN (+ optional CA) + shortcut, then ReLU.

    The shortcut is a 1x1 conv + BN when ``project`` is set or the width changes, else identity.
    """

    def __init__(self, cin: int, cout: int, project: bool = False, attention_reduction: int | None = None):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout))
        self.attention = ChannelAttention(cout, attention_reduction) if attention_reduction else nn.Identity()
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))
                         if project or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.attention(self.body(x)) + self.shortcut(x))


class UpBlock(nn.Module):
    """Nearest x2 up-sampling -> conv3x3 -> BN -> ReLU (ECNet's ``Up``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class MSPAM(nn.Module):
    """Multi-scale pixel attention on a skip (thesis Eq. 3-4..3-6): returns (gated skip, 1-channel map).

    ``F_m = W_E(F_E) + W_D(F_D)``; ``M = sigmoid(PW(ReLU(concat[F_m, DConv3(F_m), DConv5(F_m),
    DConv7(F_m)]), 4m→1))``; the skip becomes ``F_E * M``.
    """

    DILATIONS = (3, 5, 7)

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.encoder_proj = nn.Conv2d(channels, width, 3, padding=1)
        self.decoder_proj = nn.Conv2d(channels, width, 3, padding=1)
        self.dilated = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in self.DILATIONS)
        self.to_map = nn.Conv2d(width * (1 + len(self.DILATIONS)), 1, 1)

    def forward(self, skip: torch.Tensor, decoder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.encoder_proj(skip) + self.decoder_proj(decoder)
        scales = torch.cat([fused, *(conv(fused) for conv in self.dilated)], dim=1)
        attention = torch.sigmoid(self.to_map(F.relu(scales)))
        return skip * attention, attention


class DecoderLevel(nn.Module):
    """Up-sample, gate the encoder skip with MSPAM, then ``RB(up) + RB(gated skip)`` (projection shortcuts)."""

    def __init__(self, cin: int, cout: int, attention_width: int):
        super().__init__()
        self.up = UpBlock(cin, cout)
        self.attention = MSPAM(cout, attention_width)
        self.from_up = ResidualBlock(cout, cout, project=True)
        self.from_skip = ResidualBlock(cout, cout, project=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up = self.up(x)
        gated, attention = self.attention(skip, up)
        return self.from_up(up) + self.from_skip(gated), attention


class Encoder(nn.Module):
    """Input conv + InstanceNorm + ReLU, then four RB levels with 2x2 max-pools in between.

    Returns the four level features (E1..E4); E4 is the embedding ``Z``. Shared by RECA-Net (6 input
    channels, CA in every RB) and the rain autoencoder (3 channels, no CA).
    """

    def __init__(self, in_channels: int, filters: tuple[int, ...], attention_reduction: int | None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, filters[0], 3, padding=1),
                                  nn.InstanceNorm2d(filters[0]), nn.ReLU(inplace=True))
        widths = (filters[0], *filters)
        self.levels = nn.ModuleList(ResidualBlock(widths[i], widths[i + 1], attention_reduction=attention_reduction)
                                    for i in range(len(filters)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.levels[0](self.stem(x))]
        for level in self.levels[1:]:
            features.append(level(F.max_pool2d(features[-1], 2)))
        return features


def _filters(n1: int) -> tuple[int, int, int, int]:
    if isinstance(n1, bool) or not isinstance(n1, int) or n1 < 1:
        raise ValueError(f"n1 must be a positive int (base width; the thesis model uses 32), got {n1!r}")
    return n1, 2 * n1, 4 * n1, 8 * n1


@register_model("recanet", default_loss="recanet",
                description="RECA-Net: ECNet + RLCN input, channel attention, MSPAM skips (NTNU thesis)")
class RECANet(DerainNet):
    input_multiple = 8

    def __init__(self, n1: int = 32, ca_reduction: int = 16, mspam_widths: tuple[int, int, int] = (32, 32, 64)):
        """``mspam_widths`` are m at the full, 1/2 and 1/4 resolution skips (E1, E2, E3)."""
        super().__init__()
        filters = _filters(n1)
        if len(mspam_widths) != 3 or any(int(m) < 1 for m in mspam_widths):
            raise ValueError(f"mspam_widths must be 3 positive ints (full, 1/2, 1/4 level), got {mspam_widths!r}; "
                             "the default is (32, 32, 64)")
        self.encoder = Encoder(6, filters, ca_reduction)
        # Decoder levels, coarse to fine: 1/4, 1/2, full resolution.
        self.decoder = nn.ModuleList(DecoderLevel(filters[i + 1], filters[i], int(mspam_widths[i]))
                                     for i in (2, 1, 0))
        self.to_rain = nn.Conv2d(filters[0], 3, 1)

    def core(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Derained image in [0, 1]; in training mode also (Z, M_full, M_half, M_quarter)."""
        signed = image * 2 - 1
        features = self.encoder(torch.cat([signed, rlcn(image)], dim=1))
        x, attention_maps = features[-1], []
        for level, skip in zip(self.decoder, reversed(features[:-1])):
            x, attention = level(x, skip)
            attention_maps.append(attention)
        derained = image - self.to_rain(x) / 2  # (I − R + 1) / 2 in the [0, 1] scale
        if not self.training:
            return (derained,)
        return (derained, features[-1], *reversed(attention_maps))


class RainAutoencoder(nn.Module):
    """ECNet's rain-to-rain autoencoder: the RECA-Net encoder without CA on a 3-channel rain layer, and a
    decoder of Up + RB (projection shortcut) stages without skips (2,026,211 parameters at n1 = 32, pinned by
    ``tests/test_models_ddsa_reca.py``).

    Train it beforehand on ground-truth rain layers (:func:`rain_layer`) with ``MSE(ae(R), R)``; its
    bottleneck :meth:`embed` is the target of RECA-Net's embedding-consistency loss.
    """

    def __init__(self, n1: int = 32):
        super().__init__()
        filters = _filters(n1)
        self.encoder = Encoder(3, filters, attention_reduction=None)
        self.decoder = nn.Sequential(*(stage for i in (2, 1, 0) for stage in
                                       (UpBlock(filters[i + 1], filters[i]),
                                        ResidualBlock(filters[i], filters[i], project=True))))
        self.to_rain = nn.Conv2d(filters[0], 3, 1)

    def embed(self, rain: torch.Tensor) -> torch.Tensor:
        return self.encoder(rain)[-1]

    def forward(self, rain: torch.Tensor) -> torch.Tensor:
        return self.to_rain(self.decoder(self.embed(rain)))


class RECANetLoss(nn.Module):
    """``λ_image·(1 − SSIM(B̂, B)) + λ_embed·mean|AE.embed(R) − Z| + λ_att·Σ_i mean (M_i − mask_i)²``.

    Called as ``loss(model.forward_train(rainy), clean, rainy=rainy)`` (all images in [0, 1]): the
    ground-truth rain layer and rain mask are derived here from ``rainy − clean`` (:func:`rain_layer`,
    :func:`rain_mask`, threshold ``mask_threshold``). ``1 − SSIM`` replaces the thesis's ``−SSIM``
    (same gradient, non-negative value). The mask is 2x2 max-pooled for each coarser attention map.

    ``autoencoder`` is a pre-trained :class:`RainAutoencoder` or the path of its safetensors state
    dict; it stays frozen (eval mode, no gradients). Without one, the embedding term is skipped (with
    a warning) — a randomly initialised autoencoder would give a meaningless target.
    """

    takes_all_outputs = True
    needs_rainy_input = True

    def __init__(self, autoencoder: nn.Module | str | Path | None = None, lambda_image: float = 1.0,
                 lambda_embed: float = 0.02, lambda_att: float = 0.1, mask_threshold: float = RAIN_MASK_THRESHOLD):
        super().__init__()
        for name, value in (("lambda_image", lambda_image), ("lambda_embed", lambda_embed),
                            ("lambda_att", lambda_att), ("mask_threshold", mask_threshold)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}; the thesis uses 1, 0.02, 0.1 and 1e-3")
        if isinstance(autoencoder, (str, Path)):
            autoencoder = _load_autoencoder(Path(autoencoder))
        elif autoencoder is None and lambda_embed > 0:
            warnings.warn("RECANetLoss has no pre-trained rain autoencoder, so the rain-embedding term is "
                          "skipped; pass autoencoder=<RainAutoencoder or its .safetensors> to enable it",
                          stacklevel=2)
        self.autoencoder = autoencoder
        if autoencoder is not None:
            autoencoder.requires_grad_(False).eval()
        self.lambda_image, self.lambda_embed, self.lambda_att = lambda_image, lambda_embed, lambda_att
        self.mask_threshold = mask_threshold

    def train(self, mode: bool = True):
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: BN keeps its pre-trained statistics
        return self

    def forward(self, outputs: tuple[torch.Tensor, ...], clean: torch.Tensor,
                rainy: torch.Tensor | None = None) -> torch.Tensor:
        if len(outputs) != 5:
            raise ValueError(f"RECANetLoss needs the 5 training outputs of RECANet (image, Z, 3 attention maps), "
                             f"got {len(outputs)}; call model.forward_train(x) with the model in train() mode")
        if rainy is None:
            raise ValueError("RECANetLoss needs the rainy input to derive the rain layer and mask; "
                             "call loss(outputs, clean, rainy=rainy)")
        derained, embedding, *attention_maps = outputs
        if rainy.shape != clean.shape or derained.shape != clean.shape:
            raise ValueError(f"rainy {tuple(rainy.shape)}, clean {tuple(clean.shape)} and derained "
                             f"{tuple(derained.shape)} must have the same (N, 3, H, W) shape")
        loss = self.lambda_image * (1 - ssim_torch(derained, clean))
        mask = rain_mask(rainy, clean, self.mask_threshold)
        for attention in attention_maps:
            if attention.shape[-2:] != mask.shape[-2:]:
                mask = F.max_pool2d(mask, 2)
            loss = loss + self.lambda_att * F.mse_loss(attention, mask)
        if self.autoencoder is not None and self.lambda_embed > 0:
            with torch.no_grad():
                target = self.autoencoder.embed(rain_layer(rainy, clean))
            loss = loss + self.lambda_embed * F.l1_loss(embedding, target)
        return loss

    def extra_repr(self) -> str:
        return (f"lambda_image={self.lambda_image}, lambda_embed={self.lambda_embed}, "
                f"lambda_att={self.lambda_att}, mask_threshold={self.mask_threshold}")


def _load_autoencoder(path: Path) -> RainAutoencoder:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"rain autoencoder weights {path} not found; pass the .safetensors state dict "
                                "of a RainAutoencoder trained with MSE on rain layers")
    autoencoder = RainAutoencoder()
    try:
        autoencoder.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a RainAutoencoder(n1=32) state dict: {str(exc).splitlines()[0]}") from None
    return autoencoder


if "recanet" in LOSSES:
    raise RuntimeError("a loss named 'recanet' is already registered; RECANetLoss registers itself under that name")
LOSSES["recanet"] = RECANetLoss
