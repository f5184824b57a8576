"""Synthetic rain: a streak renderer covering the range of real rain, and the dataset pairing it with clean images.

Rendering model (per image), after the physics of rain seen by a camera (Garg & Nayar 2007; the
rain-accumulation model of Yang et al. 2017):

* **Streaks.** Drops at random positions are convolved with an oriented streak kernel: a line of the
  sampled length (the drop's motion blur during the exposure) and width, tapered at its ends,
  Gaussian across, then defocus-blurred. Drop density is sampled log-uniformly (it spans orders of
  magnitude, from a few drops to a dense sheet of fine streaks).
* **Depth.** Rain fills a volume: ``depth_layers`` planes, each further plane with shorter, thinner,
  dimmer and denser streaks (perspective), so streak size depends on depth.
* **Directions.** Wind gusts give streaks in several directions in one image (the Rain100H look):
  ``directions`` families, each turned by ``direction_spread`` degrees from the previous one.
* **Accumulation / veiling haze.** Distant rain scatters light like fog:
  ``B' = t*B + (1-t)*A`` with atmospheric light ``A`` and a transmission map ``t`` that falls with a
  smooth random depth map (``haze_variation`` 0 = a uniform veil, 1 = from clear to twice the mean).
* **Compositing** by screen (``1-(1-B')(1-S)``, never darker) or clipped addition.

The presets span drizzle that barely changes the image to storms; ``NO_RAIN`` ("none") in the training
recipe leaves images dry, so a model learns to leave dry frames untouched.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
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
# Each further depth plane relative to the nearer one: streak length, width, brightness, density.
_DEPTH_LENGTH, _DEPTH_WIDTH, _DEPTH_BRIGHTNESS, _DEPTH_DENSITY = 0.5, 0.6, 0.55, 2.0
_DEPTH_ANGLE_JITTER_DEG = 4.0  # drops further away fall in nearly, not exactly, the same direction
_MAX_DENSITY = 0.2  # seeds per pixel of one plane: beyond this the layer is a uniform veil, not streaks
NO_RAIN = "none"

PRESETS: dict[str, dict] = {
    # Fine, faint, sparse streaks that barely change the image: the model must gain here, not lose.
    "drizzle": dict(length=(8.0, 25.0), width=(0.5, 0.8), density=(0.0005, 0.002), brightness=(0.08, 0.2),
                    haze=(0.0, 0.0), depth_layers=(1, 2)),
    # Real rain photographed at video shutter speeds is long, thin, semi-transparent streaks (the
    # look of Rain100L/SIRR-style data), not short opaque dashes; heavier rain adds length, density,
    # width and the veiling haze of rain accumulation rather than saturating the frame.
    "light": dict(length=(15.0, 40.0), width=(0.6, 1.0), density=(0.0015, 0.004), brightness=(0.12, 0.3),
                  haze=(0.0, 0.05)),
    "medium": dict(length=(25.0, 55.0), width=(0.7, 1.2), density=(0.002, 0.005), brightness=(0.2, 0.35),
                   haze=(0.03, 0.1)),
    "heavy": dict(length=(35.0, 80.0), width=(0.9, 1.5), density=(0.003, 0.007), brightness=(0.3, 0.45),
                  haze=(0.08, 0.18), depth_layers=(2, 3)),
    # Thick bright streaks in several directions over strong accumulation (the Rain100H look).
    "storm": dict(length=(30.0, 90.0), width=(1.2, 2.5), density=(0.0015, 0.005), brightness=(0.22, 0.4),
                  haze=(0.1, 0.3), directions=(2, 3), depth_layers=(2, 3), blend="additive"),
    # A sheet of many faint fine streaks that lifts the whole image (the look of Photoshop-style
    # synthetic sets such as Rain1400/Rain800 and of rain against a bright sky).
    "dense": dict(length=(15.0, 60.0), width=(0.5, 1.0), density=(0.015, 0.06), brightness=(0.03, 0.1),
                  haze=(0.0, 0.12)),
    # Faint streaks under strong, uneven accumulation: rain falling between the camera and a distant
    # background veils it far more than its few visible streaks suggest. The other presets tie the veil
    # to streak strength; this one does not, so a model learns to lift a veil where streaks are light.
    "mist": dict(length=(10.0, 40.0), width=(0.5, 1.0), density=(0.001, 0.004), brightness=(0.08, 0.25),
                 haze=(0.1, 0.35), haze_variation=(0.3, 1.0), depth_layers=(1, 2)),
}


def _check_range(name: str, value, low: float | None = None, high: float | None = None) -> None:
    if len(value) != 2 or not value[0] <= value[1]:
        raise ValueError(f"RainRenderer.{name} must be a (low, high) pair with low <= high, got {value!r}")
    if low is not None and value[0] < low:
        raise ValueError(f"RainRenderer.{name} must be >= {low}, got {value!r}")
    if high is not None and value[1] > high:
        raise ValueError(f"RainRenderer.{name} must be <= {high}, got {value!r}")


@dataclass(frozen=True)
class RainRenderer:
    """Ranges (lo, hi) that each rendered image samples from; the defaults span drizzle to heavy rain.

    angle: main streak angle in degrees from vertical, positive = drops moving right (top-left to
    bottom-right). directions: how many streak directions (int range); each further one is turned by
    ``direction_spread`` degrees (random sign). length / width: near-plane streak length (the motion
    blur extent) and line width in pixels. density: drop seeds per pixel of the near plane (sampled
    log-uniformly). blur: Gaussian defocus sigma (px). brightness: peak value of an isolated near streak.
    depth_layers: how many depth planes (int range). haze: mean ``1 - t`` (rain accumulation).
    haze_variation: how much ``1 - t`` varies with the random depth map (0 = uniform).
    atmospheric_light: ``A``. blend: "screen" or "additive".
    """

    angle: Range = (-30.0, 30.0)
    directions: tuple[int, int] = (1, 1)
    direction_spread: Range = (15.0, 45.0)
    length: Range = (8.0, 80.0)
    width: Range = (0.5, 1.5)
    density: Range = (0.0005, 0.007)
    blur: Range = (0.3, 1.0)
    brightness: Range = (0.06, 0.45)
    depth_layers: tuple[int, int] = (1, 2)
    haze: Range = (0.0, 0.18)
    haze_variation: Range = (0.0, 1.0)
    atmospheric_light: Range = (0.75, 1.0)
    blend: str = "screen"

    def __post_init__(self):
        _check_range("angle", self.angle, -90.0, 90.0)
        _check_range("direction_spread", self.direction_spread, 0.0, 90.0)
        _check_range("length", self.length, 1.0)
        _check_range("width", self.width, 0.1)
        _check_range("density", self.density, 0.0, _MAX_DENSITY)
        _check_range("blur", self.blur, 0.0)
        _check_range("brightness", self.brightness, 0.0, 1.0)
        _check_range("haze", self.haze, 0.0, 0.95)
        _check_range("haze_variation", self.haze_variation, 0.0, 1.0)
        _check_range("atmospheric_light", self.atmospheric_light, 0.0, 1.0)
        for name, most in (("directions", 4), ("depth_layers", 4)):
            value = getattr(self, name)
            if len(value) != 2 or not 1 <= value[0] <= value[1] <= most or any(int(v) != v for v in value):
                raise ValueError(f"RainRenderer.{name} must be a (low, high) pair of whole numbers in 1..{most}, "
                                 f"got {value!r}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"RainRenderer.blend must be 'screen' or 'additive', got {self.blend!r}")

    @classmethod
    def preset(cls, intensity: str, **overrides) -> "RainRenderer":
        """A named look (``PRESETS``: drizzle, light, medium, heavy, storm, dense, mist), with overrides."""
        if intensity not in PRESETS:
            raise ValueError(f"unknown rain intensity {intensity!r}; choose from {', '.join(PRESETS)}")
        return replace(cls(**PRESETS[intensity]), **overrides)

    def sample_look(self, rng: np.random.Generator) -> "RainRenderer":
        """This renderer with every range collapsed to one drawn value: one shower whose density, streak
        size, angle and haze stay fixed while each frame gets new drops (rain in a video does not change
        its character from frame to frame). Whole-number ranges (directions, depth planes) keep their
        drawn integer."""
        fixed = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                drawn = (int(rng.integers(value[0], value[1] + 1)) if f.name in ("directions", "depth_layers")
                         else float(rng.uniform(*value)))
                fixed[f.name] = (drawn, drawn)
        return replace(self, **fixed)

    def describe(self) -> dict:
        """The renderer's ranges as plain JSON (recorded in training sidecars)."""
        out = {}
        for field in fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def render(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rain on ``clean`` (float32 H x W x 3 in [0, 1]) -> ``(rainy, streak_layer)``, both H x W x 3 in [0, 1].

        ``streak_layer`` is ``S`` (grey, repeated over RGB), without the haze.
        """
        if clean.ndim != 3 or clean.shape[2] != 3:
            raise ValueError(f"RainRenderer.render expects an HxWx3 image, got shape {clean.shape}")
        height, width = clean.shape[:2]
        angle = rng.uniform(*self.angle)
        directions = int(rng.integers(self.directions[0], self.directions[1] + 1))
        planes = int(rng.integers(self.depth_layers[0], self.depth_layers[1] + 1))
        length, line_width = rng.uniform(*self.length), rng.uniform(*self.width)
        low, high = self.density
        density = math.exp(rng.uniform(math.log(max(low, 1e-6)), math.log(max(high, 1e-6)))) if high > 0 else 0.0
        brightness, sigma = rng.uniform(*self.brightness), rng.uniform(*self.blur)

        streaks = np.zeros((height, width), np.float32)
        for family in range(directions):
            family_angle = angle
            if family:
                family_angle += rng.choice((-1.0, 1.0)) * family * rng.uniform(*self.direction_spread)
            for plane in range(planes):
                plane_angle = family_angle + (rng.normal(0.0, _DEPTH_ANGLE_JITTER_DEG) if plane else 0.0)
                streaks += _streak_layer(
                    height, width, plane_angle, max(1.0, length * _DEPTH_LENGTH ** plane),
                    max(0.3, line_width * _DEPTH_WIDTH ** plane), sigma,
                    min(_MAX_DENSITY, density * _DEPTH_DENSITY ** plane / directions),
                    brightness * _DEPTH_BRIGHTNESS ** plane, rng)
        streaks = np.clip(streaks, 0.0, 1.0)[:, :, None]

        background = clean.astype(np.float32)
        haze = rng.uniform(*self.haze)
        if haze > 0:
            veil = _haze_map(height, width, haze, rng.uniform(*self.haze_variation), rng)
            background = (1.0 - veil) * background + veil * np.float32(rng.uniform(*self.atmospheric_light))
        if self.blend == "screen":
            rainy = 1.0 - (1.0 - background) * (1.0 - streaks)
        else:
            rainy = background + streaks
        rainy = np.clip(rainy, 0.0, 1.0).astype(np.float32)
        return rainy, np.repeat(streaks, 3, axis=2)


def _haze_map(height: int, width: int, haze: float, variation: float, rng: np.random.Generator) -> np.ndarray:
    """``1 - t`` per pixel (H x W x 1): mean ``haze``, varying by ``variation`` with a smooth random depth
    map (further = hazier: a ramp towards a random horizon plus low-frequency noise)."""
    if variation <= 0:
        return np.full((height, width, 1), haze, np.float32)
    ys = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
    coarse = rng.random((4, 4)).astype(np.float32)
    noise = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    depth = 0.6 * ys + 0.4 * noise
    depth = (depth - depth.mean()) / max(float(np.abs(depth - depth.mean()).max()), 1e-6)   # in [-1, 1], mean 0
    veil = haze * (1.0 + variation * depth)
    return np.clip(veil, 0.0, 0.95)[:, :, None].astype(np.float32)


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
