"""Object detection after deraining: ``create_detector(uri).detect(frame) -> list[Detection]``.

``hog`` (OpenCV's people detector, no weights), ``yolo:model.onnx?conf=0.25`` (YOLO-family ONNX or
TensorRT engines) and ``none``; ``draw_detections`` overlays the boxes, ``metrics`` compares runs
(derain on/off, precisions) against reference detections.
"""
from __future__ import annotations

from .base import Detection, Detector, NullDetector, create_detector
from .draw import draw_detections
from .metrics import MatchResult, average_precision, match_detections
from .nms import batched_nms, box_iou, nms

__all__ = ["Detection", "Detector", "MatchResult", "NullDetector", "average_precision", "batched_nms", "box_iou",
           "create_detector", "draw_detections", "match_detections", "nms"]
