"""Box IoU and greedy non-maximum suppression in NumPy (boxes are ``(N, 4)`` ``x1, y1, x2, y2`` arrays).

Areas are continuous, ``(x2 - x1) * (y2 - y1)`` (the Ultralytics/torchvision convention), not the
"+1 pixel" convention of old VOC code.
"""
from __future__ import annotations

import numpy as np


def _as_boxes(boxes, what: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what} must be an (N, 4) array of x1, y1, x2, y2 boxes, got shape {array.shape}")
    return array


def box_area(boxes) -> np.ndarray:
    """Areas of ``(N, 4)`` xyxy boxes; degenerate (inverted) boxes have area 0."""
    boxes = _as_boxes(boxes, "boxes")
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a, b) -> np.ndarray:
    """``(N, M)`` intersection over union of every box in ``a`` with every box in ``b``.

    A pair whose union is empty (two zero-area boxes) has IoU 0.
    """
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, highest score first.

    A box is suppressed when its IoU with an already kept box is *greater than* ``iou_threshold``
    (torchvision's rule). Equal scores keep their input order (stable sort).
    """
    boxes = _as_boxes(boxes, "boxes")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"got {boxes.shape[0]} boxes but {scores.shape[0]} scores; pass one score per box")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = box_area(boxes)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, class_ids, iou_threshold: float) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Each class is shifted by ``class_id * (max coordinate span + 1)`` so that boxes of different classes
    cannot overlap, then one plain NMS runs (the torchvision/Ultralytics offset trick).
    """
    boxes = _as_boxes(boxes, "boxes")
    class_ids = np.asarray(class_ids).reshape(-1)
    if class_ids.shape[0] != boxes.shape[0]:
        raise ValueError(f"got {boxes.shape[0]} boxes but {class_ids.shape[0]} class ids; pass one class per box")
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(boxes.max() - boxes.min()) + 1.0
    offsets = (class_ids.astype(np.float64) - class_ids.min()) * span
    return nms(boxes + offsets[:, None], scores, iou_threshold)
