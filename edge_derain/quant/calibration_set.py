"""Calibration sets: representative frames stored exactly as the engine sees them, plus a manifest.

A calibration set is a folder with ``manifest.json`` (format: ``calibration/MANIFEST.md``) and the frames
it lists. Every frame is stored *pre-processed as at inference*: RGB, padded at the bottom/right to a
multiple of the model's ``input_multiple`` with the same reflect padding the backends apply
(``pad_to_multiple_np``), as an 8-bit PNG whose values divided by 255 are the float32 [0, 1] NCHW
tensor fed to the network (camera frames and image files are 8-bit, so nothing is lost). A ``.npy``
frame holds that float32 tensor directly. Frames may carry a clean target (synthetic rain), which
the held-out split needs to measure accuracy drops.

Two ways to make a set:

* :func:`collect_from_recipe` — the default set: clean images of a data directory with synthetic rain
  (``RainRenderer`` presets) and RainMix (real Garg–Nayar streaks), stratified by rain intensity as
  the recipe says (``calibration/default_recipe.json``). Validation and evaluation folders (``val/``,
  ``real/``) are refused: calibrating on them would leak the images the model is judged on.
* :func:`collect_from_media` — frames sampled from image files, videos, or a V4L2 camera (OpenCV),
  stratified by an estimated rain intensity (:func:`rain_score` terciles), because real footage comes
  without an intensity label.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from ..backends.base import pad_to_multiple_np
from ..resources import resource_dir
from ..utils import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT = "edge_derain.calibration/1"
SPLITS = ("calib", "holdout")
#: Data-directory folders that hold validation/evaluation images: never calibration material.
EVALUATION_FOLDERS = ("val", "real")
#: The repository's default recipe (calibration/, in the checkout or carried by a wheel).
DEFAULT_RECIPE_PATH = resource_dir("calibration") / "default_recipe.json"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_CAMERA_RE = re.compile(r"^(?:/dev/video(?P<dev>\d+)|camera:(?P<idx>\d+))$")
_INTENSITY_STRATA = ("light", "medium", "heavy")
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


def _sha256(path: Path) -> str:
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
        if _sha256(path) != frame.sha256:
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
        return _sha256(self.root / MANIFEST_NAME)

    def describe(self) -> dict:
        """Counts per split and stratum, for reports."""
        counts: dict[str, dict[str, int]] = {}
        for frame in self.frames:
            counts.setdefault(frame.split, {}).setdefault(frame.stratum, 0)
            counts[frame.split][frame.stratum] += 1
        return {"path": str(self.root), "frames": len(self.frames), "input_multiple": self.input_multiple,
                "splits": counts, "manifest_sha256": self.manifest_sha256()}


# --------------------------------------------------------------------------------------------------
# writing


class _SetWriter:
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
        frame = Frame(file, split, stratum, source, int(height), int(width), _sha256(self.root / file),
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


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> 8-bit, as a camera or an image file delivers frames."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _parse_size(value, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{what} must be [height, width] positive ints or null, got {value!r}")
    return int(value[0]), int(value[1])


def _random_crop(image: np.ndarray, crop: tuple[int, int] | None, rng: np.random.Generator, source: str):
    from ..data import random_crop_box

    if crop is None:
        return image
    if crop[0] > image.shape[0] or crop[1] > image.shape[1]:
        raise ValueError(f"crop {crop[0]}x{crop[1]} does not fit {source} ({image.shape[0]}x{image.shape[1]}); "
                         "use a smaller crop")
    top, left = random_crop_box(image.shape[0], image.shape[1], crop[0], crop[1], rng)
    return image[top:top + crop[0], left:left + crop[1]]


# --------------------------------------------------------------------------------------------------
# the default set: a recipe over a data directory


_RECIPE_KEYS = {"name", "description", "seed", "clean_dir", "streak_dir", "crop", "strata"}
_STRATUM_KEYS = {"name", "rain", "rainmix", "count", "holdout"}


def load_recipe(recipe: dict | str | os.PathLike | None = None) -> dict:
    """A recipe dict, a JSON file, or None for the repository's ``calibration/default_recipe.json``."""
    if isinstance(recipe, dict):
        return recipe
    path = Path(recipe) if recipe is not None else DEFAULT_RECIPE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"calibration recipe {path} not found" + (
            "; the default recipe lives in the repository's calibration/ folder: reinstall edge_derain or pass "
            "--recipe FILE"
            if recipe is None else ""))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"calibration recipe {path} is not valid JSON ({exc})") from None


