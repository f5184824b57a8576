"""PyTorch eager backend: the reference every other backend is compared with."""
from __future__ import annotations

import numpy as np
import torch

from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_multiple = model.input_multiple
        self.receptive_radius = model.receptive_radius

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.model.core(torch.from_numpy(batch).to(self.device))[0]
        return out.float().cpu().numpy()
