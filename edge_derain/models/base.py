"""What every registered deraining network shares: size padding and the train/inference outputs.

Networks here down-sample several times, so the core only accepts sizes that are a multiple of
``input_multiple``. ``forward`` reflect-pads any input up to that multiple and crops the result back
(resizing would blur the image and shift the rain statistics the net was trained on). The core itself
is what gets exported to ONNX: the deployment pipeline pads frames once, outside the engine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of an NCHW tensor to a multiple of ``multiple``; return it and (H, W).

    Reflection needs the pad to be smaller than the side; tiny inputs fall back to edge replication.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


class DerainNet(nn.Module):
    """Base class: subclasses implement ``core`` on multiple-of-``input_multiple`` inputs.

    ``core`` returns a tuple whose first element is the derained image at the input size; further
    elements are auxiliary outputs some models need for their training loss (e.g. half-resolution
    predictions). ``forward`` is the inference path: any size in, the derained image out.
    """

    input_multiple: int = 16
    # How far (px) an output pixel depends on its input, which tiled inference must overlap
    # (edge_derain.backends.tiling). Attention and pooled-statistics models see the whole frame, so tiles
    # only approximate them; 64 px keeps their seams below visibility (BENCHMARKS.md, tiled inference).
    receptive_radius: int = 64
    model_name: str = ""
    model_config: dict = {}

    def core(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB batch in [0, 1], got shape {tuple(x.shape)}")
        padded, (h, w) = pad_to_multiple(x, self.input_multiple)
        return self.core(padded)[0][..., :h, :w]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All outputs, for the loss. Training crops must already be a multiple of input_multiple."""
        h, w = x.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"training crops must be multiples of {self.input_multiple}, got {h}x{w}; "
                             f"pass --crop {max(self.input_multiple, h - h % self.input_multiple)}")
        return self.core(x)
