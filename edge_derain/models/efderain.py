"""EfficientDeRain (Guo et al., AAAI 2021): a U-Net kernel-prediction network + pixel-wise dilation
filtering (MODELS_SPEC §7).

The KPN predicts, for every pixel and colour, one 3x3 kernel (27 channels, colour-major). The same
kernels filter the *input image* at dilations 1-4 (operator A, ``edge_derain.ops.dilation_filter``)
and a 3x3 conv fuses the 12 filtered planes into the derained image. No residual add and no clamp
inside the network (spec §1.4, §7.1).

``width`` scales every KPN channel count (64-128-256-512-512 at 1.0, the paper's 27,395,406-parameter
model; sizes of every width in ``benchmarks/results/model_complexity.json``, from
``benchmarks/model_complexity.py``); the 27-channel kernel head is fixed by the filter. Smaller widths trade PSNR for real-time
speed on embedded GPUs. Input sizes must be multiples of 16 (four 2x2 average pools);
``DerainNet.forward`` reflect-pads other sizes — the official test script resizes instead (§7.1),
which we avoid for deployment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dilation_filter
from .base import DerainNet
from .registry import register_model

KERNEL_TAPS = 9  # one 3x3 kernel per pixel and colour


def _basic(cin: int, cout: int) -> nn.Sequential:
    """[conv3x3 (bias) -> ReLU] x 3, the KPN's only building block (spec §7.2)."""
    layers = []
    for i in range(3):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


@register_model("efderain", default_loss="efderain",
                description="EfficientDeRain: KPN U-Net + pixel-wise dilation filter (AAAI 2021)")
class EfficientDeRain(DerainNet):
    input_multiple = 16
    # Shipped weights: about 97 % of an output pixel's input gradient lies within 64 px and 99.9 % within
    # twice that, the default tile overlap (tests/test_tiling.py; retrained weights use more than 32 px).
    receptive_radius = 64

    def __init__(self, width: float = 1.0, dilations: tuple[int, ...] = (1, 2, 3, 4), colors: int = 3):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}; 1.0 is the paper's model, 0.25 the edge default")
        c1, c2, c3, c4, c5 = (max(4, round(base * width)) for base in (64, 128, 256, 512, 512))
        self.dilations = tuple(int(d) for d in dilations)
        kernels = colors * KERNEL_TAPS
        self.conv1 = _basic(colors, c1)
        self.conv2 = _basic(c1, c2)
        self.conv3 = _basic(c2, c3)
        self.conv4 = _basic(c3, c4)
        self.conv5 = _basic(c4, c5)
        self.conv6 = _basic(c4 + c5, c4)   # concat puts the encoder skip first
        self.conv7 = _basic(c3 + c4, c3)
        self.conv8 = _basic(c2 + c3, kernels)
        self.kernel_head = nn.Conv2d(kernels, kernels, 1)
        self.fusion = nn.Conv2d(colors * len(self.dilations), colors, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The official code uses Xavier-normal with gain 0.02 and PyTorch's default biases (spec §7.2).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight, gain=0.02)

    def predict_kernels(self, image: torch.Tensor) -> torch.Tensor:
        """The KPN: (N, 3, H, W) image -> (N, 27, H, W) raw per-pixel kernels (not normalised)."""
        c1 = self.conv1(image)
        c2 = self.conv2(F.avg_pool2d(c1, 2))
        c3 = self.conv3(F.avg_pool2d(c2, 2))
        c4 = self.conv4(F.avg_pool2d(c3, 2))
        c5 = self.conv5(F.avg_pool2d(c4, 2))
        c6 = self.conv6(torch.cat([c4, _up2(c5)], 1))
        c7 = self.conv7(torch.cat([c3, _up2(c6)], 1))
        c8 = self.conv8(torch.cat([c2, _up2(c7)], 1))
        return self.kernel_head(_up2(c8))

    def core(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        # Under mixed-precision training the KPN runs in bf16/fp16; the filter runs in the image's precision.
        # The cast is conditional so that exported graphs (one precision throughout) carry no Cast node.
        kernels = self.predict_kernels(image)
        if kernels.dtype != image.dtype:
            kernels = kernels.to(image.dtype)
        filtered = dilation_filter(image, kernels, self.dilations)
        return (self.fusion(filtered),)
