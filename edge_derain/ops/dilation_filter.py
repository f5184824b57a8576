"""Operator A: EfficientDeRain's pixel-wise dilation filter (MODELS_SPEC §1).

Every pixel and colour plane has its own raw 3x3 kernel (not normalised, may be negative). The same
kernels filter the image at each dilation with zero padding:

    Y_d[n, c, y, x] = sum_{i,j} K[n, 9c + 3i + j, y, x] * X[n, c, y + (i-1)d, x + (j-1)d]

Kernel channels are colour-major (``9c + tap``); output channels are dilation-major
(``out[:, C*m + c] = Y_{d_m}[:, c]``).

Two independent formulations:

* :func:`dilation_filter` — pads once by ``max(dilations)`` and accumulates nine shifted slices per
  dilation; no unfold and no (N, 9C, H, W) intermediate. This is what the models run and what the
  TensorRT plugin implements.
* :func:`dilation_filter_reference` — spec §1.3: a grouped dilated conv with a constant one-hot weight
  gathers the nine taps, then multiply by K and sum over taps. It uses only standard ONNX ops, so it
  is the plugin-free export and the test oracle.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_nchw_float

KERNEL_SIZE = 3
KERNEL_TAPS = KERNEL_SIZE * KERNEL_SIZE


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """FP32 for half/bfloat16 I/O (spec §1.2 and §2.4 ask for FP32 accumulation), else unchanged."""
    return torch.promote_types(dtype, torch.float32)


def check_dilation_filter_inputs(image: torch.Tensor, kernels: torch.Tensor,
                                 dilations: Sequence[int]) -> None:
    """Raise a one-line ValueError naming the problem and the fix if the inputs do not fit together."""
    check_nchw_float(image=image, kernels=kernels)
    if kernels.dtype != image.dtype:
        raise ValueError(f"kernels dtype {kernels.dtype} differs from image dtype {image.dtype}; "
                         "cast both to the same dtype")
    if kernels.device != image.device:
        raise ValueError(f"kernels are on {kernels.device} but the image is on {image.device}; "
                         "move both to the same device")
    n, c, h, w = image.shape
    if kernels.shape[1] != KERNEL_TAPS * c:
        raise ValueError(f"kernels must have {KERNEL_TAPS * c} channels for a {c}-channel image, got "
                         f"{kernels.shape[1]}; pass the KPN's raw {KERNEL_TAPS * c}-channel output")
    if (kernels.shape[0], kernels.shape[2], kernels.shape[3]) != (n, h, w):
        raise ValueError(f"kernels (N, H, W) = {(kernels.shape[0], kernels.shape[2], kernels.shape[3])} "
                         f"must equal the image's {(n, h, w)}; predict the kernels at the input size")
    if isinstance(dilations, (str, bytes)) or not isinstance(dilations, Sequence) or len(dilations) == 0:
        raise ValueError(f"dilations must be a non-empty sequence of positive ints, got {dilations!r}; "
                         "e.g. (1, 2, 3, 4)")
    for d in dilations:
        try:
            value = operator.index(d)
        except TypeError:
            value = None
        if isinstance(d, bool) or value is None or value < 1:
            raise ValueError(f"dilations must be positive ints, got {d!r} in {tuple(dilations)}; "
                             "e.g. (1, 2, 3, 4)")


def dilation_filter(image: torch.Tensor, kernels: torch.Tensor,
                    dilations: Sequence[int] = (1, 2, 3, 4)) -> torch.Tensor:
    """Filter ``image`` (N, C, H, W) with per-pixel 3x3 ``kernels`` (N, 9C, H, W) at each dilation.

    Returns (N, C * len(dilations), H, W), dilation-major. Half-precision inputs are accumulated in
    FP32 and the result is cast back to the input dtype.
    """
    if torch.onnx.is_in_onnx_export():
        from .onnx import emit_custom_node, export_dilation_filter  # lazy: that module imports this one
        if emit_custom_node():
            return export_dilation_filter(image, kernels, dilations)
    check_dilation_filter_inputs(image, kernels, dilations)
    n, c, h, w = image.shape
    acc_dtype = accumulation_dtype(image.dtype)
    pad = max(dilations)
    padded = F.pad(image.to(acc_dtype), (pad, pad, pad, pad))
    taps = kernels.to(acc_dtype).reshape(n, c, KERNEL_TAPS, h, w)
    outputs = []
    for d in dilations:
        filtered = None
        for i in range(KERNEL_SIZE):
            for j in range(KERNEL_SIZE):
                top = pad + (i - 1) * d
                left = pad + (j - 1) * d
                window = padded[:, :, top:top + h, left:left + w]
                tap = taps[:, :, KERNEL_SIZE * i + j]
                filtered = tap * window if filtered is None else torch.addcmul(filtered, tap, window)
        outputs.append(filtered)
    return torch.cat(outputs, dim=1).to(image.dtype)


def _one_hot_tap_weight(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(9C, 1, 3, 3) weight with a single 1 at tap (i, j) of output channel 9c + 3i + j (spec §1.3)."""
    taps = torch.eye(KERNEL_TAPS, dtype=dtype, device=device).reshape(KERNEL_TAPS, 1, KERNEL_SIZE, KERNEL_SIZE)
    return taps.repeat(channels, 1, 1, 1)


def dilation_filter_reference(image: torch.Tensor, kernels: torch.Tensor,
                              dilations: Sequence[int] = (1, 2, 3, 4)) -> torch.Tensor:
    """Same result as :func:`dilation_filter`, built from Conv / Mul / Reshape / ReduceSum / Concat only.

    The grouped dilated conv with a one-hot weight copies each pixel's nine (zero-padded) neighbours
    into channel ``9c + tap`` — exactly the kernel layout — so one multiply and a sum over the tap axis
    apply the kernels.
    """
    check_dilation_filter_inputs(image, kernels, dilations)
    n, c, h, w = image.shape
    acc_dtype = accumulation_dtype(image.dtype)
    image_acc = image.to(acc_dtype)
    kernels_acc = kernels.to(acc_dtype)
    weight = _one_hot_tap_weight(c, acc_dtype, image.device)
    outputs = []
    for d in dilations:
        neighbours = F.conv2d(image_acc, weight, padding=d, dilation=d, groups=c)
        outputs.append((neighbours * kernels_acc).reshape(n, c, KERNEL_TAPS, h, w).sum(dim=2))
    return torch.cat(outputs, dim=1).to(image.dtype)
