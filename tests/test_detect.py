"""Detector stage: NMS, metrics, YOLO decoding/letterbox on hand-built ONNX graphs, HOG, drawing, URIs."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_derain.detect import (Detection, NullDetector, average_precision, batched_nms, box_iou,
                                create_detector, draw_detections, match_detections, nms)
from edge_derain.detect.draw import class_color
from edge_derain.detect.metrics import per_class_average_precision
from edge_derain.detect.yolo import COCO80, YoloDetector, anchor_counts, detect_layout, letterbox

HAS_HOG = hasattr(cv2, "HOGDescriptor")
needs_hog = pytest.mark.skipif(not HAS_HOG, reason=f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 "
                                                   "moved it to opencv-contrib-python-headless)")


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(2, size / 3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def clustered_boxes(rng, n):
    """Boxes jittered around a few objects, so that NMS has real overlaps to resolve at any threshold."""
    centres = rng.uniform(20, 80, (4, 2))[rng.integers(0, 4, n)] + rng.normal(0, 4, (n, 2))
    half = rng.uniform(6, 14, (n, 2))
    return np.concatenate([centres - half, centres + half], axis=1)


def det(x1, y1, x2, y2, score=1.0, class_id=0, label="person"):
    return Detection(float(x1), float(y1), float(x2), float(y2), float(score), class_id, label)


# ------------------------------------------------------------------------------------------------ NMS
def brute_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def brute_nms(boxes, scores, classes, thr):
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(classes[i] != classes[k] or brute_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_box_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 17), random_boxes(rng, 23)
    expected = np.array([[brute_iou(x, y) for y in b] for x in a])
    assert (expected > 0).sum() > 10  # the random boxes really overlap
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(thr):
    rng = np.random.default_rng(int(thr * 10))
    for _ in range(20):
        boxes, scores = clustered_boxes(rng, 60), rng.uniform(0.01, 1, 60)
        classes = rng.integers(0, 3, 60)
        single = brute_nms(boxes, scores, np.zeros(60), thr)
        assert 5 < len(single) < 60  # suppression happened, but not of everything
        assert nms(boxes, scores, thr).tolist() == single
        assert batched_nms(boxes, scores, classes, thr).tolist() == brute_nms(boxes, scores, classes, thr)


def test_nms_boundary_errors_and_empty():
    half = np.array([[0, 0, 10, 10], [0, 0, 5, 10]])  # IoU exactly 0.5
    assert nms(half, [0.9, 0.8], 0.5).tolist() == [0, 1]  # suppress only above the threshold
    assert nms(half, [0.8, 0.9], 0.49).tolist() == [1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        nms(np.ones((3, 5)), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="one score per box"):
        nms(np.ones((3, 4)), np.ones(2), 0.5)


# -------------------------------------------------------------------------------------------- metrics
def test_match_detections_known_case():
    ref = [det(0, 0, 10, 10), det(20, 20, 30, 30), det(50, 50, 60, 60), det(1, 0, 11, 10, class_id=2, label="car")]
    pred = [det(1, 0, 11, 10, 0.9),        # IoU 9/11 with ref 0 -> TP
            det(0, 0, 10, 10, 0.8),        # ref 0 already taken -> FP (VOC: no fall-back)
            det(20, 22, 30, 32, 0.7),      # IoU 80/120 = 0.667 with ref 1 -> TP
            det(50, 50, 55, 60, 0.6),      # IoU 0.5 exactly with ref 2 -> TP (>=)
            det(0, 0, 10, 10, 0.95, class_id=1, label="bicycle")]  # wrong class -> FP
    result = match_detections(pred, ref, iou=0.5)
    assert (result.tp, result.fp, result.fn) == (3, 2, 1)
    assert result.pairs == ((0, 0), (2, 1), (3, 2))
    assert result.precision == pytest.approx(3 / 5) and result.recall == pytest.approx(3 / 4)
    assert result.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    agnostic = match_detections(pred, ref, iou=0.5, class_aware=False)
    # Class-agnostic: the 0.95 "bicycle" takes ref 0, the 0.9 box its best box, the "car" ref (IoU 1).
    assert (agnostic.tp, agnostic.fp, agnostic.fn) == (4, 1, 0)
    assert match_detections(pred, ref, iou=0.7).tp == 1
    total = result + agnostic
    assert (total.tp, total.fp, total.fn, total.pairs) == (7, 3, 1, ())


def test_match_empty_conventions():
    empty = match_detections([], [])
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0)
    missed = match_detections([], [det(0, 0, 5, 5)])
    assert (missed.precision, missed.recall, missed.f1) == (1.0, 0.0, 0.0)
    assert match_detections([det(0, 0, 5, 5)], []).precision == 0.0
    with pytest.raises(ValueError, match="iou"):
        match_detections([], [], iou=0.0)


def test_average_precision_known_cases():
    ref = [det(0, 0, 10, 10), det(20, 0, 30, 10), det(40, 0, 50, 10)]
    # By score: TP, FP, TP, FP, TP -> precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1.
    # Envelope: 1 up to recall 1/3, 2/3 up to 2/3, 3/5 up to 1 -> AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    pred = [det(0, 0, 10, 10, 0.9), det(70, 0, 80, 10, 0.8), det(20, 0, 30, 10, 0.7),
            det(90, 0, 99, 10, 0.6), det(40, 0, 50, 10, 0.5)]
    assert average_precision(pred, ref) == pytest.approx(34 / 45)
    # The same detections split over three frames pool into the same curve.
    frames_pred = [[pred[0], pred[3]], [pred[1], pred[2]], [pred[4]]]
    frames_ref = [[ref[0]], [ref[1]], [ref[2]]]
    assert average_precision(frames_pred, frames_ref) == pytest.approx(34 / 45)
    # TP, FP, FP, TP, TP: precision 1/2 at recall 2/3 is lifted by the envelope to the later 3/5:
    # AP = (1 + 3/5 + 3/5) / 3 = 11/15 (without interpolation it would be (1 + 1/2 + 3/5) / 3 = 0.7).
    late = [det(0, 0, 10, 10, 0.9), det(70, 0, 80, 10, 0.8), det(90, 0, 99, 10, 0.7),
            det(20, 0, 30, 10, 0.6), det(40, 0, 50, 10, 0.5)]
    assert average_precision(late, ref) == pytest.approx(11 / 15)
    # A missed reference caps recall at 2/3: AP = (1 + 2/3) / 3.
    assert average_precision(pred[:4], ref) == pytest.approx(5 / 9)
    # Two classes: person AP 34/45, car AP 1 (one perfect hit) -> mean.
    car_ref, car_pred = det(0, 50, 10, 60, class_id=2, label="car"), det(0, 50, 10, 60, 0.1, class_id=2, label="car")
    per_class = per_class_average_precision(pred + [car_pred], ref + [car_ref])
    assert per_class == pytest.approx({0: 34 / 45, 2: 1.0})
    assert average_precision(pred + [car_pred], ref + [car_ref]) == pytest.approx((34 / 45 + 1) / 2)
    assert np.isnan(average_precision(pred, []))
    with pytest.raises(ValueError, match="frames"):
        average_precision([[pred[0]]], [[ref[0]], []])


# ------------------------------------------------------------------------------------------ letterbox
def test_letterbox_pixels_and_padding():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image, box = letterbox(frame, (320, 320))
    assert image.shape == (320, 320, 3) and (box.top, box.left, box.resized_hw) == (40, 0, (240, 320))
    assert (image[:40] == 114).all() and (image[280:] == 114).all()
    np.testing.assert_array_equal(image[40:280], cv2.resize(frame, (320, 240), interpolation=cv2.INTER_LINEAR))
    # auto (dynamic graphs): 600x400 -> 640x427, height padded by 213 % 32 = 21 to 448 (10 top, 11 bottom).
    image, box = letterbox(rng.uniform(0, 1, (400, 600, 3)).astype(np.float32), (640, 640), auto=True)
    assert image.shape == (448, 640, 3) and (box.top, box.left, box.resized_hw) == (10, 0, (427, 640))
    np.testing.assert_allclose(image[:10], 114 / 255)
    np.testing.assert_allclose(image[437:], 114 / 255)


@pytest.mark.parametrize("frame_hw", [(480, 640), (200, 300), (333, 517), (720, 405)])
def test_letterbox_round_trip(frame_hw):
    rng = np.random.default_rng(sum(frame_hw))
    h, w = frame_hw
    _, box = letterbox(np.zeros((h, w, 3), np.uint8), (320, 416))
    boxes = np.sort(rng.uniform(0, 1, (50, 2, 2)), axis=1).reshape(50, 4)[:, [0, 2, 1, 3]] * [w, h, w, h]
    inside = box.to_input(boxes)
    assert inside[:, 0::2].min() >= box.left - 1e-9 and inside[:, 0::2].max() <= box.left + box.resized_hw[1] + 1e-9
    assert inside[:, 1::2].min() >= box.top - 1e-9 and inside[:, 1::2].max() <= box.top + box.resized_hw[0] + 1e-9
    np.testing.assert_allclose(box.to_frame(inside), boxes, rtol=0, atol=1e-9)


# -------------------------------------------------------------------------------- YOLO on built graphs
def constant_yolo_onnx(path: Path, output: np.ndarray, input_hw=(320, 320), metadata=None) -> Path:
    """A graph whose output is ``output`` + 0 * mean(input): known raw predictions for any image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["raw", "nothing"], ["output0"])]
    graph = helper.make_graph(
        nodes, "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[numpy_helper.from_array(output.astype(np.float32), "raw"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# Boxes in 320x320 input pixels (cx, cy, w, h). A 640x480 frame letterboxes at scale 0.5 with 40 px on
# top, so input (x, y) -> frame (2x, 2(y - 40)).
BOX_A = (100, 140, 40, 80)   # xyxy (80, 100, 120, 180) -> frame (160, 120, 240, 280)
BOX_B = (102, 142, 40, 80)   # overlaps A (IoU 0.9): suppressed when it has A's class
BOX_C = (101, 141, 40, 80)   # overlaps A, other class: kept -> frame (162, 122, 242, 282)
BOX_D = (250, 60, 60, 60)    # xyxy (220, 30, 280, 90) -> frame (440, -20 -> 0 clipped, 560, 100)
FRAME_A, FRAME_C, FRAME_D = (160, 120, 240, 280), (162, 122, 242, 282), (440, 0, 560, 100)


def v8_predictions(rng, cells=2100, names=3):
    """(1, 4+C, N) with random background (scores < 0.2) and the designed boxes."""
    rows = np.concatenate([rng.uniform(20, 300, (cells, 2)), rng.uniform(5, 60, (cells, 2)),
                           rng.uniform(0, 0.2, (cells, names))], axis=1)
    for index, box, cls, score in ((10, BOX_A, 1, 0.9), (500, BOX_B, 1, 0.8), (900, BOX_C, 2, 0.7),
                                   (1500, BOX_D, 0, 0.6), (2000, (50, 200, 20, 20), 0, 0.22)):
        rows[index, :4], rows[index, 4 + cls] = box, score
    return rows.T[None]


def frame_640x480(rng):
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


def assert_detections(found, expected):
    assert [(d.label, d.class_id) for d in found] == [(label, cid) for label, cid, _, _ in expected]
    for d, (_, _, score, box) in zip(found, expected):
        assert d.score == pytest.approx(score, rel=1e-5)
        np.testing.assert_allclose(d.box, box, atol=1e-3)


def test_yolo_v8_layout_decodes_known_boxes(tmp_path):
    rng = np.random.default_rng(2)
    assert anchor_counts((320, 320))[0] == 40 * 40 + 20 * 20 + 10 * 10 == 2100
    model = constant_yolo_onnx(tmp_path / "v8.onnx", v8_predictions(rng),
                               metadata={"names": "{0: 'car', 1: 'person', 2: 'dog'}", "stride": "32"})
    detector = create_detector(f"yolo:{model}")
    assert (detector.layout, detector.input_hw, detector.names) == ("v8", (320, 320), ("car", "person", "dog"))
    found = detector.detect(frame_640x480(rng))
    assert_detections(found, [("person", 1, 0.9, FRAME_A), ("dog", 2, 0.7, FRAME_C), ("car", 0, 0.6, FRAME_D)])
    # Float frames in [0, 1] give the same boxes; class filter; class-agnostic NMS drops C under A.
    assert [d.box for d in detector.detect(frame_640x480(rng) / 255.0)] == [d.box for d in found]
    only = create_detector(f"yolo:{model}?only=dog,car")
    assert [d.label for d in only.detect(frame_640x480(rng))] == ["dog", "car"]
    agnostic = create_detector(f"yolo:{model}?agnostic=1&conf=0.65")
    assert [d.label for d in agnostic.detect(frame_640x480(rng))] == ["person"]
    assert len(create_detector(f"yolo:{model}?max_det=2").detect(frame_640x480(rng))) == 2
    # Channel order: RGB by default (Ultralytics), reversed for channels=bgr; uint8 scaled to [0, 1].
    frame = frame_640x480(rng)
    rgb_batch, _ = detector.preprocess(frame)
    bgr_batch, _ = create_detector(f"yolo:{model}?channels=bgr").preprocess(frame)
    np.testing.assert_allclose(rgb_batch[0, 0, 40:280, :], cv2.resize(frame, (320, 240))[..., 0] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(bgr_batch, rgb_batch[:, ::-1])


def test_yolo_v8_transposed_and_class_count_check(tmp_path):
    rng = np.random.default_rng(3)
    model = constant_yolo_onnx(tmp_path / "v8t.onnx", v8_predictions(rng).transpose(0, 2, 1))
    detector = create_detector(f"yolo:{model}?classes=car,person,dog")
    assert detector.layout == "v8"
    assert_detections(detector.detect(frame_640x480(rng)),
                      [("person", 1, 0.9, FRAME_A), ("dog", 2, 0.7, FRAME_C), ("car", 0, 0.6, FRAME_D)])
    with pytest.raises(ValueError, match="scores 3 classes but 80 class names"):
        create_detector(f"yolo:{model}?classes=coco")


def test_yolo_v5_layout_multiplies_objectness(tmp_path):
    rng = np.random.default_rng(4)
    cells = 3 * 2100
    rows = np.concatenate([rng.uniform(20, 300, (cells, 2)), rng.uniform(5, 60, (cells, 2)),
                           rng.uniform(0, 0.2, (cells, 1)), rng.uniform(0, 1, (cells, 3))], axis=1)
    # (row, box, class, objectness, class score): A 0.95*0.95, B below A, C 0.9*0.8, D 0.8*0.75, and a
    # confident object whose class score is too low (0.9*0.2 = 0.18 < conf).
    for index, box, cls, obj, score in ((10, BOX_A, 1, 0.95, 0.95), (3000, BOX_B, 1, 0.9, 0.9),
                                        (4000, BOX_C, 2, 0.9, 0.8), (5000, BOX_D, 0, 0.8, 0.75),
                                        (6000, (50, 200, 20, 20), 0, 0.9, 0.2)):
        rows[index, :5] = (*box, obj)
        rows[index, 5:] = 0.1
        rows[index, 5 + cls] = score
    model = constant_yolo_onnx(tmp_path / "v5.onnx", rows[None])
    detector = YoloDetector(model, classes=["car", "person", "dog"])
    assert detector.layout == "v5"
    assert_detections(detector.detect(frame_640x480(rng)),
                      [("person", 1, 0.9025, FRAME_A), ("dog", 2, 0.72, FRAME_C), ("car", 0, 0.6, FRAME_D)])


def test_yolo_end_to_end_layout_skips_nms(tmp_path):
    rng = np.random.default_rng(5)
    rows = np.concatenate([random_boxes(rng, 300, 300), rng.uniform(0, 0.2, (300, 1)),
                           rng.integers(0, 80, (300, 1))], axis=1)

    def xyxy(cx, cy, w, h):
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)

    rows[7] = (*xyxy(*BOX_A), 0.9, 0)
    rows[8] = (*xyxy(*BOX_B), 0.8, 0)  # the graph already decided: overlapping boxes both stay
    rows[9] = (*xyxy(*BOX_D), 0.6, 2)
    detector = create_detector(f"yolo:{constant_yolo_onnx(tmp_path / 'e2e.onnx', rows[None])}")
    assert detector.layout == "e2e" and detector.names == COCO80
    frame_b = (2 * (102 - 20), 2 * (142 - 40 - 40), 2 * (102 + 20), 2 * (142 + 40 - 40))
    assert_detections(detector.detect(frame_640x480(rng)),
                      [("person", 0, 0.9, FRAME_A), ("person", 0, 0.8, frame_b), ("car", 2, 0.6, FRAME_D)])


def test_detect_layout_rules():
    assert detect_layout((1, 84, 8400), (640, 640)) == "v8"
    assert detect_layout((1, 8400, 84), (640, 640)) == "v8"
    assert detect_layout((1, 84, 8500), (640, 640)) == "v8"  # P6 head (strides 8..64)
    assert detect_layout((1, 25200, 85), (640, 640)) == "v5"
    assert detect_layout((1, 25200, 6), (640, 640)) == "v5"  # one-class v5, not end-to-end
    assert detect_layout((1, 300, 6), (640, 640)) == "e2e"
    assert detect_layout((1, 84, 5040), (384, 640)) == "v8"  # rectangular input
    with pytest.raises(ValueError, match="layout=v5"):
        detect_layout((1, 84, 8000), (640, 640))


def tiny_v8_model(num_classes=4):
    """A real conv net with a YOLOv8-style anchor-free head: ltrb distances per cell + sigmoid classes."""
    import torch
    from torch import nn

    class TinyV8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 3, 8, 1), nn.SiLU()),
                                         nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.SiLU()),
                                         nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.SiLU())])
            self.heads = nn.ModuleList([nn.Conv2d(8, 4 + num_classes, 1) for _ in range(3)])

        def forward(self, x):
            outputs, feature = [], x
            for stride, stage, head in zip((8, 16, 32), self.stages, self.heads):
                feature = stage(feature)
                raw = head(feature)
                h, w = raw.shape[-2:]
                ys = (torch.arange(h, dtype=x.dtype) + 0.5).view(h, 1).expand(h, w).reshape(1, -1)
                xs = (torch.arange(w, dtype=x.dtype) + 0.5).view(1, w).expand(h, w).reshape(1, -1)
                dist = torch.nn.functional.softplus(raw[:, :4].flatten(2)) * 2.0  # l, t, r, b in cells
                x1, y1 = xs - dist[:, 0], ys - dist[:, 1]
                x2, y2 = xs + dist[:, 2], ys + dist[:, 3]
                box = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1) * stride
                outputs.append(torch.cat([box, raw[:, 4:].flatten(2).sigmoid()], 1))
            return torch.cat(outputs, 2)

    torch.manual_seed(0)
    return TinyV8().eval()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter, as in export/
