"""Image-quality metrics: PSNR and SSIM on the Y channel or on RGB (numpy in, float out).

Conventions follow the deraining literature and scikit-image, so numbers are comparable with the papers:

* Y channel = BT.601 luma of MATLAB's ``rgb2ycbcr`` on the [0, 255] scale (range 16..235), kept as
  float (not rounded to uint8 as MATLAB does for uint8 input); PSNR/SSIM on Y use ``data_range = 255``.
* RGB: images in [0, 1] with ``data_range = 1`` (identical to 255 after scaling); PSNR over all three
  channels at once, SSIM = mean of the per-channel SSIMs.
* SSIM (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5 (scikit-image's ``truncate=3.5``),
  K1 = 0.01, K2 = 0.03, population covariances, averaged over the region where the window fits inside
  the image.  This equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=...)`` computed in float64.

Inputs are clipped to [0, 1] before anything else, as a saved 8-bit image would be.
"""
from __future__ import annotations

import math
import cv2
import numpy as np

__all__ = ["rgb_to_y", "psnr", "ssim", "MetricAccumulator"]

CHANNELS = ("y", "rgb")
# scikit-image's Gaussian SSIM: sigma 1.5 truncated at 3.5 sigma -> radius int(3.5 * 1.5 + 0.5) = 5.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
_Y_OFFSET = 16.0


def _gaussian_taps(radius: int, sigma: float) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


_SSIM_TAPS = _gaussian_taps(SSIM_RADIUS, SSIM_SIGMA)


def _check_float(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img)
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{what} must be a float image in [0, 1], got dtype {img.dtype}; "
                         f"convert with img.astype(np.float32) / 255")
    return img


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` of an RGB image in [0, 1] (``...x3``).

    This is the convention of the deraining papers (MATLAB ``rgb2ycbcr``, also
    ``skimage.color.rgb2ycbcr(...)[..., 0]``): the result is on the [0, 255] scale, 16..235 for inputs
    in [0, 1].  Returned as float64 without clipping or rounding.
    """
    img = _check_float(img, "rgb_to_y input")
    if img.ndim == 0 or img.shape[-1] != 3:
        raise ValueError(f"rgb_to_y expects an RGB image with 3 channels last (HxWx3), got shape {img.shape}")
    return img.astype(np.float64) @ _Y_WEIGHTS + _Y_OFFSET


def _prepare(pred: np.ndarray, target: np.ndarray, channel: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate, clip to [0, 1] and convert both images; return them (float64) and the data range."""
    pred, target = _check_float(pred, "pred"), _check_float(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}; "
                         f"compare images of the same size")
    if pred.ndim != 3 or pred.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {pred.shape}; transpose CHW tensors to HWC")
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    pred = np.clip(pred.astype(np.float64), 0.0, 1.0)
    target = np.clip(target.astype(np.float64), 0.0, 1.0)
    if channel == "y":
        return rgb_to_y(pred), rgb_to_y(target), 255.0
    return pred, target, 1.0


def psnr(pred: np.ndarray, target: np.ndarray, channel: str = "y") -> float:
    """Peak signal-to-noise ratio in dB of two HxWx3 float images in [0, 1].

    ``channel="y"``: on the BT.601 luma (0..255 scale, peak 255); ``"rgb"``: over all channels
    (peak 1).  Identical images give ``inf``.
    """
    pred, target, data_range = _prepare(pred, target, channel)
    mse = float(np.mean((pred - target) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def _gaussian_valid(img: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean at every position where the 11x11 window fits inside ``img``."""
    # The border mode never matters: everything within the radius of the border is cropped away.
    blurred = cv2.sepFilter2D(img, cv2.CV_64F, _SSIM_TAPS, _SSIM_TAPS, borderType=cv2.BORDER_REFLECT)
    r = SSIM_RADIUS
    return blurred[r:-r, r:-r]


def _ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _gaussian_valid(x), _gaussian_valid(y)
    var_x = _gaussian_valid(x * x) - mu_x * mu_x
    var_y = _gaussian_valid(y * y) - mu_y * mu_y
    cov = _gaussian_valid(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim(pred: np.ndarray, target: np.ndarray, channel: str = "y") -> float:
    """Structural similarity (Wang et al.) of two HxWx3 float images in [0, 1], as scikit-image computes it.

    ``channel="y"``: on the BT.601 luma (0..255 scale, ``data_range=255``); ``"rgb"``: mean of the three
    per-channel SSIMs (``data_range=1``).  Both sides must be at least 11 pixels (the window size).
    """
    pred, target, data_range = _prepare(pred, target, channel)
    size = 2 * SSIM_RADIUS + 1
    if min(pred.shape[:2]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} (its window), got {pred.shape[:2]}")
    if channel == "y":
        return _ssim_plane(pred, target, data_range)
    return float(np.mean([_ssim_plane(np.ascontiguousarray(pred[..., c]), np.ascontiguousarray(target[..., c]),
                                      data_range) for c in range(3)]))


class MetricAccumulator:
    """Collects per-image metric rows (``name`` plus float values) and reports their means.

    ``add_pair`` computes PSNR and SSIM of one prediction (keys ``psnr_<channel>``, ``ssim_<channel>``);
    ``add`` records values computed elsewhere (timings, metrics of the rainy input, ...).  Means are taken
    per key over the rows that have it; a PSNR of ``inf`` (a perfect image) makes that mean ``inf``.
    """

    def __init__(self, channels: tuple[str, ...] = CHANNELS):
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown or not channels:
            raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, got {channels!r}")
        self.channels = tuple(channels)
        self.rows: list[dict] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, name: str, **values: float) -> dict:
        """Record a row of already computed values; returns it."""
        if not values:
            raise ValueError(f"add({name!r}) got no values; pass them as keywords, e.g. add(name, psnr_y=31.2)")
        row = {"name": name, **{key: float(value) for key, value in values.items()}}
        self.rows.append(row)
        return row

    def add_pair(self, name: str, pred: np.ndarray, target: np.ndarray, **extra: float) -> dict:
        """Compute PSNR/SSIM of ``pred`` against ``target`` for every channel mode, record and return the row."""
        values: dict[str, float] = {}
        for channel in self.channels:
            values[f"psnr_{channel}"] = psnr(pred, target, channel)
            values[f"ssim_{channel}"] = ssim(pred, target, channel)
        return self.add(name, **values, **extra)

    def means(self) -> dict[str, float]:
        """Mean of every recorded key (over the rows that have it), in first-seen key order."""
        sums: dict[str, list[float]] = {}
        for row in self.rows:
            for key, value in row.items():
                if key != "name":
                    sums.setdefault(key, []).append(value)
        return {key: float(np.mean(values)) for key, values in sums.items()}

    def summary(self) -> str:
        """One line ``"<n> images: psnr_y 31.20, ssim_y 0.9012, ..."`` (PSNR 2 decimals, others 4)."""
        parts = [f"{key} {value:.2f}" if key.startswith("psnr") else f"{key} {value:.4f}"
                 for key, value in self.means().items()]
        return f"{len(self.rows)} images: " + ", ".join(parts)
