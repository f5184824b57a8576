"""Precision stage: calibration sets, explicit INT8 Q/DQ graphs, legacy caches, mixed precision, reports.

The shipped EfficientDeRain (width 0.25) is exported once per module and calibrated on a tiny set
(64x64 crops) generated from the development data, so everything runs on ONNX Runtime CPU in a few
seconds. Engine builds need TensorRT-RTX (or TensorRT with a GPU) and skip otherwise.
"""
from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.quant import (BudgetUnreachable, CalibrationSet, QuantTable, calibrate,  # noqa: E402
                               collect_from_media, collect_from_recipe, greedy_plan, insert_qdq, ort_quantize,
                               qdq_problems, quantizable_convs, quantized_convs_of, rain_score,
                               read_calibration_cache, read_quant_table, write_calibration_cache)
from edge_derain.quant.legacy_cache import float_to_hex, hex_to_float  # noqa: E402
from edge_derain.quant.sensitivity import LayerGroup, psnr_y_per_pair  # noqa: E402

TINY_RECIPE = {
    "seed": 3, "clean_dir": "clean_bsd", "streak_dir": "streaks_garg06", "crop": [64, 64],
    "strata": [{"name": "dry", "rain": None, "count": 1, "holdout": 1},
               {"name": "light", "rain": "light", "count": 2, "holdout": 1},
               {"name": "heavy", "rain": "heavy", "count": 2, "holdout": 1},
               {"name": "rainmix", "rain": "medium", "rainmix": "paper", "count": 1}],
}


def _trt_target():
    from edge_derain.engine import TensorRTUnavailable, detect_tensorrt

    try:
        flavour = detect_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(f"no TensorRT flavour importable: {exc}")
    return "sm86" if flavour.supports_targets else "auto"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from edge_derain.checkpoint import load_model
    from edge_derain.export import export_model

    result = export_model(load_model("efderain_w025"), tmp_path_factory.mktemp("export") / "ef")
    return result.plugin_path, result.portable_path


@pytest.fixture(scope="module")
def calib_set(data_dir, tmp_path_factory):
    return collect_from_recipe(data_dir, tmp_path_factory.mktemp("calib") / "set", TINY_RECIPE)


@pytest.fixture(scope="module")
def calibrated(export, calib_set, tmp_path_factory):
    return calibrate(export[0], tmp_path_factory.mktemp("int8") / "ef.int8", calib_dir=calib_set.root)


# --------------------------------------------------------------------------------------------------
# calibration sets


def test_recipe_set_is_stratified_padded_and_reproducible(calib_set, data_dir, tmp_path):
    described = calib_set.describe()
    assert described["splits"] == {"holdout": {"dry": 1, "light": 1, "heavy": 1},
                                    "calib": {"dry": 1, "light": 2, "heavy": 2, "rainmix": 1}}
    for frame in calib_set.frames:
        assert frame.source.startswith("clean_bsd/") and frame.target is not None
        tensor = calib_set.read_input(frame)
        assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == np.float32
        assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    rainy = [calib_set.read_input(f) for f in calib_set.frames if f.stratum == "heavy"]
    assert all(r.std() > 0 for r in rainy)
    again = collect_from_recipe(data_dir, tmp_path / "again", TINY_RECIPE)
    assert [f.sha256 for f in again.frames] == [f.sha256 for f in calib_set.frames]


def test_recipe_pads_like_inference(data_dir, tmp_path):
    from edge_derain.backends import pad_to_multiple_np

    recipe = dict(TINY_RECIPE, crop=[50, 70], strata=[{"name": "light", "rain": "light", "count": 1}])
    made = collect_from_recipe(data_dir, tmp_path / "set", recipe)
    frame = made.frames[0]
    tensor = made.read_input(frame)
    assert (frame.height, frame.width) == (50, 70) and tensor.shape == (1, 3, 64, 80)
    assert np.array_equal(tensor, pad_to_multiple_np(tensor[..., :50, :70], 16))


