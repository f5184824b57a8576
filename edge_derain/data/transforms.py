"""Random crop / flip / pad helpers shared by the datasets and RainMix.

Every helper takes its randomness from an explicit ``numpy.random.Generator`` and applies one random
draw to all images passed together, so a rainy image and its clean partner stay pixel-aligned.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def reflect_pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad ``image`` (H x W x C) evenly on both sides up to at least ``height x width``."""
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image
    pads = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (image.ndim - 2)
    # numpy reflects repeatedly when the pad exceeds the image, so tiny images still fill the crop.
    return np.pad(image, pads, mode="reflect")


def random_crop_box(height: int, width: int, crop_h: int, crop_w: int,
                    rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a uniformly random ``crop_h x crop_w`` window inside ``height x width``."""
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} does not fit in a {height}x{width} image; pad it first")
    return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))


def random_crop_flip(images: Sequence[np.ndarray], crop: int | None, flip: bool,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """One random ``crop x crop`` window and one random horizontal flip, applied to all ``images``.

    Images smaller than the crop are reflect-padded first. ``crop=None`` keeps the full image.
    Random draws, in order: the crop corner (if cropping), then the flip (if ``flip``).
    """
    shape = images[0].shape[:2]
    if any(img.shape[:2] != shape for img in images):
        raise ValueError(f"images to crop together differ in size: {[img.shape[:2] for img in images]}")
    out = list(images)
    if crop is not None:
        out = [reflect_pad_to(img, crop, crop) for img in out]
        top, left = random_crop_box(out[0].shape[0], out[0].shape[1], crop, crop, rng)
        out = [img[top:top + crop, left:left + crop] for img in out]
    if flip and rng.random() < 0.5:
        out = [img[:, ::-1] for img in out]
    return [np.ascontiguousarray(img) for img in out]


def fit_to_size(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``height x width`` window of ``image``, upscaled first (aspect kept) if it is too small.

    Used for texture-like layers (rain-streak maps): upscaling by a modest factor keeps streaks
    plausible, whereas tiling would add visible seams and reflect-padding mirrored streak directions.
    """
    h, w = image.shape[:2]
    if h < height or w < width:
        scale = max(height / h, width / w)
        size = (max(width, int(np.ceil(w * scale))), max(height, int(np.ceil(h * scale))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    top, left = random_crop_box(h, w, height, width, rng)
    return np.ascontiguousarray(image[top:top + height, left:left + width])
