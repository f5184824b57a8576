"""The detector interface, the ``Detection`` record and ``create_detector(uri)``.

A detector takes one HxWx3 RGB frame (uint8, or float in [0, 1]) and returns ``Detection`` boxes in
pixels of that frame. ``create_detector`` builds one from a short URI-like string, so the CLI and the
GStreamer elements take the same ``detector=`` argument:

- ``hog`` / ``hog:scale=1.05,hit=0.5,width=400``: OpenCV's HOG people detector (no weights needed);
- ``yolo:path/to/model.onnx?conf=0.25&iou=0.45&classes=coco``: a YOLO-family ONNX model (or ``.engine``);
- ``none``: no detection.

Options are ``key=value`` pairs separated by ``,`` or ``&``; a piece without ``=`` continues the previous
value as a list item, so ``only=person,car`` is one option with two names.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

URI_FORMS = ("'hog'", "'hog:key=value,...'", "'yolo:model.onnx?key=value&...'", "'yolo:model.engine'", "'none'")


@dataclass(frozen=True)
class Detection:
    """One box in pixels of the frame given to ``detect`` (x2/y2 exclusive edges, floats)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    label: str

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def to_dict(self) -> dict:
        return asdict(self)


def detections_to_arrays(detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N, 4), scores (N,), class_ids (N,))`` arrays of a list of detections."""
    detections = list(detections)
    boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
    scores = np.array([d.score for d in detections], dtype=np.float64)
    class_ids = np.array([d.class_id for d in detections], dtype=np.int64)
    return boxes, scores, class_ids


def check_frame(frame, who: str) -> np.ndarray:
    """The frame itself when it is an HxWx3 uint8 or float array, else a one-line ValueError."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"{who}: expected an HxWx3 RGB frame (uint8, or float in [0, 1]), got {shape}; "
                         "convert grey images with np.repeat(img[..., None], 3, axis=2)")
    if frame.dtype != np.uint8 and not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f"{who}: frame dtype {frame.dtype} is not supported; pass uint8 RGB or float RGB in [0, 1]")
    return frame


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """uint8 view of a checked frame: uint8 passes through, float [0, 1] is scaled, rounded and clipped."""
    if frame.dtype == np.uint8:
        return frame
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)


class Detector(ABC):
    """``detect(frame) -> list[Detection]``, highest score first; subclasses set ``name``."""

    name = "detector"

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Detections in ``frame`` (HxWx3 RGB, uint8 or float in [0, 1])."""

    def close(self) -> None:
        """Release runtime resources (sessions, engines); detectors without any need nothing."""


class NullDetector(Detector):
    """``none``: detects nothing, so a pipeline can keep its detector stage switched off."""

    name = "none"

    def detect(self, frame: np.ndarray) -> list[Detection]:
        check_frame(frame, self.name)
        return []

    def __repr__(self) -> str:
        return "NullDetector()"


def parse_options(text: str, spec: Mapping[str, Callable[[str], object]], who: str) -> dict[str, object]:
    """Parse ``key=value`` pairs (separated by ``,`` or ``&``) with the converters in ``spec``.

    A piece without ``=`` continues the previous value (``only=person,car`` -> ``"person,car"``), so list
    options are written naturally; converters split them.
    """
    raw: dict[str, str] = {}
    key = None
    for piece in text.replace("&", ",").split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece:
            key, value = (part.strip() for part in piece.split("=", 1))
            if key in raw:
                raise ValueError(f"{who}: option {key!r} given twice")
            raw[key] = value
        elif key is None:
            raise ValueError(f"{who}: option {piece!r} has no value; write key=value (options: {', '.join(spec)})")
        else:
            raw[key] += "," + piece
    unknown = [k for k in raw if k not in spec]
    if unknown:
        raise ValueError(f"{who}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(spec)}")
    options = {}
    for key, value in raw.items():
        try:
            options[key] = spec[key](value)
        except ValueError as exc:
            raise ValueError(f"{who}: option {key}={value!r} is invalid ({exc})") from None
    return options


def create_detector(uri: str) -> Detector:
    """Build a detector from a URI-like string (see the module docstring for the forms)."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"detector must be a non-empty string, got {uri!r}; use one of {', '.join(URI_FORMS)}")
    scheme, _, rest = uri.strip().partition(":")
    scheme = scheme.lower()
    if scheme == "none":
        if rest:
            raise ValueError(f"detector 'none' takes no options, got {uri!r}")
        return NullDetector()
    if scheme == "hog":
        from .hog import HogDetector

        return HogDetector.from_options(rest.lstrip("?"))
    if scheme == "yolo":
        target, _, query = rest.partition("?")
        if not target:
            raise ValueError(f"detector {uri!r} names no model; write 'yolo:path/to/model.onnx?conf=0.25'")
        if not Path(target).is_file():
            raise FileNotFoundError(f"YOLO model {target} not found (detector {uri!r}); give an existing .onnx or "
                                    f".engine file, or use one of {', '.join(URI_FORMS)}")
        from .yolo import YoloDetector

        return YoloDetector.from_options(target, query)
    raise ValueError(f"unknown detector {uri!r}; use one of {', '.join(URI_FORMS)}")