def _check_recipe(recipe: dict) -> list[dict]:
    unknown = sorted(set(recipe) - _RECIPE_KEYS)
    if unknown:
        raise ValueError(f"unknown recipe key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_RECIPE_KEYS))}")
    strata = recipe.get("strata")
    if not isinstance(strata, list) or not strata:
        raise ValueError("the recipe needs a non-empty 'strata' list (see calibration/default_recipe.json)")
    from ..data import PRESETS

    names = set()
    for stratum in strata:
        unknown = sorted(set(stratum) - _STRATUM_KEYS)
        if unknown:
            raise ValueError(f"unknown stratum key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(_STRATUM_KEYS))}")
        name = stratum.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"every stratum needs a unique non-empty 'name', got {name!r}")
        names.add(name)
        if stratum.get("rain") is not None and stratum["rain"] not in PRESETS:
            raise ValueError(f"stratum {name!r}: rain must be null or one of {', '.join(PRESETS)}, "
                             f"got {stratum['rain']!r}")
        if stratum.get("rainmix") not in (None, "paper", "code"):
            raise ValueError(f"stratum {name!r}: rainmix must be null, 'paper' or 'code', got {stratum['rainmix']!r}")
        for key in ("count", "holdout"):
            value = stratum.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"stratum {name!r}: {key} must be a non-negative int, got {value!r}")
    if not sum(s.get("count", 0) for s in strata):
        raise ValueError("the recipe's strata ask for 0 calibration frames; give at least one stratum a count")
    return strata


def check_not_evaluation_folder(folder: Path, data_dir: Path) -> None:
    """Refuse ``val/`` and ``real/`` (and anything inside them) of a data directory."""
    try:
        parts = folder.resolve().relative_to(data_dir.resolve()).parts
    except ValueError:
        parts = folder.resolve().parts
    hit = [p for p in parts if p in EVALUATION_FOLDERS]
    if hit:
        raise ValueError(f"{folder} is an evaluation folder ({hit[0]}/): calibration must never see validation or "
                         "evaluation images; use clean images such as clean_bsd/")


def collect_from_recipe(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                        recipe: dict | str | os.PathLike | None = None, input_multiple: int = 16) -> CalibrationSet:
    """Generate a calibration set from ``data_dir`` as ``recipe`` says (default: the repository's recipe).

    Each stratum renders its rain preset (or none) on distinct clean backgrounds, optionally adds
    RainMix streaks, crops as the recipe says, rounds to 8 bits and stores ``count`` calibration and
    ``holdout`` held-out frames with their clean targets. Everything is drawn from
    ``default_rng(recipe["seed"])``, so a recipe reproduces the same set.
    """
    from ..data import RainMix, RainRenderer, list_images, read_image

    data_dir = Path(data_dir)
    recipe = load_recipe(recipe)
    strata = _check_recipe(recipe)
    crop = _parse_size(recipe.get("crop"), "recipe crop")
    clean_dir = data_dir / recipe.get("clean_dir", "clean_bsd")
    check_not_evaluation_folder(clean_dir, data_dir)
    streak_dir = data_dir / recipe.get("streak_dir", "streaks_garg06")
    if any(s.get("rainmix") for s in strata):
        check_not_evaluation_folder(streak_dir, data_dir)
    images = list_images(clean_dir)
    rng = np.random.default_rng(int(recipe.get("seed", 0)))
    order = rng.permutation(len(images))
    writer = _SetWriter(out_dir, input_multiple)
    rainmix: dict[str, RainMix] = {}
    drawn = 0
    unreadable: dict[str, str] = {}  # backgrounds that could not be read: skipped, reported in the origin

    def next_background() -> tuple[Path, np.ndarray]:
        nonlocal drawn
        while len(unreadable) < len(images):
            # Backgrounds cycle only when the recipe asks for more frames than there are images.
            path = images[order[drawn % len(images)]]
            drawn += 1
            if str(path) in unreadable:
                continue
            try:
                return path, _random_crop(read_image(path), crop, rng, str(path))
            except (ValueError, OSError) as exc:
                log.warning("skipping %s: %s", path, exc)
                unreadable[str(path)] = str(exc)
        raise ValueError(f"no clean image in {clean_dir} could be read; the first problem: "
                         f"{next(iter(unreadable.values()))}")

    for stratum in strata:
        renderer = RainRenderer.preset(stratum["rain"]) if stratum.get("rain") else None
        variant = stratum.get("rainmix")
        if variant and variant not in rainmix:
            rainmix[variant] = RainMix(streak_dir, variant=variant)
        holdout = stratum.get("holdout", 0)
        for k in range(holdout + stratum.get("count", 0)):
            path, clean = next_background()
            rainy = renderer.render(clean, rng)[0] if renderer is not None else clean
            if variant:
                rainy = rainmix[variant].apply(rainy, clean, rng)
            writer.add(_to_uint8(rainy), "holdout" if k < holdout else "calib", stratum["name"],
                       str(path.relative_to(data_dir)), target=_to_uint8(clean))
    return writer.finish({"kind": "recipe", "recipe": recipe, "data_dir": str(data_dir),
                          "skipped": [{"source": path, "error": error} for path, error in unreadable.items()]})


