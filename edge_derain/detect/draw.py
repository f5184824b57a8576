"""Draw detections (box, label, score) on an RGB uint8 frame, in place, with OpenCV."""
from __future__ import annotations

import colorsys
from typing import Iterable

import numpy as np

from .base import Detection

_GOLDEN = 0.618033988749895  # hue step that keeps consecutive class colours far apart


def class_color(class_id: int) -> tuple[int, int, int]:
    """A saturated RGB colour per class id, the same on every frame."""
    r, g, b = colorsys.hsv_to_rgb((class_id * _GOLDEN) % 1.0, 0.85, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


def draw_detections(frame: np.ndarray, detections: Iterable[Detection], thickness: int = 2,
                    show_score: bool = True, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Draw each detection's box and ``label score`` tag on ``frame`` (HxWx3 uint8 RGB) in place; returns it.

    ``color`` forces one RGB colour for every box; by default each class gets its own. The tag sits
    above the box, or inside it when the box touches the top edge.
    """
    import cv2

    if (not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8
            or not frame.flags.c_contiguous or not frame.flags.writeable):
        shape = getattr(frame, "shape", type(frame).__name__)
        dtype = getattr(frame, "dtype", "")
        raise ValueError(f"draw_detections draws in place on a writable, C-contiguous HxWx3 uint8 RGB frame, got "
                         f"{shape} {dtype}; pass np.ascontiguousarray(frame) (uint8, e.g. (frame * 255).round())")
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    height, width = frame.shape[:2]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4 + 0.1 * thickness
    for det in detections:
        rgb = color if color is not None else class_color(det.class_id)
        x1, y1 = int(round(det.x1)), int(round(det.y1))
        # x2/y2 are exclusive edges; OpenCV's rectangle corners are inclusive pixels.
        x2, y2 = int(round(det.x2)) - 1, int(round(det.y2)) - 1
        cv2.rectangle(frame, (x1, y1), (x2, y2), rgb, thickness)
        text = f"{det.label} {det.score:.2f}" if show_score else det.label
        (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, 1)
        tag_h = text_h + baseline + 2
        top = y1 - tag_h if y1 - tag_h >= 0 else y1  # above the box when there is room
        left = min(max(x1, 0), max(width - text_w - 2, 0))
        cv2.rectangle(frame, (left, top), (left + text_w + 2, min(top + tag_h, height - 1)), rgb, cv2.FILLED)
        # Dark text on light colours, white on dark ones (ITU-R BT.601 luma).
        luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
        cv2.putText(frame, text, (left + 1, top + text_h + 1), font, font_scale, ink, 1, cv2.LINE_AA)
    return frame
