"""Writing a new calibration set: frames padded like at inference, stored as 8-bit PNG with their targets, the
manifest last; and the crops and conversions the collectors share."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..backends.base import pad_to_multiple_np
from ..utils import atomic_write_bytes, atomic_write_json
from .calibration_set import FORMAT, MANIFEST_NAME, PREPROCESSING, CalibrationSet, Frame, file_sha256


class SetWriter:
    """Writes padded frames (and targets) into a new set folder and the manifest last."""

    def __init__(self, out_dir: str | os.PathLike, input_multiple: int):
        if isinstance(input_multiple, bool) or not isinstance(input_multiple, int) or input_multiple < 1:
            raise ValueError(f"input_multiple must be a positive int (the model's, e.g. 16), got {input_multiple!r}")
        self.root = Path(out_dir)
        if self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"{self.root} is not empty; write the calibration set to a new folder")
        self.multiple = input_multiple
        self.frames: list[Frame] = []

    def add(self, image: np.ndarray, split: str, stratum: str, source: str, target: np.ndarray | None = None,
            rain_score: float | None = None) -> Frame:
        """``image``/``target``: uint8 H x W x 3 RGB. The image is stored padded, the target as is."""
        index = len(self.frames)
        height, width = image.shape[:2]
        padded = pad_to_multiple_np(image.transpose(2, 0, 1)[None], self.multiple)[0].transpose(1, 2, 0)
        file = f"frames/{index:05d}.png"
        self._write_png(file, padded)
        target_file = None
        if target is not None:
            target_file = f"targets/{index:05d}.png"
            self._write_png(target_file, target)
        frame = Frame(file, split, stratum, source, int(height), int(width), file_sha256(self.root / file),
                      target_file, None if rain_score is None else round(float(rain_score), 6))
        self.frames.append(frame)
        return frame

    def _write_png(self, relative: str, image: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {relative} as PNG")
        atomic_write_bytes(self.root / relative, encoded.tobytes())

    def finish(self, origin: dict) -> "CalibrationSet":
        from .. import __version__

        if not self.frames:
            raise ValueError("no frames were collected; check the sources")
        manifest = {"format": FORMAT, "created_by": f"edge_derain {__version__}", "input_multiple": self.multiple,
                    "preprocessing": PREPROCESSING, "origin": origin,
                    "frames": [frame.to_dict() for frame in self.frames]}
        atomic_write_json(self.root / MANIFEST_NAME, manifest)
        return CalibrationSet.load(self.root)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> 8-bit, as a camera or an image file delivers frames."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def parse_size(value, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{what} must be [height, width] positive ints or null, got {value!r}")
    return int(value[0]), int(value[1])


def random_crop(image: np.ndarray, crop: tuple[int, int] | None, rng: np.random.Generator, source: str):
    from ..data import random_crop_box

    if crop is None:
        return image
    if crop[0] > image.shape[0] or crop[1] > image.shape[1]:
        raise ValueError(f"crop {crop[0]}x{crop[1]} does not fit {source} ({image.shape[0]}x{image.shape[1]}); "
                         "use a smaller crop")
    top, left = random_crop_box(image.shape[0], image.shape[1], crop[0], crop[1], rng)
    return image[top:top + crop[0], left:left + crop[1]]