@pytest.mark.parametrize("folder", ["val/clean", "real"])
def test_recipe_refuses_evaluation_folders(data_dir, tmp_path, folder):
    with pytest.raises(ValueError, match=r"evaluation folder .*never see validation"):
        collect_from_recipe(data_dir, tmp_path / "set", dict(TINY_RECIPE, clean_dir=folder))


def test_collect_from_media_stratifies_by_rain_score(data_dir, tmp_path):
    from edge_derain.data import RainRenderer, list_images, read_image

    clean = read_image(list_images(data_dir / "clean_bsd")[0])[:160, :240]
    rng = np.random.default_rng(0)
    heavy = RainRenderer.preset("heavy").render(clean, rng)[0]
    assert rain_score(heavy) > rain_score(clean) * 1.2
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (240, 160))
    for k in range(9):
        amount = k / 8  # dry -> heavy rain across the clip
        frame = np.clip((1 - amount) * clean + amount * heavy, 0, 1)
        writer.write(cv2.cvtColor((frame * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "dry.png"), cv2.cvtColor((clean * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    made = collect_from_media([video, images], tmp_path / "set", count=6, crop=(96, 96), frames_per_video=9)
    assert len(made) == 6 and {f.stratum for f in made.frames} == {"light", "medium", "heavy"}
    assert all(made.read_input(f).shape == (1, 3, 96, 96) and f.split == "calib" for f in made.frames)
    scores = {s: [f.rain_score for f in made.frames if f.stratum == s] for s in ("light", "heavy")}
    assert max(scores["light"]) < min(scores["heavy"])
    assert made.holdout_pairs() == []


def test_calibration_set_errors(tmp_path, calib_set):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"format": "edge_derain.calibration/1", "input_multiple": 16,
                                                     "frames": []}))
    with pytest.raises(ValueError, match="is empty"):
        CalibrationSet.load(empty)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        CalibrationSet.load(tmp_path / "missing")

    def one_frame_set(name: str, array: np.ndarray, suffix: str, height: int, width: int):
        root = tmp_path / name
        (root / "frames").mkdir(parents=True)
        path = root / "frames" / f"f{suffix}"
        np.save(path, array) if suffix == ".npy" else cv2.imwrite(str(path), array)
        import hashlib
        frame = {"file": f"frames/f{suffix}", "split": "calib", "stratum": "x", "source": "test", "height": height,
                 "width": width, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        (root / "manifest.json").write_text(json.dumps({"format": "edge_derain.calibration/1", "input_multiple": 16,
                                                        "frames": [frame]}))
        made = CalibrationSet.load(root)
        return made, made.frames[0]

    made, frame = one_frame_set("grey", np.full((32, 32), 128, np.uint8), ".png", 32, 32)
    with pytest.raises(ValueError, match=r"has 1 channel\(s\).*expected 8-bit RGB"):
        made.read_input(frame)
    rng = np.random.default_rng(0)
    made, frame = one_frame_set("four", rng.random((1, 4, 32, 32), dtype=np.float32), ".npy", 32, 32)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 32, 32\); expected float32 \(1, 3, H, W\)"):
        made.read_input(frame)
    made, frame = one_frame_set("size", rng.random((1, 3, 40, 32), dtype=np.float32), ".npy", 40, 32)
    with pytest.raises(ValueError, match="not padded to a multiple of 16"):
        made.read_input(frame)
    with pytest.raises(ValueError, match="padded to multiples of 16 but the model needs multiples of 32"):
        calib_set.check_for_model(32)


# --------------------------------------------------------------------------------------------------
# Q/DQ graphs


def _producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def test_qdq_graphs_meet_tensorrt_constraints(calibrated, export):
    plugin_fp32 = onnx.load(str(export[0]))
    convs = quantizable_convs(plugin_fp32)
    assert len(convs) == 26  # 8 stages x 3 convs, kernel head, fusion
    for path in (calibrated.plugin_path, calibrated.portable_path):
        model = onnx.load(str(path))
        assert qdq_problems(model) == [] and quantized_convs_of(model) == convs
        producer = _producers(model)
        initializers = {t.name: t for t in model.graph.initializer}
        assert not any(t.data_type == TensorProto.INT32 for t in model.graph.initializer)
        by_name = {node.name: node for node in model.graph.node}
        for name in convs:
            conv = by_name[name]
            act, weight = producer[conv.input[0]], producer[conv.input[1]]
            assert act.op_type == "DequantizeLinear" and producer[act.input[0]].op_type == "QuantizeLinear"
            assert weight.op_type == "DequantizeLinear"
            assert initializers[weight.input[0]].data_type == TensorProto.INT8
            assert helper.get_attribute_value(weight.attribute[0]) == 0  # axis
            out_channels = initializers[weight.input[0]].dims[0]
            assert numpy_helper.to_array(initializers[weight.input[1]]).shape == (out_channels,)
            assert initializers[conv.input[2]].data_type == TensorProto.FLOAT  # bias stays float
        for node in model.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                zero_point = numpy_helper.to_array(initializers[node.input[2]])
                assert zero_point.dtype == np.int8 and not zero_point.any()
    plugin = onnx.load(str(calibrated.plugin_path))
    (dilation,) = [n for n in plugin.graph.node if n.op_type == "DilationFilter"]
    producer = _producers(plugin)
    assert all(producer.get(i) is None or producer[i].op_type == "Conv" for i in dilation.input)  # float in
    assert [n.op_type for n in plugin.graph.node if dilation.output[0] in n.input] == ["QuantizeLinear"]  # Q after
    portable = onnx.load(str(calibrated.portable_path))
    taps = [n for n in portable.graph.node if n.name.startswith("/DilationFilter/Conv")]
    assert len(taps) == 4 and all(n.input[0] == "image" for n in taps)  # the filter reads the float image


def test_qdq_problems_catch_violations(calibrated):
    model = onnx.load(str(calibrated.plugin_path))
    initializers = {t.name: t for t in model.graph.initializer}
    first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    initializers[first_q.input[2]].CopyFrom(numpy_helper.from_array(np.array(3, np.int8), first_q.input[2]))
    conv = next(n for n in model.graph.node if n.name == "/conv2/conv2.0/Conv")
    bias = initializers[conv.input[2]]
    bias.CopyFrom(numpy_helper.from_array(np.zeros(bias.dims, np.int32), bias.name))
    producer = _producers(model)
    weight_dq = producer[next(n for n in model.graph.node if n.name == "/conv3/conv3.0/Conv").input[1]]
    weight_dq.attribute[0].i = 1  # per-channel scales on the input-channel axis
    unquantized = next(n for n in model.graph.node if n.name == "/conv4/conv4.0/Conv")
    unquantized.input[0] = producer[producer[unquantized.input[0]].input[0]].input[0]  # skip its Q/DQ
    problems = qdq_problems(model)
    assert [p for p in problems if "not INT8 0" in p] == [f"{first_q.name} zero point is int8 [3], not INT8 0",
                                                          "image_DequantizeLinear zero point is int8 [3], not INT8 0"]
    assert "/conv2/conv2.0/Conv bias is quantized; TensorRT needs a float bias" in problems
    assert "/conv3/conv3.0/Conv weight scales are not per output channel on axis 0" in problems
    assert "/conv4/conv4.0/Conv has no Q/DQ on its activation input" in problems
    assert len(problems) == 5


def test_plugin_and_portable_carry_the_same_scales_as_onnxruntime(calibrated, calib_set, export):
    convs = quantizable_convs(onnx.load(str(export[0])))
    plugin = read_quant_table(onnx.load(str(calibrated.plugin_path)), convs, "plugin")
    portable = read_quant_table(onnx.load(str(calibrated.portable_path)), convs, "portable")
    assert plugin.activations == portable.activations and plugin.weights == portable.weights
    recorded = QuantTable.from_dict(calibrated.record["scales"])
    assert plugin.activations == recorded.activations and plugin.weights == recorded.weights
    # Recalibrating with ORT gives the same scales, and our inserter quantizes weights exactly as ORT does.
    ort_model = ort_quantize(export[1], convs, calib_set.inputs("calib"))
    assert read_quant_table(ort_model, convs, "ort").activations == plugin.activations
    ours, theirs = ({t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("_quantized")}
                    for m in (onnx.load(str(calibrated.portable_path)), ort_model))
    assert len(ours) == 26 and ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_int8_on_ort_stays_close_to_fp32(calibrated, calib_set, export):
    """Thresholds: 8-bit symmetric per-tensor activations and per-channel weights give each layer a
    quantization SNR of roughly 40 dB; through 26 convs the INT8 output should stay > 30 dB from the
    FP32 output, and its PSNR against the clean targets within 0.3 dB (the calibrated efderain_w025 loses
    0.06 dB on the 8 held-out frames of the default set: benchmarks/precision_cpu.py --weights efderain_w025)."""
    import onnxruntime as ort

    pairs = calib_set.holdout_pairs()
    assert len(pairs) == 3
    fp32, int8 = onnx.load(str(export[1])), onnx.load(str(calibrated.portable_path))
    drop = np.mean(psnr_y_per_pair(fp32, pairs)) - np.mean(psnr_y_per_pair(int8, pairs))
    assert abs(drop) < 0.3
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (fp32, int8)]
    for pair in pairs:
        a, b = (s.run(None, {"image": pair.input})[0] for s in sessions)
        assert 10 * np.log10(1.0 / np.mean((a - b) ** 2)) > 30.0
        assert not np.array_equal(a, b)  # the INT8 graph really quantizes
    holdout = calibrated.record["holdout"]
    assert holdout["count"] == 3 and abs(holdout["int8_drop_db"] - drop) < 1e-9
    assert abs(holdout["fp16_drop_db"]) < 0.05 and "explicit casts" in holdout["fp16_measured"]