# --------------------------------------------------------------------------------------------------
# frames from images, videos and cameras


def rain_score(image: np.ndarray) -> float:
    """Estimated rain intensity of an RGB frame (uint8 or float [0, 1]): the mean white top-hat of its luma.

    Rain streaks are thin structures brighter than their surroundings; a morphological opening with a
    5x5 disc removes them, so luma minus its opening measures how much thin bright structure a frame
    has (fine bright texture counts too, which is why sets are stratified by *relative* terciles).
    """
    luma = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    if image.dtype == np.uint8:
        luma /= 255.0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    return float(cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, disc).mean())


@dataclass
class _Candidate:
    source: str
    score: float
    load: Callable[[], np.ndarray]  # uint8 H x W x 3 RGB


def _open_capture(spec: str):
    match = _CAMERA_RE.match(spec)
    if match:
        index = int(match["dev"] if match["dev"] is not None else match["idx"])
        capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        what = f"camera {spec} (V4L2)"
    else:
        capture = cv2.VideoCapture(spec)
        what = f"video {spec}"
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"cannot open {what}; check the device/file (videos: re-encode to H.264 MP4)")
    return capture


def _capture_frames(spec: str, stride: int, limit: int) -> Iterator[tuple[int, np.ndarray]]:
    """Every ``stride``-th frame (index, uint8 RGB) of a video or camera, at most ``limit`` frames."""
    capture = _open_capture(spec)
    try:
        index = taken = 0
        while taken < limit:
            ok, frame = capture.read()
            if not ok:
                break
            if index % stride == 0:
                taken += 1
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _video_candidates(path: Path, per_video: int) -> list[_Candidate]:
    capture = _open_capture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    stride = max(1, math.ceil(total / per_video)) if total > 0 else 1
    scored = [(index, rain_score(frame)) for index, frame in _capture_frames(str(path), stride, per_video)]
    if not scored:
        raise ValueError(f"video {path} has no decodable frames; check the file or re-encode it")

    def loader(wanted: int) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            capture = _open_capture(str(path))
            try:
                capture.set(cv2.CAP_PROP_POS_FRAMES, wanted)
                ok, frame = capture.read()
            finally:
                capture.release()
            if not ok:
                raise ValueError(f"cannot seek to frame {wanted} of video {path}; re-encode it (H.264 MP4)")
            return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return load

    return [_Candidate(f"{path}#{index}", score, loader(index)) for index, score in scored]


def _camera_candidates(spec: str, frames: int, stride: int) -> list[_Candidate]:
    out = []
    for index, frame in _capture_frames(spec, stride, frames):
        out.append(_Candidate(f"{spec}#{index}", rain_score(frame), lambda frame=frame: frame))
    if not out:
        raise ValueError(f"camera {spec} delivered no frames; check that it is not in use by another program")
    return out


def _image_candidate(path: Path) -> _Candidate:
    from ..data import read_image_uint8

    image = read_image_uint8(path)
    return _Candidate(str(path), rain_score(image), lambda: read_image_uint8(path))


