"""OpenCV's HOG + linear-SVM pedestrian detector (Dalal & Triggs), the offline default detector.

It needs no downloaded weights: the SVM comes with OpenCV (``HOGDescriptor_getDefaultPeopleDetector``,
a 64x128 window trained on INRIA pedestrians, so it finds upright full bodies at least ~128 px tall in
the *processed* image, not faces or seated people). OpenCV 5 moved HOG out of the main modules into
the contrib build: this detector needs ``opencv-contrib-python-headless`` (5.x, checked with 5.0.0) or
any OpenCV 4.x (``opencv-python-headless>=4.8,<5``; JetPack's OpenCV is 4.x).

Speed comes from running on a downscaled copy (``width``) and mapping the boxes back. Boxes are the
detector windows, which include the margin the SVM was trained with (the person fills about the
middle 75 % of the width and 80 % of the height). Scores are SVM margins (unbounded, 0 = the decision
boundary), so ``hit`` thresholds are margins too.
"""
from __future__ import annotations

import numpy as np

from .base import Detection, Detector, check_frame, parse_options, to_uint8
from .nms import nms

WINDOW = (64, 128)  # the default people detector's window (width, height)
BLOCK_STRIDE = 8


def _size_pair(text: str) -> tuple[int, int]:
    """``"8"`` -> (8, 8); ``"8x16"`` -> (8, 16)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2):
        raise ValueError("write N or WxH")
    values = tuple(int(p) for p in parts)
    return (values[0], values[-1])


def _load_hog():
    import cv2

    if not hasattr(cv2, "HOGDescriptor"):
        raise ImportError(f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 moved it to the contrib build); "
                          "replace opencv-python-headless by opencv-contrib-python-headless, or install OpenCV 4.x")
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return cv2, hog


class HogDetector(Detector):
    """Multi-scale HOG people detection followed by NMS; every detection is class 0, ``"person"``.

    Args:
        win_stride: window step (x, y) in pixels of the processed image; a multiple of 8 (OpenCV's
            block stride). Larger is faster and coarser.
        padding: border (x, y) added around the image so people at the edge can be found.
        scale: pyramid step between scales (> 1); smaller is slower and finds more sizes.
        hit_threshold: minimum SVM margin of a kept window.
        width: the frame is downscaled to this width before detecting (never upscaled); 0 keeps
            the full resolution.
        nms_iou: IoU above which a lower-scoring window is suppressed.
    """

    name = "hog"
    URI_OPTIONS = {"stride": ("win_stride", _size_pair), "padding": ("padding", _size_pair),
                   "scale": ("scale", float), "hit": ("hit_threshold", float), "width": ("width", int),
                   "nms": ("nms_iou", float)}

    def __init__(self, win_stride: int | tuple[int, int] = 8, padding: int | tuple[int, int] = 8,
                 scale: float = 1.05, hit_threshold: float = 0.0, width: int = 400, nms_iou: float = 0.45):
        self.win_stride = (win_stride, win_stride) if isinstance(win_stride, int) else tuple(win_stride)
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        if any(s <= 0 or s % BLOCK_STRIDE for s in self.win_stride):
            raise ValueError(f"HOG stride must be a positive multiple of {BLOCK_STRIDE} (OpenCV's block stride), "
                             f"got {self.win_stride}")
        if any(p < 0 for p in self.padding):
            raise ValueError(f"HOG padding must be >= 0, got {self.padding}")
        if not scale > 1.0:
            raise ValueError(f"HOG scale is the pyramid step and must be > 1 (e.g. 1.05), got {scale}")
        if width < 0 or 0 < width < WINDOW[0]:
            raise ValueError(f"HOG width must be 0 (no resize) or >= {WINDOW[0]} (the window width), got {width}")
        if not 0.0 <= nms_iou <= 1.0:
            raise ValueError(f"HOG nms must be an IoU in [0, 1], got {nms_iou}")
        self.scale, self.hit_threshold, self.width, self.nms_iou = float(scale), float(hit_threshold), width, nms_iou
        self._cv2, self._hog = _load_hog()

    @classmethod
    def from_options(cls, text: str) -> "HogDetector":
        spec = {key: convert for key, (_, convert) in cls.URI_OPTIONS.items()}
        options = parse_options(text, spec, "hog")
        return cls(**{cls.URI_OPTIONS[key][0]: value for key, value in options.items()})

    def detect(self, frame: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        # HOG takes the channel with the strongest gradient per pixel, so RGB vs BGR order does not matter.
        image = to_uint8(check_frame(frame, self.name))
        height, width = image.shape[:2]
        if self.width and width > self.width:
            small_w, small_h = self.width, max(1, round(height * self.width / width))
            image = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
        else:
            small_w, small_h = width, height
        if small_w < WINDOW[0] or small_h < WINDOW[1]:
            return []  # no window fits (and OpenCV 4.x crashes on such images)
        rects, weights = self._hog.detectMultiScale(
            np.ascontiguousarray(image), hitThreshold=self.hit_threshold, winStride=self.win_stride,
            padding=self.padding, scale=self.scale, groupThreshold=0)  # raw windows: NMS below
        if len(rects) == 0:
            return []
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        sx, sy = width / small_w, height / small_h
        boxes = np.stack([rects[:, 0] * sx, rects[:, 1] * sy,
                          (rects[:, 0] + rects[:, 2]) * sx, (rects[:, 1] + rects[:, 3]) * sy], axis=1)
        # Windows overhanging the padding are cut to the frame.
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return [Detection(*map(float, boxes[i]), score=float(scores[i]), class_id=0, label="person")
                for i in nms(boxes, scores, self.nms_iou)]

    def __repr__(self) -> str:
        return (f"HogDetector(stride={self.win_stride}, padding={self.padding}, scale={self.scale}, "
                f"hit={self.hit_threshold}, width={self.width}, nms={self.nms_iou})")