@pytest.mark.parametrize("which", ["plugin", "portable"])
def test_int8_graph_builds_a_tensorrt_int8_engine(calibrated, tmp_path, which):
    from edge_derain.engine import ShapeProfile, build_engine

    target = _trt_target()
    path = calibrated.plugin_path if which == "plugin" else calibrated.portable_path
    result = build_engine(path, tmp_path / "int8.engine", precision="int8", target=target,
                          shapes=ShapeProfile((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 128, 128)))
    int8_layers = [layer for layer in result.layers if "Int8" in layer.datatypes]
    assert len(int8_layers) >= 26
    if which == "plugin":
        (plugin,) = result.plugin_layers
        assert plugin.plugin == "DilationFilter" and "Int8" not in plugin.datatypes


def test_fp16_engine_from_the_plugin_graph(export, tmp_path):
    from edge_derain.engine import ShapeProfile, build_engine

    result = build_engine(export[0], tmp_path / "fp16.engine", precision="fp16", target=_trt_target(),
                          shapes=ShapeProfile((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 128, 128)))
    assert any("Half" in layer.datatypes for layer in result.layers)
    assert not any("Int8" in layer.datatypes for layer in result.layers)


def test_percentile_clips_the_minmax_ranges(calibrated, calib_set, export):
    convs = quantizable_convs(onnx.load(str(export[0])))
    table = read_quant_table(ort_quantize(export[1], convs, calib_set.inputs("calib"), "percentile", 99.0),
                             convs, "percentile")
    minmax = QuantTable.from_dict(calibrated.record["scales"]).activations
    assert table.activations.keys() == minmax.keys()
    assert all(table.activations[t] <= minmax[t] * (1 + 1e-6) for t in minmax)
    assert sum(table.activations[t] < 0.99 * minmax[t] for t in minmax) > len(minmax) // 2


