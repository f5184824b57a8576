"""A labelled grid of the rain presets on one image: what each look of ``RainRenderer`` does."""
from __future__ import annotations

import cv2
import numpy as np

from .synthetic import PRESETS, RainRenderer


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    canvas = np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8)   # OpenCV draws text on 8-bit images only
    scale = max(0.4, tile.shape[1] / 640)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(canvas, (0, 0), (w + 8, h + base + 8), (0, 0, 0), thickness=-1)
    cv2.putText(canvas, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def preset_grid(clean: np.ndarray, seed: int = 0, columns: int = 4) -> np.ndarray:
    """The clean image and every preset rendered on it (seeded), each tile labelled with its name and
    PSNR-Y against the clean image; float32 H x W x 3 in [0, 1]."""
    from ..metrics import psnr

    tiles = [_label(clean, "clean (no rain)")]
    for i, name in enumerate(PRESETS):
        rainy, _ = RainRenderer.preset(name).render(clean, np.random.default_rng([seed, i]))
        tiles.append(_label(rainy, f"{name}: {psnr(rainy, clean):.1f} dB"))
    tiles += [np.zeros_like(clean)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)
