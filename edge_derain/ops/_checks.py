"""Argument checks shared by the custom operators: one-line errors naming the problem and the fix."""
from __future__ import annotations

import torch


def check_nchw_float(**tensors: torch.Tensor) -> None:
    """Each keyword must be a 4-D (N, C, H, W) floating-point tensor."""
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(tensor.shape)}; "
                             f"add a batch dimension with {name}.unsqueeze(0)")
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}; "
                             f"convert it with {name}.float()")
