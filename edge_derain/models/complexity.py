"""Model size the way the deraining papers report it (MODELS_SPEC, global conventions).

The papers' "GFLOPs" are thop MACs over conv/linear layers only: one multiply-add per kernel tap and
input channel per output element; attention products, norms and element-wise ops are not counted.
"""
from __future__ import annotations

import torch
from torch import nn


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def thop_parameter_count(model: nn.Module) -> int:
    """Parameters as thop counts them (the papers' figures): without LayerNorm γ/β and attention τ."""
    from .blocks import LayerNorm2d

    skipped = sum(p.numel() for m in model.modules() if isinstance(m, LayerNorm2d) for p in m.parameters())
    skipped += sum(p.numel() for name, p in model.named_parameters() if name.endswith("temperature"))
    return parameter_count(model) - skipped


@torch.no_grad()
def conv_macs(model: nn.Module, height: int = 512, width: int = 512) -> int:
    """Multiply-accumulates of every Conv2d/Linear in one forward pass on a 1x3xHxW input."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            taps = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * taps
        else:
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()(torch.rand(1, 3, height, width))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total