# --------------------------------------------------------------------------------------------------
# legacy TensorRT calibration caches


def test_cache_hex_encoding_matches_tensorrt():
    assert float_to_hex(1.0) == "3f800000"
    assert hex_to_float("3c010204") == struct.unpack(">f", bytes.fromhex("3c010204"))[0]
    assert hex_to_float(float_to_hex(0.0123)) == np.float32(0.0123)


def test_legacy_cache_round_trip(calibrated, export, tmp_path):
    scales = QuantTable.from_dict(calibrated.record["scales"])
    cache_path = write_calibration_cache(tmp_path / "calib.cache", {**scales.activations, "derained": 0.25},
                                         trt_version=8601)
    assert cache_path.read_text().splitlines()[0] == "TRT-8601-EntropyCalibration2"
    cache = read_calibration_cache(cache_path)
    assert cache.version == 8601 and cache.algorithm == "EntropyCalibration2"
    assert all(cache.scales[t] == np.float32(s) for t, s in scales.activations.items())
    result = calibrate(export[0], tmp_path / "from_cache", cache=cache_path)
    convs = quantizable_convs(onnx.load(str(export[0])))
    for path in (result.plugin_path, result.portable_path):
        imported = read_quant_table(onnx.load(str(path)), convs, "cache")
        assert imported.activations == scales.activations
        assert imported.weights == scales.weights  # recomputed from the weights with ORT's formula
    assert "TRT-8601-EntropyCalibration2" in result.record["scales"]["source"]


