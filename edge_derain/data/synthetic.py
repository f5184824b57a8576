"""Synthetic rain: a fast streak renderer and the dataset that pairs it with clean images.

Rendering model (per image): random drop seeds, sparse in the image plane, are convolved with an
oriented streak kernel (a line of the sampled length and width at the sampled angle, tapered at
the ends: the drop's motion blur during the exposure, then a Gaussian defocus blur), scaled to the
sampled brightness. A near and a far layer (shorter, thinner, dimmer, denser: drops further from
the camera) are summed into the streak layer ``S``. The background is veiled by rain accumulation
(haze: ``B' = t*B + (1-t)*A`` with transmission ``t`` and atmospheric light ``A``, as in Yang et
al.'s heavy-rain model) and the streaks are composited on top, by screen (``1-(1-B')(1-S)``, never
darker) or clipped addition.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .io import list_images, read_image
from .paired import SeededPairDataset
from .rainmix import RainMix
from .transforms import random_crop_flip

Range = tuple[float, float]
BLEND_MODES = ("screen", "additive")
_RANGE_FIELDS = ("angle", "length", "width", "density", "blur", "brightness", "haze", "atmospheric_light")
# Far layer relative to the near one (sizes, brightness and density of more distant drops).
_FAR_LENGTH, _FAR_WIDTH, _FAR_BRIGHTNESS, _FAR_DENSITY, _FAR_ANGLE_JITTER_DEG = 0.5, 0.6, 0.55, 2.0, 4.0

PRESETS: dict[str, dict] = {
    # Real rain photographed at video shutter speeds is long, thin, semi-transparent streaks (the
    # look of Rain100H/SIRR-style data), not short opaque dashes; heavier rain adds length, density
    # and the veiling haze of rain accumulation rather than saturating the frame.
    "light": dict(length=(15.0, 40.0), width=(0.6, 1.0), density=(0.0015, 0.003), brightness=(0.15, 0.3),
                  haze=(0.0, 0.05)),
    "medium": dict(length=(25.0, 55.0), width=(0.7, 1.2), density=(0.002, 0.004), brightness=(0.2, 0.35),
                   haze=(0.03, 0.1)),
    "heavy": dict(length=(35.0, 80.0), width=(0.9, 1.5), density=(0.003, 0.006), brightness=(0.3, 0.45),
                  haze=(0.08, 0.18)),
}


@dataclass(frozen=True)
class RainRenderer:
    """Ranges (lo, hi) that each rendered image samples uniformly from; the defaults span all presets.

    angle: streak angle in degrees from vertical, positive = drops moving right (top-left to
    bottom-right). length / width: near-layer streak length (the motion blur extent) and line width
    in pixels. density: drop seeds per pixel of the near layer. blur: Gaussian defocus sigma (px).
    brightness: peak value of an isolated near streak. haze: ``1 - t`` (rain accumulation).
    atmospheric_light: ``A``. layers: 1 (near) or 2 (near + far). blend: "screen" or "additive".
    """

    angle: Range = (-30.0, 30.0)
    length: Range = (15.0, 80.0)
    width: Range = (0.6, 1.5)
    density: Range = (0.0015, 0.006)
    blur: Range = (0.3, 1.0)
    brightness: Range = (0.15, 0.45)
    haze: Range = (0.0, 0.18)
    atmospheric_light: Range = (0.75, 1.0)
    layers: int = 2
    blend: str = "screen"

    def __post_init__(self):
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"RainRenderer.{name} must be a (low, high) pair with low <= high, got {value!r}")
        minimums = {"length": 1.0, "width": 0.1, "density": 0.0, "blur": 0.0, "brightness": 0.0, "haze": 0.0,
                    "atmospheric_light": 0.0}
        for name, low in minimums.items():
            if getattr(self, name)[0] < low:
                raise ValueError(f"RainRenderer.{name} must be >= {low}, got {getattr(self, name)!r}")
        for name in ("density", "brightness", "haze", "atmospheric_light"):
            if getattr(self, name)[1] > 1.0:
                raise ValueError(f"RainRenderer.{name} must be <= 1, got {getattr(self, name)!r}")
        if self.layers not in (1, 2):
            raise ValueError(f"RainRenderer.layers must be 1 (near) or 2 (near + far), got {self.layers!r}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"RainRenderer.blend must be 'screen' or 'additive', got {self.blend!r}")

    @classmethod
    def preset(cls, intensity: str, **overrides) -> "RainRenderer":
        """The "light", "medium" or "heavy" renderer (used to stratify calibration sets), with overrides."""
        if intensity not in PRESETS:
            raise ValueError(f"unknown rain intensity {intensity!r}; choose from {', '.join(PRESETS)}")
        return replace(cls(**PRESETS[intensity]), **overrides)

    def render(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rain on ``clean`` (float32 H x W x 3 in [0, 1]) -> ``(rainy, streak_layer)``, both H x W x 3 in [0, 1].

        ``streak_layer`` is ``S`` (grey, repeated over RGB), without the haze.
        """
        if clean.ndim != 3 or clean.shape[2] != 3:
            raise ValueError(f"RainRenderer.render expects an HxWx3 image, got shape {clean.shape}")
        height, width = clean.shape[:2]
        angle = rng.uniform(*self.angle)
        length, line_width = rng.uniform(*self.length), rng.uniform(*self.width)
        density, brightness = rng.uniform(*self.density), rng.uniform(*self.brightness)
        sigma = rng.uniform(*self.blur)
        transmission = 1.0 - rng.uniform(*self.haze)
        light = rng.uniform(*self.atmospheric_light)

        streaks = _streak_layer(height, width, angle, length, line_width, sigma, density, brightness, rng)
        if self.layers == 2:
            far_angle = angle + rng.normal(0.0, _FAR_ANGLE_JITTER_DEG)
            streaks += _streak_layer(height, width, far_angle, max(1.0, _FAR_LENGTH * length),
                                     _FAR_WIDTH * line_width, sigma, min(1.0, _FAR_DENSITY * density),
                                     _FAR_BRIGHTNESS * brightness, rng)
        streaks = np.clip(streaks, 0.0, 1.0)[:, :, None]

        background = clean.astype(np.float32)
        if transmission < 1.0:
            background = transmission * background + np.float32((1.0 - transmission) * light)
        if self.blend == "screen":
            rainy = 1.0 - (1.0 - background) * (1.0 - streaks)
        else:
            rainy = background + streaks
        rainy = np.clip(rainy, 0.0, 1.0).astype(np.float32)
        return rainy, np.repeat(streaks, 3, axis=2)


