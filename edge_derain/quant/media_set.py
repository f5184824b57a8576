"""Calibration sets from footage: frames sampled from image files, videos, or a V4L2 camera (OpenCV), stratified
by an estimated rain intensity (:func:`rain_score` terciles), because real footage comes without an intensity
label."""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from ..video import VIDEO_SUFFIXES
from .calibration_set import CalibrationSet
from .set_writer import SetWriter, parse_size, random_crop

log = logging.getLogger(__name__)

_CAMERA_RE = re.compile(r"^(?:/dev/video(?P<dev>\d+)|camera:(?P<idx>\d+))$")
_INTENSITY_STRATA = ("light", "medium", "heavy")


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
                                 f"video ({', '.join(sorted(VIDEO_SUFFIXES))})")
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
    crop = parse_size(crop, "crop")
    writer = SetWriter(out_dir, input_multiple)
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
        image = random_crop(candidate.load(), crop, rng, candidate.source)
        writer.add(image, "calib", stratum, candidate.source, rain_score=candidate.score)
    return writer.finish({"kind": "media", "sources": [str(s) for s in sources], "count": count,
                          "crop": list(crop) if crop else None, "seed": seed, "stratified_by": "rain_score terciles",
                          "skipped": skipped})
