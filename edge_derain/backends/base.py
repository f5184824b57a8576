"""One small interface for every inference backend (Polygraphy style).

``Backend.run`` takes an (N, 3, H, W) float32 RGB batch in [0, 1] of any size and returns the derained
batch of the same shape. The deployable graphs (ONNX, engines) only accept sizes that are a multiple of
the model's ``input_multiple``, so padding and cropping happen here, once, for every backend.
"""
from __future__ import annotations

import numpy as np


def pad_to_multiple_np(batch: np.ndarray, multiple: int) -> np.ndarray:
    """NumPy twin of ``models.pad_to_multiple``: bottom/right reflect pad (replicate when too small)."""
    h, w = batch.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return batch
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


class Backend:
    """Subclasses set ``name`` and ``input_multiple`` and implement ``infer`` on padded batches."""

    name = "backend"
    input_multiple = 16
    receptive_radius = 64  # px an output pixel depends on (models.DerainNet); sizes the overlap of tiles
    precision = "fp32"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the graph on a batch that already fits it (no padding, no cropping): the raw output."""
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = getattr(batch, "shape", type(batch).__name__)
            raise ValueError(f"{self.name}: expected an (N, 3, H, W) float32 RGB batch in [0, 1], got {shape}; "
                             f"convert HxWx3 images with edge_derain.data.to_tensor or np.transpose")
        h, w = batch.shape[-2:]
        padded = pad_to_multiple_np(np.ascontiguousarray(batch, dtype=np.float32), self.input_multiple)
        return self.infer(padded)[..., :h, :w]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision})"
