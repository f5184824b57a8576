"""YOLO-family detectors from ONNX (ONNX Runtime) or TensorRT engines.

Pre-processing follows Ultralytics: letterbox (keep the aspect ratio, bilinear resize, grey 114
padding centred), RGB, [0, 1], NCHW float. Graphs with a dynamic input are fed the smallest
stride-multiple rectangle that holds a ``size``-square letterbox (Ultralytics' "rect" inference).

The output layout is recognised from its shape and the input size (``layout=auto``):

- ``v5``  ``(1, N, 5 + C)``: cx, cy, w, h, objectness, C class scores; N = 3 anchors per cell
  (YOLOv5/v7, 25200 rows at 640x640). Score = objectness x class score.
- ``v8``  ``(1, 4 + C, N)``: cx, cy, w, h, C class scores, no objectness; N = one row per cell
  (YOLOv8/v11, 8400 at 640x640). The transposed ``(1, N, 4 + C)`` is accepted too.
- ``e2e`` ``(1, N, 6)``: x1, y1, x2, y2, score, class, already suppressed (YOLOv10, Ultralytics
  ``nms=True`` exports); no NMS is run on it.

Anchor counts are those of strides 8/16/32 (P5) or 8/16/32/64 (P6). Anything else needs an explicit
``layout=``: e.g. YOLOX's decoded ``(1, N, 5 + C)`` output is ``layout=v5``.
Boxes are decoded in input pixels, mapped back through the letterbox, clipped to the frame and
suppressed per class (``agnostic`` suppresses across classes).

Class names: ``classes=coco`` (the 80 COCO names), a names file (one per line), or a comma list;
by default the names an Ultralytics export stores in its metadata, else COCO.
"""
from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Detection, Detector, check_frame, parse_options
from .nms import batched_nms, nms

log = logging.getLogger(__name__)

COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
LAYOUTS = ("auto", "v5", "v8", "e2e")
PAD_VALUE = 114
STRIDE_SETS = ((8, 16, 32), (8, 16, 32, 64))  # P5 and P6 heads


# ----------------------------------------------------------------------------------------- letterbox
@dataclass(frozen=True)
class Letterbox:
    """Where a frame went inside the network input: resized to ``resized_hw`` at offset (top, left)."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    top: int
    left: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in input pixels -> frame pixels, clipped to the frame."""
        (h, w), (rh, rw) = self.frame_hw, self.resized_hw
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        out[:, 0::2] = ((out[:, 0::2] - self.left) * (w / rw)).clip(0, w)
        out[:, 1::2] = ((out[:, 1::2] - self.top) * (h / rh)).clip(0, h)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Frame pixels -> input pixels (the inverse of ``to_frame`` inside the frame)."""
        (h, w), (rh, rw) = self.frame_hw, self.resized_hw
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        out[:, 0::2] = out[:, 0::2] * (rw / w) + self.left
        out[:, 1::2] = out[:, 1::2] * (rh / h) + self.top
        return out


def letterbox(image: np.ndarray, new_hw: tuple[int, int], stride: int = 32, auto: bool = False
              ) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (HxWxC, uint8 or float [0, 1]) to fit ``new_hw`` keeping its aspect ratio and pad.

    ``auto`` pads only up to the next multiple of ``stride`` instead of the full ``new_hw`` (for graphs
    with dynamic input). Padding is 114 grey (114/255 for float images), split evenly, the odd pixel
    going bottom/right, exactly as Ultralytics' ``LetterBox``.
    """
    import cv2

    h, w = image.shape[:2]
    new_h, new_w = new_hw
    if auto and (new_h % stride or new_w % stride):
        raise ValueError(f"letterbox size {new_h}x{new_w} must be a multiple of the stride {stride} in auto mode")
    ratio = min(new_h / h, new_w / w)
    resized_h, resized_w = max(1, round(h * ratio)), max(1, round(w * ratio))
    pad_h, pad_w = new_h - resized_h, new_w - resized_w
    if auto:
        pad_h, pad_w = pad_h % stride, pad_w % stride
    image = np.ascontiguousarray(image)  # e.g. a strided view of a mapped video buffer
    if (resized_h, resized_w) != (h, w):
        image = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    top, left = pad_h // 2, pad_w // 2
    value = PAD_VALUE if image.dtype == np.uint8 else PAD_VALUE / 255.0
    padded = cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT,
                                value=(value,) * 3)
    return padded, Letterbox((h, w), padded.shape[:2], (resized_h, resized_w), top, left)


