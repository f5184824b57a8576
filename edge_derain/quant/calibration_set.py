"""Calibration sets: representative frames stored exactly as the engine sees them, plus a manifest.

A calibration set is a folder with ``manifest.json`` (format: ``calibration/MANIFEST.md``) and the frames
it lists. Every frame is stored *pre-processed as at inference*: RGB, padded at the bottom/right to a
multiple of the model's ``input_multiple`` with the same reflect padding the backends apply
(``pad_to_multiple_np``), as an 8-bit PNG whose values divided by 255 are the float32 [0, 1] NCHW
tensor fed to the network (camera frames and image files are 8-bit, so nothing is lost). A ``.npy``
frame holds that float32 tensor directly. Frames may carry a clean target (synthetic rain), which
the held-out split needs to measure accuracy drops.

Two ways to make a set (each in its module; ``set_writer`` writes them):

* :func:`.recipe_set.collect_from_recipe` — the default set: clean images of a data directory with synthetic rain
  (``RainRenderer`` presets) and RainMix (real Garg–Nayar streaks), stratified by rain intensity as
  the recipe says (``calibration/default_recipe.json``). Validation and evaluation folders (``val/``,
  ``real/``) are refused: calibrating on them would leak the images the model is judged on.
* :func:`.media_set.collect_from_media` — frames sampled from image files, videos, or a V4L2 camera (OpenCV),
  stratified by an estimated rain intensity (:func:`rain_score` terciles), because real footage comes
  without an intensity label.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT = "edge_derain.calibration/1"
SPLITS = ("calib", "holdout")
PREPROCESSING = {
    "colour": "RGB",
    "layout": "NCHW",
    "dtype": "float32",
    "range": [0.0, 1.0],
    "png": "8-bit RGB; tensor = value / 255",
    "padding": "bottom/right to a multiple of input_multiple, reflect (edge when the pad exceeds the side), "
               "as edge_derain.backends.pad_to_multiple_np",
}


@dataclass(frozen=True)
class Frame:
    """One manifest entry. ``height``/``width``: the frame before padding (outputs are cropped back to it)."""

    file: str
    split: str
    stratum: str
    source: str
    height: int
    width: int
    sha256: str
    target: str | None = None
    rain_score: float | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


#: Types of the manifest fields a loader relies on (a damaged manifest fails in one line, not deep inside).
_FRAME_TYPES = {"file": str, "split": str, "stratum": str, "source": str, "height": int, "width": int,
                "sha256": str, "target": (str, type(None)), "rain_score": (int, float, type(None))}


@dataclass(frozen=True)
class HoldoutPair:
    """A held-out frame with its clean target: ``input`` (1, 3, Hp, Wp) float32, ``target`` H x W x 3."""

    name: str
    input: np.ndarray
    target: np.ndarray


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decode_png_rgb(path: Path) -> np.ndarray:
    """An 8-bit 3-channel PNG as uint8 H x W x 3 RGB; one-line error for anything else."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ValueError(f"calibration frame {path} cannot be decoded; collect the set again")
    channels = 1 if data.ndim == 2 else data.shape[2]
    if channels != 3 or data.dtype != np.uint8:
        raise ValueError(f"calibration frame {path} has {channels} channel(s) of {data.dtype}; expected 8-bit RGB "
                         "(3 channels) as written by 'edge-derain calibrate collect'")
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