def streak_kernel(angle_deg: float, length: float, width: float, sigma: float) -> np.ndarray:
    """Oriented streak kernel with peak 1: a line tapered at its ends, Gaussian across, defocused.

    Built analytically on a grid so fractional lengths and widths are exact (no rasterised lines).
    """
    theta = math.radians(angle_deg)
    direction = (math.sin(theta), math.cos(theta))  # (x, y) with y pointing down: the fall direction
    radius = int(math.ceil(length / 2 + 2 * width + 3 * sigma)) + 1
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float32)
    along = xs * direction[0] + ys * direction[1]
    across = xs * direction[1] - ys * direction[0]
    # Rounded ends (sqrt(1 - s^2) taper) look like real streaks, which fade where the drop enters and
    # leaves the exposure, rather than like hard-edged bars.
    taper = np.sqrt(np.clip(1.0 - (2.0 * along / length) ** 2, 0.0, 1.0))
    # A line of full width at half maximum `width`; a floor on the sigma keeps sub-pixel lines from
    # vanishing between grid points.
    kernel = taper * np.exp(-0.5 * (across / max(width / 2.355, 0.4)) ** 2)
    if sigma > 0:
        kernel = cv2.GaussianBlur(kernel, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return (kernel / kernel.max()).astype(np.float32)


def _streak_layer(height: int, width: int, angle: float, length: float, line_width: float, sigma: float,
                  density: float, brightness: float, rng: np.random.Generator) -> np.ndarray:
    kernel = streak_kernel(angle, length, line_width, sigma)
    pad = kernel.shape[0] // 2
    # Seeds are scattered over a margin as wide as the kernel, so streaks that enter the image from
    # outside are not missing along the borders.
    canvas_h, canvas_w = height + 2 * pad, width + 2 * pad
    count = rng.poisson(density * canvas_h * canvas_w)
    seeds = np.zeros((canvas_h, canvas_w), np.float32)
    seeds[rng.integers(0, canvas_h, count), rng.integers(0, canvas_w, count)] = rng.uniform(0.6, 1.0, count)
    layer = cv2.filter2D(seeds, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    return brightness * layer[pad:pad + height, pad:pad + width]


class SyntheticRainDataset(SeededPairDataset):
    """(rain, clean) pairs made by rendering rain on clean images (e.g. ``clean_bsd/``).

    Each item crops/flips a clean image, then renders rain on the crop with ``renderer`` (and, with
    probability ``rainmix_prob``, adds RainMix streaks); all draws come from the item's seeded rng.
    """

    def __init__(self, clean: str | os.PathLike | Sequence[str | os.PathLike], renderer: RainRenderer | None = None,
                 rainmix: RainMix | None = None, crop: int | None = 256, flip: bool = True, seed: int = 0,
                 repeat: int = 1, rainmix_prob: float = 1.0):
        super().__init__(crop=crop, flip=flip, seed=seed, repeat=repeat, rainmix=rainmix,
                         rainmix_prob=rainmix_prob)
        if isinstance(clean, (str, os.PathLike)):
            self.files = list_images(clean)
        else:
            self.files = [Path(p) for p in clean]
            if not self.files:
                raise ValueError("SyntheticRainDataset got an empty list of clean images; pass a folder or files")
        self.renderer = renderer if renderer is not None else RainRenderer()

    @property
    def num_sources(self) -> int:
        return len(self.files)

    def load_pair(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        path = self.files[source]
        (clean,) = random_crop_flip([read_image(path)], self.crop, self.flip, rng)
        rainy, _ = self.renderer.render(clean, rng)
        return rainy, clean, path.name