# ------------------------------------------------------------------------------------------ decoding
def anchor_counts(input_hw: tuple[int, int]) -> tuple[int, ...]:
    """Rows a one-per-cell head produces at this input size, for each of the P5 and P6 stride sets."""
    h, w = input_hw
    return tuple(sum(-(-h // s) * -(-w // s) for s in strides) for strides in STRIDE_SETS)


def detect_layout(shape: Sequence[int], input_hw: tuple[int, int]) -> str:
    """``"v5"``, ``"v8"`` or ``"e2e"`` from the output shape and the input size, else a ValueError."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 3 and shape[0] == 1:
        rows, cols = shape[1], shape[2]
        for cells in anchor_counts(input_hw):
            if cells in (rows, cols) and min(rows, cols) > 4:
                return "v8"
            if rows == 3 * cells and cols > 5:
                return "v5"
        if cols == 6:
            return "e2e"
    raise ValueError(f"cannot tell the YOLO output layout from output shape {list(shape)} at input size "
                     f"{input_hw[0]}x{input_hw[1]}; pass layout=v5 ((1, N, 5+C), objectness), layout=v8 "
                     "((1, 4+C, N)) or layout=e2e ((1, N, 6), x1 y1 x2 y2 score class)")


def _rows(output: np.ndarray, layout: str) -> np.ndarray:
    """The batch-1 output as one row per candidate box."""
    if output.ndim != 3 or output.shape[0] != 1:
        raise ValueError(f"YOLO output has shape {list(output.shape)}; expected (1, rows, cols) from a batch-1 model")
    rows = output[0]
    if layout == "v8" and rows.shape[0] < rows.shape[1]:
        rows = rows.T  # (4 + C, N) -> (N, 4 + C): the channel axis is the short one
    need = {"v5": 6, "v8": 5, "e2e": 6}[layout]
    if rows.shape[1] < need or (layout == "e2e" and rows.shape[1] != 6):
        raise ValueError(f"YOLO output shape {list(output.shape)} does not fit layout={layout} "
                         f"(rows of {'exactly' if layout == 'e2e' else 'at least'} {need} values)")
    return rows


def class_count(output: np.ndarray, layout: str) -> int | None:
    """Classes the head scores (None for ``e2e``, which carries ids, not scores); checks the shape."""
    rows = _rows(output, layout)
    return None if layout == "e2e" else rows.shape[1] - (5 if layout == "v5" else 4)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def decode_output(output: np.ndarray, layout: str, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates scoring above ``conf``: ``(xyxy boxes in input pixels, scores, class ids)``, not suppressed.

    Each row keeps its best class only (Ultralytics' default, not multi-label).
    """
    rows = _rows(np.asarray(output, dtype=np.float32), layout)
    if layout == "e2e":
        keep = rows[:, 4] > conf
        rows = rows[keep]
        return rows[:, :4].astype(np.float64), rows[:, 4].astype(np.float64), np.rint(rows[:, 5]).astype(np.int64)
    if layout == "v5":
        rows = rows[rows[:, 4] > conf]  # objectness bounds the final score, so this only saves work
        class_scores = rows[:, 5:] * rows[:, 4:5]
    else:
        class_scores = rows[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), class_ids]
    keep = scores > conf
    return (cxcywh_to_xyxy(rows[keep, :4].astype(np.float64)), scores[keep].astype(np.float64),
            class_ids[keep].astype(np.int64))


# ------------------------------------------------------------------------------------------ runtimes
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class OrtRunner:
    """One ONNX Runtime session with one image input; ``__call__`` returns the first output."""

    def __init__(self, path: Path, device: str = "auto"):
        import onnxruntime as ort

        from ..backends.ort_backend import CPU_PROVIDER, CUDA_PROVIDER, resolve_providers

        available = ort.get_available_providers()
        wanted = {"auto": "auto", "cpu": [CPU_PROVIDER], "cuda": [CUDA_PROVIDER, CPU_PROVIDER]}
        if device not in wanted:
            raise ValueError(f"device must be one of {', '.join(wanted)}, got {device!r}")
        self.session = ort.InferenceSession(str(path), providers=resolve_providers(wanted[device], available))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             "a YOLO detector graph has one image input")
        image = inputs[0]
        if image.type not in _ORT_TYPES or len(image.shape) != 4 or image.shape[1] not in (3, "3"):
            raise ValueError(f"{path.name} input {image.name!r} is {image.type} {image.shape}; expected a float "
                             "(1, 3, H, W) image tensor")
        self.input_name, self.input_dtype = image.name, _ORT_TYPES[image.type]
        h, w = image.shape[2:]
        self.static_hw = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.output_name = self.session.get_outputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
        return np.asarray(self.session.run([self.output_name], feed)[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None


class TrtRunner:
    """A TensorRT engine (built by ``edge-derain build``, with its sidecar) through ``TensorRTBackend``.

    The backend's ``run`` pads and crops image outputs, so the letterboxed batch (already a stride
    multiple) goes to its unpadded ``infer``; the first float output is returned.
    """

    def __init__(self, path: Path, device: str = "auto"):
        from ..backends.trt_backend import TensorRTBackend

        if device not in ("auto", "cuda"):
            raise ValueError(f"TensorRT engines run on CUDA only; use device=cuda (or auto), got {device!r}")
        self.backend = TensorRTBackend(path)
        min_shape, _, max_shape = self.backend.profile
        self.static_hw = tuple(max_shape[2:]) if min_shape == max_shape else None
        self.metadata: dict[str, str] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.backend.infer(batch)

    def close(self) -> None:
        self.backend.close()


def open_runner(path: Path, device: str = "auto"):
    """``OrtRunner`` for ``.onnx``, ``TrtRunner`` for ``.engine``/``.plan``/``.trt``."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OrtRunner(path, device)
    if suffix in (".engine", ".plan", ".trt"):
        return TrtRunner(path, device)
    raise ValueError(f"YOLO model {path.name} must be a .onnx (ONNX Runtime) or .engine (TensorRT) file")


# ------------------------------------------------------------------------------------------ detector
def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("write 1/0, true/false, yes/no or on/off")


def resolve_class_names(classes: str | Sequence[str] | None, metadata: dict[str, str]) -> tuple[str, ...]:
    """Names from ``classes`` ('coco', a names file, a comma list, a sequence) or the export's metadata."""
    if classes is None:
        if "names" in metadata:
            try:
                names = ast.literal_eval(metadata["names"])
                return tuple(str(names[i]) for i in sorted(names)) if isinstance(names, dict) else tuple(names)
            except (ValueError, SyntaxError, TypeError, KeyError):
                log.warning("ignoring unreadable 'names' metadata %.60r; using COCO names", metadata["names"])
        return COCO80
    if not isinstance(classes, str):
        return tuple(str(c) for c in classes)
    if classes.lower() == "coco":
        return COCO80
    if Path(classes).is_file():
        names = tuple(line.strip() for line in Path(classes).read_text().splitlines() if line.strip())
        if not names:
            raise ValueError(f"class names file {classes} is empty; write one class name per line")
        return names
    if "/" in classes or "\\" in classes or Path(classes).suffix.lower() in (".txt", ".names"):
        raise FileNotFoundError(f"class names file {classes} not found; give an existing file (one name per line), "
                                "'coco' or a comma-separated list of names")
    return _split(classes)


class YoloDetector(Detector):
    """A YOLO-family model (``.onnx`` on ONNX Runtime, ``.engine`` on TensorRT) behind ``Detector``.

    Args:
        model: the model file.
        conf: minimum score of a kept box (objectness x class score for ``v5``).
        iou: NMS IoU threshold (suppress above it).
        classes: class names (see ``resolve_class_names``); None = export metadata, else COCO-80.
        size: network input side for graphs with a dynamic input (a multiple of ``stride``); default
            is the export's ``imgsz`` metadata, else 640. Static graphs use their own size.
        max_det: keep at most this many boxes, best first.
        layout: ``auto`` (from the output shape) or ``v5`` / ``v8`` / ``e2e``.
        only: keep only these classes (names or ids).
        agnostic: one NMS across classes instead of per class.
        channels: ``rgb`` (Ultralytics) or ``bgr`` (models trained on OpenCV's BGR order).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    The constructor runs the model once on a grey image, so a layout or class-count mismatch is
    reported when the detector is created rather than on the first frame.
    """

    name = "yolo"
    URI_OPTIONS = {"conf": ("conf", float), "iou": ("iou", float), "classes": ("classes", str),
                   "size": ("size", int), "max_det": ("max_det", int), "layout": ("layout", str),
                   "only": ("only", _split), "agnostic": ("agnostic", _flag), "channels": ("channels", str),
                   "device": ("device", str)}

    def __init__(self, model: str | Path, conf: float = 0.25, iou: float = 0.45,
                 classes: str | Sequence[str] | None = None, size: int | None = None, max_det: int = 300,
                 layout: str = "auto", only: Sequence[str | int] | None = None, agnostic: bool = False,
                 channels: str = "rgb", device: str = "auto"):
        self.path = Path(model)
        if not self.path.is_file():
            raise FileNotFoundError(f"YOLO model {self.path} not found; export one to ONNX (e.g. Ultralytics "
                                    "'yolo export model=yolov8n.pt format=onnx')")
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if channels not in ("rgb", "bgr"):
            raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        if max_det < 1:
            raise ValueError(f"max_det must be >= 1, got {max_det}")
        self.conf, self.iou, self.max_det, self.agnostic = float(conf), float(iou), int(max_det), bool(agnostic)
        self.bgr = channels == "bgr"

        self.runner = open_runner(self.path, device)
        metadata = self.runner.metadata
        self.stride = int(metadata.get("stride", 32))
        if self.runner.static_hw is not None:
            self.input_hw, self.auto = self.runner.static_hw, False
        else:
            if size is None:
                imgsz = ast.literal_eval(metadata["imgsz"]) if "imgsz" in metadata else 640
                size = int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
            if size < self.stride or size % self.stride:
                raise ValueError(f"size must be a positive multiple of the stride {self.stride}, got {size}")
            self.input_hw, self.auto = (size, size), True
        self.names = resolve_class_names(classes, metadata)
        self.keep_ids = None if not only else frozenset(self._class_id(c) for c in only)

        probe = np.full((*self.input_hw, 3), PAD_VALUE, dtype=np.uint8)
        output = self.runner(self._to_batch(probe))
        self.layout = detect_layout(output.shape, self.input_hw) if layout == "auto" else layout
        count = class_count(output, self.layout)
        if count is not None and count != len(self.names):
            raise ValueError(f"{self.path.name} scores {count} classes but {len(self.names)} class names are given; "
                             "pass classes=path/to/names.txt (one per line) or classes=a,b,c")

    @classmethod
    def from_options(cls, model: str | Path, text: str) -> "YoloDetector":
        spec = {key: convert for key, (_, convert) in cls.URI_OPTIONS.items()}
        options = parse_options(text, spec, f"yolo:{model}")
        return cls(model, **{cls.URI_OPTIONS[key][0]: value for key, value in options.items()})

    def _class_id(self, name_or_id: str | int) -> int:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            return int(name_or_id)
        if name_or_id not in self.names:
            raise ValueError(f"only={name_or_id!r} is not a class of this model; classes: {', '.join(self.names[:10])}"
                             + (", ..." if len(self.names) > 10 else ""))
        return self.names.index(name_or_id)

    def _to_batch(self, image: np.ndarray) -> np.ndarray:
        """Letterboxed HxWx3 image -> (1, 3, H, W) float32 in [0, 1] in the model's channel order."""
        chw = np.transpose(image[..., ::-1] if self.bgr else image, (2, 0, 1))
        batch = chw[None].astype(np.float32)
        if image.dtype == np.uint8:
            batch *= 1.0 / 255.0
        return batch

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The network input batch for ``frame`` and the letterbox that maps boxes back."""
        image, box = letterbox(check_frame(frame, self.name), self.input_hw, self.stride, auto=self.auto)
        return self._to_batch(image), box

    def postprocess(self, output: np.ndarray, box: Letterbox) -> list[Detection]:
        """Decode, filter, suppress and map the raw output of one letterboxed frame to ``Detection``s."""
        boxes, scores, class_ids = decode_output(output, self.layout, self.conf)
        if self.keep_ids is not None:
            wanted = np.isin(class_ids, list(self.keep_ids))
            boxes, scores, class_ids = boxes[wanted], scores[wanted], class_ids[wanted]
        if self.layout == "e2e":
            order = np.argsort(-scores, kind="stable")
        elif self.agnostic:
            order = nms(boxes, scores, self.iou)
        else:
            order = batched_nms(boxes, scores, class_ids, self.iou)
        order = order[: self.max_det]
        frame_boxes = box.to_frame(boxes[order])
        return [Detection(*map(float, b), score=float(s), class_id=int(c), label=self._label(int(c)))
                for b, s, c in zip(frame_boxes, scores[order], class_ids[order])]

    def _label(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else f"class{class_id}"

    def detect(self, frame: np.ndarray) -> list[Detection]:
        batch, box = self.preprocess(frame)
        return self.postprocess(self.runner(batch), box)

    def close(self) -> None:
        self.runner.close()

    def __repr__(self) -> str:
        return (f"YoloDetector({self.path.name}, layout={self.layout}, input={self.input_hw[0]}x{self.input_hw[1]}"
                f"{' (dynamic)' if self.auto else ''}, classes={len(self.names)}, conf={self.conf}, iou={self.iou})")