def test_legacy_cache_errors(export, tmp_path):
    foreign = tmp_path / "foreign.cache"
    foreign.write_text("TRT-100300-MinMaxCalibration\ninput_1: 3c010204\nconv0_out: 3d000000\n")
    with pytest.raises(ValueError, match=r"is from another model: it has no scale for any of the 26 tensors"):
        calibrate(export[0], tmp_path / "x", cache=foreign)
    partial = tmp_path / "partial.cache"
    partial.write_text("TRT-8601-EntropyCalibration2\nimage: 3c010204\n")
    with pytest.raises(ValueError, match=r"lacks scales for \d+ of the 2\d tensors"):
        calibrate(export[0], tmp_path / "x", cache=partial)
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8601-EntropyCalibration2\nimage: 3c010204\nnot a scale line\n")
    with pytest.raises(ValueError, match="line 3 is not 'tensor_name: <hex float32>'"):
        read_calibration_cache(bad)
    bad.write_text("{\"CLS\": \"TensorsData\"}\n")
    with pytest.raises(ValueError, match="first line must look like TRT-8601-EntropyCalibration2"):
        read_calibration_cache(bad)


# --------------------------------------------------------------------------------------------------
# accuracy-budgeted mixed precision


def _groups(*names):
    return [LayerGroup(name, (f"/{name}/Conv",), 100) for name in names]


def test_greedy_plan_drops_the_most_sensitive_groups_until_the_budget_holds():
    alone = {"a": 0.05, "b": 0.2, "c": 0.4}

    def additive(convs):
        return sum(alone[c.split("/")[1]] for c in convs)

    plan = greedy_plan(_groups("a", "b", "c"), additive, 0.3)
    assert plan["met"] and [g.name for g in plan["int8"]] == ["a", "b"] and plan["drop"] == pytest.approx(0.25)
    assert plan["sensitivity"] == alone and plan["reason"] is None