def test_yolo_real_exported_model_end_to_end(tmp_path):
    import io

    import onnx
    import torch

    model = tiny_v8_model()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.rand(1, 3, 320, 320),), buffer, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {2: "height", 3: "width"}, "output0": {2: "anchors"}})
    onnx_model = onnx.load_from_string(buffer.getvalue())
    onnx_model.metadata_props.add(key="names", value=str({i: f"c{i}" for i in range(4)}))
    path = tmp_path / "tiny.onnx"
    onnx.save(onnx_model, str(path))

    detector = create_detector(f"yolo:{path}?size=320&conf=0.3&iou=0.5")
    assert (detector.layout, detector.auto, detector.names) == ("v8", True, ("c0", "c1", "c2", "c3"))
    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    found = detector.detect(frame)
    batch, box = detector.preprocess(frame)
    assert batch.shape == (1, 3, 224, 320)  # 300x200 -> 320x213, padded to the next multiple of 32
    with torch.no_grad():
        reference = detector.postprocess(model(torch.from_numpy(batch)).numpy(), box)
    assert 0 < len(found) <= 300 and len(found) == len(reference)
    for a, b in zip(found, reference):
        assert (a.class_id, a.label) == (b.class_id, b.label)
        assert a.score == pytest.approx(b.score, abs=1e-4)
        np.testing.assert_allclose(a.box, b.box, atol=1e-2)
    boxes = np.array([d.box for d in found])
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 300).all() and (boxes[:, 1::2] <= 200).all()
    assert all(d.score > 0.3 for d in found) and [d.score for d in found] == sorted((d.score for d in found),
                                                                                      reverse=True)
    # No same-class pair above the NMS IoU is left. NMS runs before clipping to the frame (as in
    # Ultralytics), which can raise overlaps, so only boxes clear of the frame border are compared.
    inner = [d for d in found if d.x1 > 0 and d.y1 > 0 and d.x2 < 300 and d.y2 < 200]
    assert len(inner) >= 5
    overlaps = box_iou([d.box for d in inner], [d.box for d in inner])
    same = np.array([[a.class_id == b.class_id for b in inner] for a in inner]) & ~np.eye(len(inner), dtype=bool)
    assert (overlaps[same] <= 0.5 + 1e-9).all()