def _expand_sources(sources: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(kind, spec) for every source: 'image', 'video', 'camera' or 'missing'; folders contribute their files."""
    from ..data import IMAGE_SUFFIXES

    out = []
    for source in sources:
        spec = str(source)
        if _CAMERA_RE.match(spec):
            out.append(("camera", spec))
            continue
        path = Path(spec)
        if not path.exists():  # reported with the other unreadable sources; the rest still make the set
            out.append(("missing", spec))
            continue
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if path.is_dir() else [path]
        for file in files:
            suffix = file.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                out.append(("image", str(file)))
            elif suffix in VIDEO_SUFFIXES:
                out.append(("video", str(file)))
            elif not path.is_dir():
                raise ValueError(f"calibration source {file} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a "
                                 f"video ({', '.join(VIDEO_SUFFIXES)})")
    if not out:
        raise ValueError(f"no images or videos found in {', '.join(map(str, sources))}")
    return out


def stratified_pick(scores: Sequence[float], count: int, rng: np.random.Generator) -> list[tuple[int, str]]:
    """Pick ``count`` indices spread evenly over the score terciles -> [(index, 'light'|'medium'|'heavy')].

    Each tercile gets an equal share; a tercile with too few candidates passes its remainder to the
    others. With fewer candidates than ``count`` every candidate is taken.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return []
    edges = np.quantile(scores, [1 / 3, 2 / 3])
    labels = np.digitize(scores, edges, right=True)
    pools = [list(rng.permutation(np.flatnonzero(labels == k))) for k in range(3)]
    picked: list[tuple[int, str]] = []
    remaining = min(count, scores.size)
    while remaining:
        open_pools = [k for k in range(3) if pools[k]]
        share = max(1, remaining // len(open_pools))
        for k in open_pools:
            for _ in range(min(share, len(pools[k]), remaining)):
                picked.append((int(pools[k].pop()), _INTENSITY_STRATA[k]))
                remaining -= 1
    return sorted(picked)


def collect_from_media(sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike, count: int = 64,
                       input_multiple: int = 16, crop: tuple[int, int] | None = None, seed: int = 0,
                       frames_per_video: int = 100, camera_frames: int = 200, camera_stride: int = 5) -> CalibrationSet:
    """Sample ``count`` representative frames from images, videos and V4L2 cameras into a calibration set.

    Videos contribute up to ``frames_per_video`` evenly spaced frames as candidates; a camera
    (``/dev/videoN`` or ``camera:N``) contributes ``camera_frames`` frames, one every
    ``camera_stride``. Candidates are stratified by :func:`rain_score` terciles (light/medium/heavy)
    and picked evenly across them. Frames are stored whole (or randomly cropped to ``crop``) and
    padded like at inference; real footage has no clean target, so every frame is in the
    ``calib`` split.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int (frames to keep), got {count!r}")
    crop = _parse_size(crop, "crop")
    writer = _SetWriter(out_dir, input_multiple)
    candidates: list[_Candidate] = []
    skipped: list[dict] = []  # sources that could not be read: reported, the others still make the set
    for kind, spec in _expand_sources(sources):
        try:
            if kind == "image":
                candidates.append(_image_candidate(Path(spec)))
            elif kind == "video":
                candidates.extend(_video_candidates(Path(spec), frames_per_video))
            elif kind == "camera":
                candidates.extend(_camera_candidates(spec, camera_frames, camera_stride))
            else:
                raise FileNotFoundError(f"calibration source {spec} does not exist (give image/video files, "
                                        "folders, or a camera as /dev/videoN or camera:N)")
        except (ValueError, OSError, RuntimeError) as exc:
            log.warning("skipping %s: %s", spec, exc)
            skipped.append({"source": spec, "error": str(exc)})
    if not candidates:
        raise ValueError(f"no calibration frame could be read from {', '.join(map(str, sources))}"
                         + (f"; the first problem: {skipped[0]['error']}" if skipped else ""))
    if len(candidates) < count:
        log.warning("only %d candidate frames for %d requested; keeping all of them", len(candidates), count)
    rng = np.random.default_rng(seed)
    for index, stratum in stratified_pick([c.score for c in candidates], count, rng):
        candidate = candidates[index]
        image = _random_crop(candidate.load(), crop, rng, candidate.source)
        writer.add(image, "calib", stratum, candidate.source, rain_score=candidate.score)
    return writer.finish({"kind": "media", "sources": [str(s) for s in sources], "count": count,
                          "crop": list(crop) if crop else None, "seed": seed, "stratified_by": "rain_score terciles",
                          "skipped": skipped})