def test_greedy_plan_tries_moved_groups_again():
    # Not additive: b and c interact, so the ranking removes both, then c alone fits again.
    drops = {frozenset("abc"): 1.0, frozenset("ab"): 0.45, frozenset("a"): 0.1, frozenset("b"): 0.3,
             frozenset("c"): 0.35, frozenset("ac"): 0.38}

    def measure(convs):
        return drops[frozenset(c.split("/")[1] for c in convs)]

    plan = greedy_plan(_groups("a", "b", "c"), measure, 0.4)
    assert [g.name for g in plan["int8"]] == ["a", "c"] and plan["drop"] == 0.38 and plan["met"]
    assert len(plan["trials"]) == len({frozenset(t["int8_groups"]) for t in plan["trials"]})  # none repeated


def test_greedy_plan_reports_an_unreachable_budget():
    plan = greedy_plan(_groups("a", "b"), lambda convs: 0.5 * len(convs) + (0.1 if "/b/Conv" in convs else 0), 0.3)
    assert not plan["met"] and plan["int8"] == []
    assert "0.3 dB budget is unreachable" in plan["reason"] and "a, loses 0.500 dB" in plan["reason"]


def test_budgeted_calibration_writes_a_plan(export, calib_set, tmp_path):
    try:
        result = calibrate(export[0], tmp_path / "mixed", calib_dir=calib_set.root, max_drop_db=0.3, groups="stage")
    except BudgetUnreachable as exc:
        plan = json.loads((tmp_path / "mixed.plan.json").read_text())
        assert not plan["met"] and plan["reason"] in str(exc)
        return
    plan = json.loads(result.plan_path.read_text())
    assert plan["met"] and plan["achieved_drop_db"] <= 0.3 and 0 < plan["int8_coverage"] <= 1
    assert [g["name"] for g in plan["sensitivity"]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6",
                                                       "conv7", "conv8", "kernel_head", "fusion"]
    assert quantized_convs_of(onnx.load(str(result.plugin_path))) == plan["int8_convs"]
    assert result.record["int8_coverage"] == plan["int8_coverage"]


def test_budget_needs_held_out_targets(export, tmp_path, data_dir):
    from edge_derain.data import list_images

    made = collect_from_media([list_images(data_dir / "clean_bsd")[0]], tmp_path / "set", count=1, crop=(64, 64))
    with pytest.raises(ValueError, match="held-out split, and this set has none"):
        calibrate(export[0], tmp_path / "x", calib_dir=made.root, max_drop_db=0.3)


# --------------------------------------------------------------------------------------------------
# FP16 on ONNX Runtime CPU and the report


def test_fp16_cpu_graph_rounds_every_tensor_to_fp16():
    """y = ((x + c) * d) - e: each op computes in FP32 from FP16 inputs and its result is stored as FP16."""
    from edge_derain.quant.report import fp16_graph_for_ort_cpu

    import onnxruntime as ort

    c, d, e = np.float32(1e-3), np.float32(1.37), np.float32(0.71)
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((c, "c"), (d, "d"), (e, "e"))]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["t"], name="add"), helper.make_node("Mul", ["t", "d"], ["u"], name="mul"),
         helper.make_node("Sub", ["u", "e"], ["y"], name="sub")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    emulated, statement = fp16_graph_for_ort_cpu(model)
    x = np.random.default_rng(0).uniform(0.5, 2.0, (1, 3, 4, 4)).astype(np.float32)
    got = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    h = np.float16
    expected = h(h(h(x).astype(np.float32) + h(c).astype(np.float32)).astype(np.float32) * h(d).astype(np.float32))
    expected = h(expected.astype(np.float32) - h(e).astype(np.float32)).astype(np.float32)
    assert np.array_equal(got, expected)
    assert not np.allclose(got, (x + c) * d - e, atol=1e-6, rtol=0)
    assert "rounded to FP16" in statement