# ------------------------------------------------------------------------------------------------ HOG
def pedestrian_silhouette() -> np.ndarray:
    """A dark upright figure (head, torso, arms, legs) on a light background, RGB uint8 240x320."""
    image = np.full((320, 240, 3), 200, np.uint8)
    black = (0, 0, 0)
    cv2.circle(image, (120, 70), 14, black, -1)
    cv2.rectangle(image, (104, 86), (136, 170), black, -1)
    for start, end, width in (((106, 92), (92, 160), 9), ((134, 92), (148, 160), 9),
                              ((112, 168), (104, 250), 12), ((128, 168), (136, 250), 12)):
        cv2.line(image, start, end, black, width)
    return image


@needs_hog
def test_hog_finds_a_pedestrian_silhouette():
    found = create_detector("hog").detect(pedestrian_silhouette())
    assert len(found) >= 1 and all(d.label == "person" and d.class_id == 0 for d in found)
    assert create_detector("hog").detect(pedestrian_silhouette() / 255.0) == found  # float frames in [0, 1]
    figure = (90, 55, 152, 252)  # the drawn figure's extent
    assert box_iou([found[0].box], [figure])[0, 0] > 0.3 and found[0].score > 1.0


@needs_hog
def test_hog_on_noise_finds_nothing():
    rng = np.random.default_rng(7)
    detector = create_detector("hog")
    hits = sum(len(detector.detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))) for _ in range(3))
    assert hits == 0


