"""Detection metrics for comparing detectors, precisions or derain on/off against reference detections.

The reference is usually the detector's output on the clean frame (pseudo ground truth). Matching is
PASCAL VOC's greedy rule: predictions in descending score order each take the same-class reference box
they overlap most; a prediction is a true positive when that IoU is >= ``iou`` and the box is not taken
yet, else a false positive (it does not fall back to its second-best box). Unmatched references are
false negatives.

``average_precision`` is VOC2010+ AP with all-point interpolation (the area under the precision
envelope), pooled over frames and averaged over the classes present in the reference (so it is AP50 at
``iou=0.5`` for one class and mAP50 for several).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .base import Detection, detections_to_arrays
from .nms import box_iou


@dataclass(frozen=True)
class MatchResult:
    """Counts of one matching; ``pairs`` are (prediction index, reference index) of the true positives.

    Empty cases follow "nothing went wrong": precision is 1 with no predictions, recall is 1 with no
    references. ``a + b`` sums the counts of two results (e.g. over frames); its ``pairs`` are empty
    because indices of different frames do not combine.
    """

    tp: int
    fp: int
    fn: int
    pairs: tuple[tuple[int, int], ...] = ()

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: "MatchResult") -> "MatchResult":
        return MatchResult(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def _greedy_match(pred_boxes: np.ndarray, pred_scores: np.ndarray, ref_boxes: np.ndarray, iou: float
                  ) -> list[tuple[int, int]]:
    """VOC matching of one class in one frame: (prediction, reference) index pairs of the true positives."""
    if len(pred_boxes) == 0 or len(ref_boxes) == 0:
        return []
    overlaps = box_iou(pred_boxes, ref_boxes)
    taken = np.zeros(len(ref_boxes), dtype=bool)
    pairs = []
    for p in np.argsort(-pred_scores, kind="stable"):
        best = int(np.argmax(overlaps[p]))
        if overlaps[p, best] >= iou and not taken[best]:
            taken[best] = True
            pairs.append((int(p), best))
    return pairs


def _class_keys(class_ids: np.ndarray, class_aware: bool) -> np.ndarray:
    return class_ids if class_aware else np.zeros_like(class_ids)


def _match_frame(pred: Sequence[Detection], ref: Sequence[Detection], iou: float, class_aware: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Scores, class keys and true-positive flags of one frame's predictions, the references' class
    keys, and the TP pairs."""
    pred_boxes, pred_scores, pred_ids = detections_to_arrays(pred)
    ref_boxes, _, ref_ids = detections_to_arrays(ref)
    pred_keys, ref_keys = _class_keys(pred_ids, class_aware), _class_keys(ref_ids, class_aware)
    pairs = []
    for key in np.unique(pred_keys):
        p_idx, r_idx = np.flatnonzero(pred_keys == key), np.flatnonzero(ref_keys == key)
        pairs += [(int(p_idx[p]), int(r_idx[r]))
                  for p, r in _greedy_match(pred_boxes[p_idx], pred_scores[p_idx], ref_boxes[r_idx], iou)]
    is_tp = np.zeros(len(pred_scores), dtype=bool)
    is_tp[[p for p, _ in pairs]] = True
    return pred_scores, pred_keys, is_tp, ref_keys, sorted(pairs)


def _check_iou(iou: float) -> None:
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")


def match_detections(pred: Sequence[Detection], ref: Sequence[Detection], iou: float = 0.5,
                     class_aware: bool = True) -> MatchResult:
    """Match one frame's predictions to its reference detections (see the module docstring).

    ``class_aware=False`` lets boxes of any classes match (e.g. two detectors with different label sets).
    """
    _check_iou(iou)
    _, _, is_tp, _, pairs = _match_frame(pred, ref, iou, class_aware)
    tp = int(is_tp.sum())
    return MatchResult(tp=tp, fp=len(is_tp) - tp, fn=len(ref) - tp, pairs=tuple(pairs))


def _as_frames(detections) -> list[list[Detection]]:
    """One frame's list, or a sequence of frames' lists -> a list of frames."""
    items = list(detections)
    if all(isinstance(d, Detection) for d in items):
        return [items]
    if all(isinstance(d, (list, tuple)) for d in items):
        return [list(frame) for frame in items]
    raise ValueError("detections must be a list of Detection (one frame) or a list of such lists (one per frame)")


def interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP of a precision/recall curve ordered by descending score."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def per_class_average_precision(pred, ref, iou: float = 0.5, class_aware: bool = True) -> dict[int, float]:
    """AP of each class present in ``ref`` (class 0 for all when ``class_aware=False``).

    ``pred`` and ``ref`` are one frame's detections or equally long sequences of frames. Classes that
    only appear in ``pred`` have no AP (VOC/COCO leave them out too).
    """
    _check_iou(iou)
    pred_frames, ref_frames = _as_frames(pred), _as_frames(ref)
    if len(pred_frames) != len(ref_frames):
        raise ValueError(f"got {len(pred_frames)} frames of predictions but {len(ref_frames)} of references; "
                         "pass one list per frame for both")
    scores, keys, flags = [], [], []
    ref_counts: dict[int, int] = {}
    for frame_pred, frame_ref in zip(pred_frames, ref_frames):
        frame_scores, frame_keys, is_tp, ref_keys, _ = _match_frame(frame_pred, frame_ref, iou, class_aware)
        scores.append(frame_scores)
        keys.append(frame_keys)
        flags.append(is_tp)
        for key in ref_keys.tolist():
            ref_counts[key] = ref_counts.get(key, 0) + 1
    scores, keys, flags = np.concatenate(scores), np.concatenate(keys), np.concatenate(flags)
    result = {}
    for key, count in sorted(ref_counts.items()):
        mine = keys == key
        order = np.argsort(-scores[mine], kind="stable")
        tp = np.cumsum(flags[mine][order])
        precision = tp / np.arange(1, len(tp) + 1)
        result[key] = interpolated_ap(tp / count, precision)
    return result


def average_precision(pred, ref, iou: float = 0.5, class_aware: bool = True) -> float:
    """Mean over the reference's classes of their AP at ``iou`` (AP50 / mAP50 by default).

    NaN when the reference has no detections at all (AP is undefined without positives).
    """
    per_class = per_class_average_precision(pred, ref, iou, class_aware)
    return float(np.mean(list(per_class.values()))) if per_class else float("nan")