@pytest.fixture(scope="module")
def paired_folder(calib_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    for sub in ("rain", "clean"):
        (root / sub).mkdir()
    for pair in calib_set.holdout_pairs():
        h, w = pair.target.shape[:2]
        rain = (pair.input[0, :, :h, :w].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        cv2.imwrite(str(root / "rain" / f"{pair.name}.png"), cv2.cvtColor(rain, cv2.COLOR_RGB2BGR))
        clean = (pair.target * 255).round().astype(np.uint8)
        cv2.imwrite(str(root / "clean" / f"{pair.name}.png"), cv2.cvtColor(clean, cv2.COLOR_RGB2BGR))
    return root


def test_precision_report_on_ort(calibrated, export, paired_folder, tmp_path):
    from edge_derain.quant import precision_report, write_precision_report

    report = precision_report(export[0], paired_folder, "fp32,fp16,int8", backend="ort",
                              int8_path=calibrated.plugin_path, progress=False)
    assert list(report["precisions"]) == ["fp32", "fp16", "int8"] and report["count"] == 3
    fp32 = report["precisions"]["fp32"]
    assert fp32["drop"] == {"psnr_y": 0.0, "ssim_y": 0.0}
    for precision in ("fp16", "int8"):
        entry = report["precisions"][precision]
        per_image = [img["fp32"]["psnr_y"] - img[precision]["psnr_y"] for img in report["images"]]
        assert [img[precision]["drop_psnr_y"] for img in report["images"]] == pytest.approx(per_image)
        assert entry["drop"]["psnr_y"] == pytest.approx(np.mean(per_image))
        assert abs(entry["drop"]["psnr_y"]) < 0.3
    assert "explicit casts" in report["precisions"]["fp16"]["measured"]
    assert "simulated quantization" in report["precisions"]["int8"]["measured"]
    json_path, png_path = write_precision_report(report, tmp_path)
    assert json.loads(json_path.read_text())["precisions"]["int8"]["graph"].endswith(".int8.portable.onnx")
    assert png_path.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------------------
# one-line errors and the command line


def test_nothing_to_quantize(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["derained"], name="relu")], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("derained", TensorProto.FLOAT, [1, 3, 16, 16])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ValueError, match="has no Conv with constant weights, so there is nothing to quantize"):
        calibrate(path, tmp_path / "x", cache=tmp_path / "unused.cache")


def test_calibrate_argument_errors(calibrated, export, tmp_path):
    with pytest.raises(ValueError, match="--engine modelopt is not available: NVIDIA ModelOpt"):
        calibrate(export[0], tmp_path / "x", calib_dir=tmp_path, engine="modelopt")
    with pytest.raises(ValueError, match="already carries Q/DQ nodes"):
        calibrate(calibrated.plugin_path, tmp_path / "x", cache=tmp_path / "unused.cache")
    with pytest.raises(ValueError, match="pass a calibration set"):
        calibrate(export[0], tmp_path / "x")
    table = QuantTable.from_dict(calibrated.record["scales"])
    with pytest.raises(ValueError, match="is not in the graph: the scales are from another export"):
        insert_qdq(onnx.load(str(export[0])), table, ["/no/such/Conv"])


def test_cli_calibrate_and_trt_report_without_gpu(export, calib_set, paired_folder, tmp_path, capsys):
    from edge_derain.cli import main
    from edge_derain.engine import list_devices

    out = tmp_path / "cli.int8"
    assert main(["calibrate", "--onnx", str(export[0]), "--calib", str(calib_set.root), "--out", str(out),
                 "--method", "percentile"]) == 0
    assert "INT8 drop" in capsys.readouterr().out and (tmp_path / "cli.int8.portable.onnx").is_file()
    assert main(["calibrate", "--onnx", str(export[0]), "--calib", str(calib_set.root), "--engine", "modelopt"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "modelopt is not available" in error
    if list_devices():
        pytest.skip("a GPU is present: --backend trt runs instead of failing")
    assert main(["eval", "--precisions", "fp32,int8", "--backend", "trt", "--onnx", str(export[0]),
                 "--int8", str(out) + ".onnx", "--data", str(paired_folder), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "needs an NVIDIA GPU" in error