class CalibrationSet:
    """A loaded, validated calibration set (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, manifest: dict, frames: list[Frame]):
        self.root = Path(root)
        self.manifest = manifest
        self.frames = frames
        self.input_multiple = int(manifest["input_multiple"])

    @classmethod
    def load(cls, root: str | os.PathLike) -> "CalibrationSet":
        """Read ``root/manifest.json`` and check every listed file (presence, SHA-256, channels, size)."""
        root = Path(root)
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {root}; create a calibration set with "
                                    "'edge-derain calibrate collect'")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); collect the set again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not an edge_derain calibration manifest (format must be {FORMAT!r}); "
                             "see calibration/MANIFEST.md")
        multiple = manifest.get("input_multiple")
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"{path}: input_multiple must be a positive int, got {multiple!r}")
        entries = manifest.get("frames")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"calibration set {root} is empty (its manifest lists no frames); collect frames with "
                             "'edge-derain calibrate collect'")
        frames = []
        for index, entry in enumerate(entries):
            try:
                frame = Frame(**entry)
            except TypeError as exc:
                raise ValueError(f"{path}: frame {index} is malformed ({exc}); see calibration/MANIFEST.md") from None
            wrong = [name for name, kind in _FRAME_TYPES.items() if not isinstance(getattr(frame, name), kind)
                     or isinstance(getattr(frame, name), bool)]
            if wrong:
                raise ValueError(f"{path}: frame {index} has {', '.join(wrong)} of the wrong type; see "
                                 "calibration/MANIFEST.md")
            if frame.split not in SPLITS:
                raise ValueError(f"{path}: frame {frame.file} has split {frame.split!r}; use one of "
                                 f"{', '.join(SPLITS)}")
            frames.append(frame)
        out = cls(root, manifest, frames)
        for frame in frames:
            out._check_files(frame)
        return out

    def _check_files(self, frame: Frame) -> None:
        path = self.root / frame.file
        if not path.is_file():
            raise FileNotFoundError(f"calibration frame {path} listed in the manifest is missing; collect the set "
                                    "again")
        if file_sha256(path) != frame.sha256:
            raise ValueError(f"calibration frame {path} does not match its manifest SHA-256 (modified after "
                             "collection); collect the set again")
        if frame.target is not None and not (self.root / frame.target).is_file():
            raise FileNotFoundError(f"target {self.root / frame.target} listed in the manifest is missing")

    def __len__(self) -> int:
        return len(self.frames)

    def split(self, name: str) -> list[Frame]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return [frame for frame in self.frames if frame.split == name]

    def read_input(self, frame: Frame) -> np.ndarray:
        """The (1, 3, Hp, Wp) float32 [0, 1] tensor of ``frame``, checked against the manifest."""
        path = self.root / frame.file
        if path.suffix.lower() == ".npy":
            tensor = np.load(path, allow_pickle=False)
            if tensor.ndim == 3:
                tensor = tensor[None]
            if tensor.ndim != 4 or tensor.shape[:2] != (1, 3) or tensor.dtype != np.float32:
                raise ValueError(f"calibration frame {path} holds a {tensor.dtype} array of shape {tensor.shape}; "
                                 "expected float32 (1, 3, H, W) RGB in [0, 1]")
        else:
            tensor = (_decode_png_rgb(path).astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        hp, wp = tensor.shape[2:]
        if hp % self.input_multiple or wp % self.input_multiple:
            raise ValueError(f"calibration frame {path} is {hp}x{wp}, not padded to a multiple of "
                             f"{self.input_multiple} as its manifest says; collect the set again")
        if not (frame.height <= hp < frame.height + self.input_multiple
                and frame.width <= wp < frame.width + self.input_multiple):
            raise ValueError(f"calibration frame {path} is {hp}x{wp} but the manifest records {frame.height}x"
                             f"{frame.width} before padding to {self.input_multiple}; collect the set again")
        return np.ascontiguousarray(tensor)

    def check_for_model(self, input_multiple: int, channels: int = 3) -> None:
        """One-line ValueError unless the frames fit a model with this ``input_multiple`` and channel count."""
        if channels != 3:
            raise ValueError(f"the model takes {channels}-channel input but calibration frames are RGB (3 channels); "
                             "calibrate an RGB deraining model")
        if self.input_multiple % input_multiple:
            raise ValueError(f"calibration set {self.root} is padded to multiples of {self.input_multiple} but the "
                             f"model needs multiples of {input_multiple}; collect it again with --multiple "
                             f"{input_multiple}")

    def inputs(self, split: str = "calib") -> Iterator[np.ndarray]:
        """The frames of ``split`` as network inputs, read lazily; a one-line error now if there are none."""
        frames = self.split(split)
        if not frames:
            raise ValueError(f"calibration set {self.root} has no frames in its {split!r} split; collect more "
                             "frames with 'edge-derain calibrate collect'")
        return (self.read_input(frame) for frame in frames)

    def holdout_pairs(self) -> list[HoldoutPair]:
        """The held-out frames that have clean targets (synthetic rain), for measuring accuracy drops."""
        pairs = []
        for frame in self.split("holdout"):
            if frame.target is None:
                continue
            target = _decode_png_rgb(self.root / frame.target).astype(np.float32) / 255.0
            if target.shape[:2] != (frame.height, frame.width):
                raise ValueError(f"target {self.root / frame.target} is {target.shape[0]}x{target.shape[1]} but its "
                                 f"frame is {frame.height}x{frame.width}; collect the set again")
            pairs.append(HoldoutPair(Path(frame.file).stem, self.read_input(frame), target))
        return pairs

    def manifest_sha256(self) -> str:
        return file_sha256(self.root / MANIFEST_NAME)

    def describe(self) -> dict:
        """Counts per split and stratum, for reports."""
        counts: dict[str, dict[str, int]] = {}
        for frame in self.frames:
            counts.setdefault(frame.split, {}).setdefault(frame.stratum, 0)
            counts[frame.split][frame.stratum] += 1
        return {"path": str(self.root), "frames": len(self.frames), "input_multiple": self.input_multiple,
                "splits": counts, "manifest_sha256": self.manifest_sha256()}


#: Moved to the collectors' modules (which import this one); resolved on first use for the old import path.
_MOVED = {"collect_from_recipe": "recipe_set", "load_recipe": "recipe_set", "check_not_evaluation_folder": "recipe_set",
          "DEFAULT_RECIPE_PATH": "recipe_set", "EVALUATION_FOLDERS": "recipe_set", "collect_from_media": "media_set",
          "rain_score": "media_set", "stratified_pick": "media_set"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
