"""Inference backends behind one interface: ``Backend.run(np.ndarray) -> np.ndarray``."""
from .base import Backend, pad_to_multiple_np
from .torch_backend import TorchBackend

__all__ = ["Backend", "TorchBackend", "pad_to_multiple_np"]