@needs_hog
def test_hog_finds_the_skier_in_a_real_photo(data_dir):
    path = data_dir / "clean_bsd" / "61086.jpg"  # a skier in red, about 50x140 px, in a village scene
    if not path.is_file():
        pytest.skip(f"{path} not in the data directory")
    frame = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    skier = det(196, 285, 247, 424)  # hand-labelled
    found = create_detector("hog:width=0").detect(frame)
    assert len(found) >= 1
    best = found[int(np.argmax(box_iou(np.array([d.box for d in found]), [skier.box])[:, 0]))]
    assert box_iou([best.box], [skier.box])[0, 0] > 0.3
    assert best.x1 < 221 < best.x2 and best.y1 < 354 < best.y2  # holds the skier's centre


@needs_hog
def test_hog_options_speed_and_small_frames():
    detector = create_detector("hog:scale=1.1,hit=0.5,stride=8x8,padding=16,width=320,nms=0.3")
    assert (detector.scale, detector.hit_threshold, detector.win_stride, detector.padding, detector.width,
            detector.nms_iou) == (1.1, 0.5, (8, 8), (16, 16), 320, 0.3)
    assert detector.detect(np.full((100, 60, 3), 128, np.uint8)) == []  # smaller than the 64x128 window
    frame = cv2.resize(pedestrian_silhouette(), (640, 480))
    default = create_detector("hog")
    default.detect(frame)
    start = time.perf_counter()
    default.detect(frame)
    assert time.perf_counter() - start < 0.5  # ~40 ms on a 2-core CPU at the default width=400
    with pytest.raises(ValueError, match="multiple of 8"):
        create_detector("hog:stride=4")
    with pytest.raises(ValueError, match="unknown option"):
        create_detector("hog:sclae=1.05")


