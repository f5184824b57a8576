"""RainMix (EfficientDeRain, spec §7.4): extra rain from real Garg–Nayar streak maps, AugMix-style.

A real streak map ``R_org`` (white streaks on black) is deformed by several chains of random affine
operations (rotate, shear x/y, translate x/y, zoom x/y), the chains are mixed with Dirichlet weights,
blended with ``R_org``, fitted to the image size and composited onto the rainy or the clean image
of a training pair (the ground truth stays the clean image).

Two variants:

* ``"paper"`` (default, Alg. 1 of the paper): 4 chains of depth 1-3 (each chain its own depth),
  ``w ~ Beta(1, 1)``, ``R = w*R_org + (1-w)*R_mix``, ``I = R + X``. The paper gives no operation
  strengths: [UNKNOWN -> default] the code's severity-3 ranges are used. Each chain is composed into one
  affine map and resampled once in float (no 8-bit round trips). Clipping ``I`` to [0, 1] is our choice
  (the paper writes a plain sum).
* ``"code"`` (the official ``augment_and_mix.py`` / ``dataset.py``): 3 chains of depth 2 or 3, PIL
  bilinear resampling with a uint8 round trip after every operation,
  ``R = max(1-m, 0.7)*R_org + max(m, 0.5/max(ws))*R_mix``, screen blend ``X + R - X*R`` left unclipped
  (the code's ``np.clip`` discards its result), so values can exceed 1. The code draws the chain depth
  once and reuses it for all three chains (its ``depth`` variable is overwritten by the first draw);
  this is reproduced.

Both variants take the rainy image as the base with probability 7/11 (the code's ``randint(0, 10) > 3``;
the paper only says "rainy or clean"). Where the code crops image and streak map to their common
size, ``apply`` keeps the image size and fits the streak map to it instead (random crop, upscaled
first when the map is smaller), so the pair's crop size and alignment are not disturbed.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from .io import list_images, read_image_uint8
from .transforms import fit_to_size

VARIANTS = ("paper", "code")
OPERATIONS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "zoom_x", "zoom_y")
CODE_SEVERITY = 3.0            # augment_and_mix(severity=3): strengths u ~ U(0.1, 3) on a 0..10 scale
CODE_RAINY_BASE_PROB = 7 / 11  # randint(0, 10) > 3


def sample_operation(name: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random affine operation as a 3x3 matrix mapping output to input coordinates (PIL convention).

    Coordinates are continuous with pixel centres at +0.5, as in ``PIL.Image.transform(AFFINE)``.
    Strengths follow the official code at severity 3 (``u ~ U(0.1, 3)``; integer truncation kept):
    rotation ``int(3u)`` degrees about the centre, shear ``0.03u``, translation ``int(u*size/30)``
    pixels, each with a random sign; zoom scales the axis coefficient by ``1/(0.6u)`` and, with
    probability 1/2, offsets it so the far edge stays anchored.
    """
    u = rng.uniform(0.1, CODE_SEVERITY)
    if name == "zoom_x" or name == "zoom_y":
        rate = 1.0 / (u * 6.0 / 10.0)
        size = width if name == "zoom_x" else height
        bias = size * (1.0 - rate) if rng.random() > 0.5 else 0.0
        return np.array([[rate, 0, bias], [0, 1, 0], [0, 0, 1]] if name == "zoom_x"
                        else [[1, 0, 0], [0, rate, bias], [0, 0, 1]], dtype=np.float64)
    sign = -1.0 if rng.random() > 0.5 else 1.0
    if name == "rotate":
        # PIL's Image.rotate(degrees): counter-clockwise about (w/2, h/2), same output size.
        angle = -math.radians(sign * int(u * 30 / 10))
        cos, sin = math.cos(angle), math.sin(angle)
        cx, cy = width / 2.0, height / 2.0
        return np.array([[cos, sin, cx - cos * cx - sin * cy],
                         [-sin, cos, cy + sin * cx - cos * cy], [0, 0, 1]], dtype=np.float64)
    if name == "shear_x":
        return np.array([[1, sign * u * 0.3 / 10, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    if name == "shear_y":
        return np.array([[1, 0, 0], [sign * u * 0.3 / 10, 1, 0], [0, 0, 1]], dtype=np.float64)
    if name == "translate_x":
        return np.array([[1, 0, sign * int(u * (width / 3) / 10)], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    if name == "translate_y":
        return np.array([[1, 0, 0], [0, 1, sign * int(u * (height / 3) / 10)], [0, 0, 1]], dtype=np.float64)
    raise ValueError(f"unknown RainMix operation {name!r}; choose from {', '.join(OPERATIONS)}")


def warp_pil_uint8(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample a uint8 image (H x W or H x W x 3) with PIL bilinear, as the official code does."""
    coeffs = tuple(float(v) for v in matrix[:2].ravel())
    pil = Image.fromarray(image).transform((image.shape[1], image.shape[0]), Image.Transform.AFFINE, coeffs,
                                           resample=Image.Resampling.BILINEAR)
    return np.asarray(pil)


def warp_float(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample a float image with the same geometry as ``warp_pil_uint8`` (cv2 bilinear, zero fill)."""
    # PIL measures coordinates from pixel corners, cv2 from pixel centres: shift by half a pixel.
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    to_index = np.linalg.inv(half) @ matrix @ half
    h, w = image.shape[:2]
    return cv2.warpAffine(image, to_index[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def code_blend_weights(ws: np.ndarray, m: float) -> tuple[float, float]:
    """The official code's weights ``(max(1-m, 0.7), max(m, 0.5/max(ws)))`` for ``R_org`` and ``R_mix``.

    They are not convex: the second is at least 0.5/max(ws) >= 0.5, and the sum can exceed 1.
    """
    return max(1.0 - float(m), 0.7), max(float(m), 0.5 / float(np.max(ws)))


class RainMix:
    """RainMix augmentation over a folder of real streak maps (e.g. ``streaks_garg06/``).

    ``apply(rain, clean, rng)`` returns the augmented rainy image (float32 H x W x 3) for the
    training pair; see the module docstring for the two variants.
    """

    def __init__(self, streaks: str | os.PathLike | Sequence[np.ndarray], variant: str = "paper",
                 rainy_base_prob: float = CODE_RAINY_BASE_PROB, cache_size: int = 256,
                 opacity: tuple[float, float] = (1.0, 1.0)):
        if variant not in VARIANTS:
            raise ValueError(f"unknown RainMix variant {variant!r}; choose 'paper' or 'code'")
        if not 0.0 <= rainy_base_prob <= 1.0:
            raise ValueError(f"rainy_base_prob must be in [0, 1], got {rainy_base_prob}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if len(opacity) != 2 or not 0.0 <= opacity[0] <= opacity[1] <= 1.0:
            raise ValueError(f"RainMix opacity must be a (low, high) pair in [0, 1], got {opacity!r}")
        self.variant = variant
        self.rainy_base_prob = rainy_base_prob
        # Both variants composite the streak map at full strength; an opacity below 1 (drawn per image)
        # extends RainMix to light rain, which the papers' recipe never shows the model.
        self.opacity = (float(opacity[0]), float(opacity[1]))
        self.maps: list[np.ndarray] | None = None
        if not isinstance(streaks, (str, os.PathLike)):
            # In-memory maps (uint8 H x W grey or H x W x 3), e.g. from a training pack.
            self.maps = [np.asarray(m) for m in streaks]
            if not self.maps or any(m.dtype != np.uint8 or m.ndim not in (2, 3) for m in self.maps):
                raise ValueError("RainMix needs a non-empty list of uint8 H x W (x 3) streak maps")
            self.files = [Path(f"map{i}") for i in range(len(self.maps))]
            self.cache_size, self._cache = 0, OrderedDict()
            return
        streak_dir = Path(streaks)
        if not streak_dir.is_dir():
            raise FileNotFoundError(f"RainMix streak folder {streak_dir} does not exist; pass the folder of "
                                    f"Garg-Nayar streak images (streaks_garg06/ in the data directory)")
        try:
            self.files = list_images(streak_dir)
        except FileNotFoundError:
            raise FileNotFoundError(f"RainMix streak folder {streak_dir} holds no images; pass the folder of "
                                    f"Garg-Nayar streak images (streaks_garg06/ in the data directory)") from None
        # Maps are drawn uniformly from all 825, so a bounded LRU hits with probability only about
        # cache_size/825; decoding a map costs ~2 ms against ~10 ms for the chains, so the cache
        # just trims that while the bound keeps each DataLoader worker's copy small (grey maps are
        # kept as one channel: 256 x ~180 KB = ~46 MB). Caching all 825 would cost ~150 MB per worker.
        self.cache_size = cache_size
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()

    def __repr__(self) -> str:
        source = f"{len(self.maps)} in-memory" if self.maps is not None else f"{self.files[0].parent},"
        return f"RainMix({source} variant={self.variant!r}, {len(self.files)} streak maps, opacity={self.opacity})"

    def load_streak(self, index: int) -> np.ndarray:
        """Streak map ``index`` as uint8, H x W for grey maps (all Garg–Nayar maps) else H x W x 3."""
        if self.maps is not None:
            return self.maps[index]
        path = self.files[index]
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        image = read_image_uint8(path)
        # Grey maps are stored and warped as one channel (3x less memory and work) and broadcast
        # over RGB when composited.
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
            image = np.ascontiguousarray(image[..., 0])
        image.setflags(write=False)
        if self.cache_size:
            self._cache[path] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return image

    def sample_streak_layer(self, rng: np.random.Generator) -> np.ndarray:
        """A random streak map, augmented and mixed (float32, streak-map size, H x W or H x W x 3)."""
        original = self.load_streak(int(rng.integers(len(self.files))))
        if self.variant == "paper":
            return self._mix_paper(original.astype(np.float32) / 255.0, rng)
        return self._mix_code(original.astype(np.float32) / 255.0, rng)

    def _random_chain(self, depth: int, rng: np.random.Generator, width: int, height: int) -> list[np.ndarray]:
        return [sample_operation(OPERATIONS[int(rng.integers(len(OPERATIONS)))], rng, width, height)
                for _ in range(depth)]

    def _mix_paper(self, original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = original.shape[:2]
        ws = rng.dirichlet([1.0] * 4)
        w = rng.beta(1.0, 1.0)
        mixed = np.zeros_like(original)
        for weight in ws:
            chain = self._random_chain(int(rng.integers(1, 4)), rng, width, height)
            # Output->input maps compose right to left: o2(o1(R))(x) = R(M1 @ M2 @ x).
            matrix = np.linalg.multi_dot(chain + [np.eye(3)])
            mixed += np.float32(weight) * warp_float(original, matrix)
        return (w * original + (1.0 - w) * mixed).astype(np.float32)

    def _mix_code(self, original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = original.shape[:2]
        ws = rng.dirichlet([1.0] * 3).astype(np.float32)
        m = np.float32(rng.beta(1.0, 1.0))
        depth = int(rng.integers(2, 4))  # drawn once for all chains, as in the code (see module docstring)
        mixed = np.zeros_like(original)
        for weight in ws:
            augmented = original
            for matrix in self._random_chain(depth, rng, width, height):
                # The code's round trip: truncate to uint8, PIL bilinear, back to [0, 1].
                pixels = np.clip(augmented * 255.0, 0, 255).astype(np.uint8)
                augmented = warp_pil_uint8(pixels, matrix) / 255.0
            mixed += weight * augmented.astype(np.float32)
        a, b = code_blend_weights(ws, m)
        return (a * original + b * mixed).astype(np.float32)

    def apply(self, rain: np.ndarray, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The augmented rainy image for the pair ``(rain, clean)`` (float32 H x W x 3, same size).

        Random draws, in order: the base image (rainy with probability ``rainy_base_prob``), the
        streak layer (``sample_streak_layer``), its window (``fit_to_size``), then its opacity (only when
        ``opacity`` is not the papers' full strength).
        """
        if rain.shape != clean.shape or rain.ndim != 3 or rain.shape[2] != 3:
            raise ValueError(f"RainMix.apply expects two HxWx3 images of one size, got {rain.shape} and {clean.shape}")
        base = rain if rng.random() < self.rainy_base_prob else clean
        layer = fit_to_size(self.sample_streak_layer(rng), base.shape[0], base.shape[1], rng)
        if layer.ndim == 2:
            layer = layer[:, :, None]
        if self.opacity != (1.0, 1.0):
            layer = layer * np.float32(rng.uniform(*self.opacity))
        if self.variant == "paper":
            return np.clip(base + layer, 0.0, 1.0).astype(np.float32)
        return (base + layer - base * layer).astype(np.float32)