# --------------------------------------------------------------------------------------------- drawing
def test_draw_detections_in_place():
    rng = np.random.default_rng(8)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = frame.copy()
    boxes = [det(20, 40, 80, 100, 0.87), det(100, 0, 150, 50, 0.5, class_id=2, label="car")]
    assert draw_detections(frame, boxes) is frame
    color = class_color(0)
    assert class_color(0) != class_color(2)
    # Box edges (x2/y2 exclusive -> last pixel 79/99) carry the class colour; the interior and far pixels not.
    np.testing.assert_array_equal(frame[70, 20], color)
    np.testing.assert_array_equal(frame[99, 50], color)
    np.testing.assert_array_equal(frame[70, 79], color)
    np.testing.assert_array_equal(frame[60:90, 30:70], before[60:90, 30:70])
    np.testing.assert_array_equal(frame[110:, :10], before[110:, :10])
    assert (frame[25:39, 20:60] != before[25:39, 20:60]).any()  # the tag above the first box
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(frame.astype(np.float32) / 255, boxes)
    with pytest.raises(ValueError, match="contiguous"):
        draw_detections(frame[:, ::2], boxes)


# ---------------------------------------------------------------------------------------- create_detector
def test_create_detector_uris_and_errors(tmp_path):
    assert isinstance(create_detector("none"), NullDetector)
    assert create_detector("none").detect(np.zeros((4, 4, 3), np.uint8)) == []
    with pytest.raises(ValueError, match=r"unknown detector 'ssd:x'.*'hog'.*'yolo:model.onnx.*'none'"):
        create_detector("ssd:x")
    with pytest.raises(FileNotFoundError, match="missing.onnx not found.*'hog'"):
        create_detector(f"yolo:{tmp_path / 'missing.onnx'}")
    with pytest.raises(ValueError, match="names no model"):
        create_detector("yolo:")
    with pytest.raises(ValueError, match="HxWx3"):
        create_detector("none").detect(np.zeros((4, 4), np.uint8))
    rng = np.random.default_rng(9)
    model = constant_yolo_onnx(tmp_path / "m.onnx", v8_predictions(rng, names=80))
    with pytest.raises(ValueError, match="unknown option.*valid options: conf, iou"):
        create_detector(f"yolo:{model}?confidence=0.3")
    with pytest.raises(ValueError, match="option conf='high' is invalid"):
        create_detector(f"yolo:{model}?conf=high")
    with pytest.raises(ValueError, match="layout must be one of"):
        create_detector(f"yolo:{model}?layout=v9")
    with pytest.raises(ValueError, match="not a class of this model"):
        create_detector(f"yolo:{model}?only=unicorn")
    with pytest.raises(FileNotFoundError, match="class names file"):
        create_detector(f"yolo:{model}?classes={tmp_path / 'names.txt'}")
    (tmp_path / "names.txt").write_text("\n".join(f"thing{i}" for i in range(80)) + "\n")
    detector = create_detector(f"yolo:{model}?classes={tmp_path / 'names.txt'}&conf=0.5&iou=0.6&device=cpu")
    assert (detector.names[79], detector.conf, detector.iou) == ("thing79", 0.5, 0.6)
    assert detector.detect(frame_640x480(rng))[0].label == "thing1"
    with pytest.raises(ValueError, match="HxWx3 RGB frame"):
        detector.detect(np.zeros((3, 480, 640), np.float32))
    if HAS_HOG:
        assert create_detector("hog:scale=1.05,hit=0.0").scale == 1.05
