"""Engine stage: flavour detection, Python DilationFilter plugin, builder (subprocess), cache + sidecar.

Tests that build engines need tensorrt or TensorRT-RTX and skip otherwise; TensorRT-RTX builds real
engines on this CPU-only machine (about 0.3-0.5 s per build of the small plugin graph, subprocess
included). Loading engines needs a GPU, so compatibility is tested through the sidecar.
"""
from __future__ import annotations

import enum
import importlib.machinery
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.engine import builder as builder_mod  # noqa: E402
from edge_derain.engine import flavour as flavour_mod  # noqa: E402
from edge_derain.engine import python_plugins  # noqa: E402
from edge_derain.engine.builder import (EngineBuildError, EngineLayer, OnnxParseError, ShapeProfile,  # noqa: E402
                                        build_engine, inspect_onnx, layers_from_inspector, parse_layer_log,
                                        parse_targets, plan_precision, resolve_build_target)
from edge_derain.engine.cache import (DeviceFingerprint, EngineCache, EngineKey, EngineMismatchError,  # noqa: E402
                                      check_engine_compatible)
from edge_derain.engine.flavour import (CudaDevice, NoCudaDevice, TensorRTFlavour, TensorRTSetupError,  # noqa: E402
                                        TensorRTUnavailable, detect_tensorrt, list_devices)

PROFILE = ShapeProfile((1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64))


def _trt_flavour():
    try:
        return detect_tensorrt()
    except TensorRTUnavailable as exc:
        return exc


_FLAVOUR = _trt_flavour()
needs_trt = pytest.mark.skipif(isinstance(_FLAVOUR, Exception),
                               reason=f"no TensorRT flavour importable: {_FLAVOUR}")


def make_plugin_onnx(path: Path, fp16: bool = False, seed: int = 0, dilations=(1, 2, 3, 4), kernel_channels=27,
                     op: str = "DilationFilter", fp32_image_into_plugin: bool = False) -> Path:
    """image -> Conv(3->27) -> DilationFilter(image, kernels) -> Conv(12->3), dynamic N/H/W.

    With fp16 the graph casts the FP32 input to FP16 and carries FP16 weights, as the exporter's FP16
    pass does for strongly typed builders.
    """
    rng = np.random.default_rng(seed)
    dtype = np.float16 if fp16 else np.float32
    w1 = numpy_helper.from_array(rng.standard_normal((kernel_channels, 3, 1, 1)).astype(dtype), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 3 * len(dilations), 3, 3)).astype(dtype), "w2")
    x = "x16" if fp16 else "image"
    nodes = [helper.make_node("Cast", ["image"], ["x16"], to=TensorProto.FLOAT16)] if fp16 else []
    nodes += [
        helper.make_node("Conv", [x, "w1"], ["kernels"], name="kpn_out"),
        helper.make_node(op, ["image" if fp32_image_into_plugin else x, "kernels"], ["filtered"], name="dilation_filter", domain="edge_derain",
                         dilations=list(dilations), plugin_version="1", plugin_namespace=""),
        helper.make_node("Conv", ["filtered", "w2"], ["y16" if fp16 else "output"], name="fusion", pads=[1, 1, 1, 1]),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["y16"], ["output"], to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "plugin_graph",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edge_derain", 1)])
    onnx.save(model, str(path))
    return path


def fake_flavour(name="tensorrt", version="10.3.0", flags=True, targets=()):
    """A flavour description without TensorRT, for the pure decision logic."""
    module = None
    if targets:
        module = type("FakeTRT", (), {"ComputeCapability": enum.Enum(
            "ComputeCapability", ["NONE", "CURRENT"] + [t.upper() for t in targets])})
    return TensorRTFlavour(name, version, module, has_precision_flags=flags, supports_targets=bool(targets))


RTX = fake_flavour("tensorrt_rtx", "1.7.1.116", flags=False, targets=("sm75", "sm86", "sm89", "sm120"))
TRT10 = fake_flavour("tensorrt", "10.3.0", flags=True)
ORIN = CudaDevice(0, "Orin", (8, 7), 8 << 30)


def assert_one_line(exc: BaseException):
    assert "\n" not in str(exc) and str(exc)


# ------------------------------------------------------------------------------------------------
# decision logic (no TensorRT needed)


def test_shape_profile_validation_and_parsing():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile((1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 128, 128))
    with pytest.raises(ValueError, match="one rank"):
        ShapeProfile((1, 3, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    assert ShapeProfile.parse("1x3x32x32") == ShapeProfile.static((1, 3, 32, 32))
    profile = ShapeProfile.parse("1x3x16x16:1x3x32x32:2x3x64x64")
    assert profile == PROFILE and ShapeProfile.from_dict(profile.to_dict()) == profile
    with pytest.raises(ValueError, match="min:opt:max"):
        ShapeProfile.parse("1x3x8x8:1x3x9x9")


def test_parse_targets_spellings():
    for spelling in ("sm86", "SM_86", "86", "8.6"):
        assert parse_targets(spelling) == ("sm86",)
    assert parse_targets("sm86, sm89,sm86") == ("sm86", "sm89")
    assert parse_targets(["sm120"]) == ("sm120",)
    assert parse_targets("auto") == ()
    with pytest.raises(ValueError, match="not a compute capability"):
        parse_targets("orin")


def test_resolve_build_target_per_flavour():
    portable = resolve_build_target(RTX, "auto", devices=[])
    assert portable.targets == ("sm86", "sm89", "sm120") and portable.set_compute_capabilities
    assert portable.gpu_name is None
    assert resolve_build_target(RTX, "sm75,sm89", devices=[]).targets == ("sm75", "sm89")
    local = resolve_build_target(RTX, "auto", devices=[CudaDevice(0, "RTX 4090", (8, 9), 24 << 30)])
    assert local.targets == ("sm89",) and local.gpu_name == "RTX 4090"
    with pytest.raises(ValueError, match="cannot target sm87") as err:
        resolve_build_target(RTX, "sm87", devices=[])
    assert_one_line(err.value)
    # full TensorRT builds only for the GPU it runs on
    assert resolve_build_target(TRT10, "auto", devices=[ORIN]).targets == ("sm87",)
    assert resolve_build_target(TRT10, "sm87", devices=[ORIN]).gpu_name == "Orin"
    with pytest.raises(ValueError, match="only for the GPU it runs on"):
        resolve_build_target(TRT10, "sm86", devices=[ORIN])
    with pytest.raises(NoCudaDevice, match="TensorRT-RTX"):
        resolve_build_target(TRT10, "auto", devices=[])


def test_plan_precision_follows_typing_rules(tmp_path):
    fp32 = inspect_onnx(make_plugin_onnx(tmp_path / "fp32.onnx"))
    fp16 = inspect_onnx(make_plugin_onnx(tmp_path / "fp16.onnx", fp16=True))
    assert not fp32.has_fp16 and fp16.has_fp16 and fp32.custom_ops == ("edge_derain::DilationFilter",)
    # tensorrt 10.x: FP32 graph + fp16 -> weakly typed with the FP16 flag; fp32 clears TF32
    assert plan_precision(TRT10, "fp16", fp32) == builder_mod.PrecisionPlan(False, ("FP16",))
    assert plan_precision(TRT10, "fp32", fp32) == builder_mod.PrecisionPlan(False, (), ("TF32",))
    # a graph that carries its FP16 casts is built strongly typed everywhere
    assert plan_precision(TRT10, "fp16", fp16).strongly_typed
    assert plan_precision(RTX, "fp16", fp16).strongly_typed
    assert plan_precision(RTX, "fp32", fp32).strongly_typed
    with pytest.raises(ValueError, match="strongly typed networks only") as err:
        plan_precision(RTX, "fp16", fp32)
    assert_one_line(err.value)
    with pytest.raises(ValueError, match="carries FP16 tensors"):
        plan_precision(TRT10, "fp32", fp16)
    with pytest.raises(ValueError, match="Q/DQ"):
        plan_precision(TRT10, "int8", fp32)
    with pytest.raises(ValueError, match="precision must be one of"):
        plan_precision(RTX, "fp8", fp32)


def make_qdq_onnx(path: Path) -> Path:
    """image -> Q/DQ -> Conv (Q/DQ weights) -> DilationFilter, as the quant stage leaves a plugin graph."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (27, 3, 1, 1)).astype(np.int8), "w_q"),
             numpy_helper.from_array(np.float32(0.01), "w_scale"), numpy_helper.from_array(np.float32(1 / 127), "x_scale")]
    nodes = [helper.make_node("QuantizeLinear", ["image", "x_scale"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"]),
             helper.make_node("Conv", ["x_dq", "w"], ["kernels"], name="kpn_out"),
             helper.make_node("DilationFilter", ["image", "kernels"], ["output"], name="dilation_filter",
                              domain="edge_derain", dilations=[1, 2, 3, 4], plugin_version="1", plugin_namespace="")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 12, "H", "W"])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("edge_derain", 1)]), str(path))
    return path


def test_int8_is_weakly_typed_with_an_fp16_fallback_on_tensorrt_10(tmp_path):
    """NVIDIA's Jetson recipe: a Q/DQ graph built weakly typed with INT8 + FP16 flags on 10.x (automatic)."""
    qdq = inspect_onnx(make_qdq_onnx(tmp_path / "qdq.onnx"))
    fp32 = inspect_onnx(make_plugin_onnx(tmp_path / "fp32.onnx"))
    assert qdq.has_qdq
    weak = builder_mod.PrecisionPlan(False, ("INT8", "FP16"))
    assert plan_precision(TRT10, "int8", qdq) == weak and weak.typing == "weak"
    assert plan_precision(TRT10, "int8", qdq, "weak") == weak
    assert plan_precision(TRT10, "int8", qdq, "strong") == builder_mod.PrecisionPlan(True)
    assert plan_precision(RTX, "int8", qdq) == builder_mod.PrecisionPlan(True)  # RTX / 11.x: no flags at all
    # strongly typed fp16 on 10.x takes the FP16 conversion, as RTX does
    assert builder_mod.needs_fp16_conversion(TRT10, "fp16", fp32, "strong")
    assert not builder_mod.needs_fp16_conversion(TRT10, "fp16", fp32)
    assert plan_precision(TRT10, "fp32", fp32, "strong") == builder_mod.PrecisionPlan(True, (), ("TF32",))
    with pytest.raises(ValueError, match="builds strongly typed networks only .*drop --weak-typing") as err:
        plan_precision(RTX, "int8", qdq, "weak")
    assert_one_line(err.value)
    with pytest.raises(ValueError, match="typing must be one of auto, weak, strong"):
        plan_precision(TRT10, "int8", qdq, "mixed")


def test_engine_key_records_the_typing_it_builds(tmp_path, monkeypatch):
    qdq = make_qdq_onnx(tmp_path / "qdq.onnx")
    monkeypatch.setattr(builder_mod, "list_devices", lambda: [ORIN])  # tensorrt 10.x builds for the local GPU
    cache = EngineCache(tmp_path)
    weak = cache.key_for(qdq, "int8", PROFILE, flavour=TRT10)
    strong = cache.key_for(qdq, "int8", PROFILE, flavour=TRT10, typing="strong")
    assert (weak.typing, strong.typing) == ("weak", "strong") and weak.digest != strong.digest
    assert weak.fingerprint.targets == ("sm87",) and weak.plugin_implementation in ("python", "library")
    assert cache.key_for(qdq, "int8", PROFILE, "sm86", RTX).typing == "strong"
    with pytest.raises(ValueError, match="strongly typed networks only"):
        cache.key_for(qdq, "int8", PROFILE, "sm86", RTX, typing="weak")


def test_a_graph_without_plugin_nodes_keys_no_plugin(tmp_path):
    weight = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["output"])], "plain",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])], [weight])
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    key = EngineCache(tmp_path).key_for(plain, "fp32", PROFILE, "sm86", RTX)
    assert (key.plugin_implementation, key.plugin_hash) == ("none", None)
    plugin = EngineCache(tmp_path).key_for(make_plugin_onnx(tmp_path / "p.onnx"), "fp32", PROFILE, "sm86", RTX)
    assert plugin.plugin_implementation in ("python", "library") and plugin.plugin_hash


def test_inspect_onnx_rejects_unreadable_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe")
    with pytest.raises(OnnxParseError, match="not a readable ONNX model") as err:
        inspect_onnx(bad)
    assert_one_line(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inspect_onnx(tmp_path / "missing.onnx")


def test_resolve_shapes_checks_the_onnx_input(tmp_path):
    summary = inspect_onnx(make_plugin_onnx(tmp_path / "g.onnx"))
    with pytest.raises(ValueError, match="dynamic shape"):
        builder_mod.resolve_shapes(summary, None)
    with pytest.raises(ValueError, match="has no input 'x'"):
        builder_mod.resolve_shapes(summary, ShapeProfile.static((1, 3, 8, 8), "x"))
    with pytest.raises(ValueError, match="fixed to 3"):
        builder_mod.resolve_shapes(summary, ShapeProfile.static((1, 4, 8, 8)))
    assert builder_mod.resolve_shapes(summary, PROFILE) == PROFILE


def test_parse_layer_log_both_formats():
    rtx_message = (
        "Layers:\n"
        "Name: dilation_filter_myl0_4, LayerType: custom_layer, Inputs: [ { Name: image, Dimensions: [-1,3,-1,-1], "
        "Strides: [-1,-1,-1,1], Datatype: Half, Format: (Linear) Row major linear format }, { Name: k, "
        "Dimensions: [-1,27,-1,-1], Datatype: Half, Format: (Linear) Row major linear format }], Constants: [], "
        "Outputs: [ { Name: y, Dimensions: [-1,12,-1,-1], Datatype: Half, Format: (Linear) Row major linear "
        "format }], TacticName: , StreamId: 0, Metadata: [ONNX Layer: dilation_filter]\n"
        "Name: conv_myl0_6, LayerType: correlation, Inputs: [ { Name: y, Datatype: Half }], Constants: [ { Name: "
        "w, Datatype: Float }], Outputs: [ { Name: out, Datatype: Float }], TacticName: x, StreamId: 0, "
        "Metadata: [ONNX Layer: fusion]\x1e[ONNX Layer: cast]\n"
        "\nI/O Tensors:\n Name: image, IOMode: Input, DataType: Float")
    legacy_message = ("Engine Layer Information:\n"
                      "Layer(CaskConvolution): kpn_out, Tactic: 0x00000000000003e8, image (Float[1,3,32,32]) "
                      "-> kernels (Half[1,27,32,32])\n"
                      "Layer(PluginV3): dilation_filter, Tactic: 0x0000000000000000, image (Half[1,3,32,32]), "
                      "kernels (Half[1,27,32,32]) -> filtered (Half[1,12,32,32])")
    layers = parse_layer_log(["unrelated message", rtx_message, legacy_message])
    assert [layer.name for layer in layers] == ["dilation_filter_myl0_4", "conv_myl0_6", "kpn_out", "dilation_filter"]
    plugin, conv, legacy_conv, legacy_plugin = layers
    assert plugin.input_dtypes == ("Half", "Half") and plugin.output_dtypes == ("Half",)
    assert plugin.onnx_nodes == ("dilation_filter",)
    assert conv.input_dtypes == ("Half",) and conv.output_dtypes == ("Float",)  # constants excluded
    assert conv.onnx_nodes == ("fusion", "cast")
    assert legacy_conv.type == "CaskConvolution" and legacy_conv.datatypes == {"Float", "Half"}
    assert legacy_plugin.input_dtypes == ("Half", "Half") and legacy_plugin.onnx_nodes == ("dilation_filter",)
    marked = builder_mod.attach_plugins(layers, {"dilation_filter": "DilationFilter"})
    assert [layer.plugin for layer in marked] == ["DilationFilter", None, None, "DilationFilter"]


def test_layers_from_inspector_json():
    info = {"Layers": [{"Name": "conv + relu", "LayerType": "CaskConvolution",
                        "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
                        "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32 format"}],
                        "Metadata": "[ONNX Layer: conv]\x1e[ONNX Layer: relu]"}, "names-only-entry"]}
    (layer,) = layers_from_inspector(info)
    assert layer == EngineLayer("conv + relu", "CaskConvolution", ("Half",), ("Float",), ("conv", "relu"))
    assert EngineLayer.from_dict(json.loads(json.dumps(layer.to_dict()))) == layer


def test_plugin_field_and_shape_checks():
    field = type("Field", (), {})
    f_dil, f_ver = field(), field()
    f_dil.name, f_dil.data = "dilations", np.array([1, 3], dtype=np.int32)
    f_ver.name, f_ver.data = "plugin_version", b"1"
    assert python_plugins.dilations_from_fields([f_dil, f_ver]) == (1, 3)
    assert python_plugins.dilations_from_fields([]) == (1, 2, 3, 4)
    f_dil.data = np.array([1, 0], dtype=np.int32)
    with pytest.raises(ValueError, match="positive integers"):
        python_plugins.dilations_from_fields([f_dil])
    f_bad = field()
    f_bad.name, f_bad.data = "kernel_size", np.array([3])
    with pytest.raises(ValueError, match="unknown attribute 'kernel_size'"):
        python_plugins.dilations_from_fields([f_bad])
    python_plugins.check_runtime_shapes((2, 3, 8, 9), (2, 27, 8, 9))
    with pytest.raises(ValueError, match="must have 27 channels for a 3-channel image, got 12"):
        python_plugins.check_runtime_shapes((2, 3, 8, 9), (2, 12, 8, 9))
    with pytest.raises(ValueError, match="image's N, H, W"):
        python_plugins.check_runtime_shapes((2, 3, 8, 9), (2, 27, 4, 9))


def _key(flavour="tensorrt_rtx", version="1.2.0", targets=("sm86",), gpu=None):
    return EngineKey(DeviceFingerprint(flavour, version, targets, gpu), "fp16", PROFILE, "ab" * 32, "cd" * 32)


def test_check_engine_compatible_from_sidecar(caplog):
    sidecar = {"schema": 1, "key": _key().to_dict(), "onnx_path": "/models/efderain.onnx"}
    orin = DeviceFingerprint("tensorrt", "10.3.0", ("sm87",), "Orin")
    with pytest.raises(EngineMismatchError) as err:
        check_engine_compatible(sidecar, orin)
    assert str(err.value) == ("engine built for sm86 / tensorrt_rtx 1.2.0 but this device is sm87 / tensorrt 10.3.0; "
                              "rebuild with: edge-derain build --onnx /models/efderain.onnx --precision fp16 "
                              "--target sm87")
    check_engine_compatible(sidecar, DeviceFingerprint("tensorrt_rtx", "1.2.0", ("sm86",), "RTX 3090"))
    with pytest.raises(EngineMismatchError, match="tensorrt_rtx 1.3.0"):  # versions must match exactly
        check_engine_compatible(sidecar, DeviceFingerprint("tensorrt_rtx", "1.3.0", ("sm86",)))
    portable = {"schema": 1, "key": _key(targets=("sm86", "sm89", "sm120")).to_dict()}
    check_engine_compatible(portable, DeviceFingerprint("tensorrt_rtx", "1.2.0", ("sm120",), "RTX 5090"))
    tuned = {"schema": 1, "key": _key("tensorrt", "10.3.0", ("sm87",), "Orin AGX").to_dict()}
    with caplog.at_level(logging.WARNING, logger="edge_derain.engine.cache"):
        check_engine_compatible(tuned, orin)
    assert "tuned on Orin AGX" in caplog.text


def test_engine_key_digest_tracks_every_field():
    base = _key()
    assert EngineKey.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    variants = [_key(targets=("sm89",)), _key(version="1.2.1"),
                EngineKey(base.fingerprint, "fp32", PROFILE, base.onnx_sha256, base.plugin_hash),
                EngineKey(base.fingerprint, "fp16", ShapeProfile.static((1, 3, 32, 32)), base.onnx_sha256,
                          base.plugin_hash),
                EngineKey(base.fingerprint, "fp16", PROFILE, "ef" * 32, base.plugin_hash),
                EngineKey(base.fingerprint, "fp16", PROFILE, base.onnx_sha256, "01" * 32),
                EngineKey(base.fingerprint, "fp16", PROFILE, base.onnx_sha256, base.plugin_hash,
                          plugin_implementation="library"),
                EngineKey(base.fingerprint, "fp16", PROFILE, base.onnx_sha256, base.plugin_hash, typing="weak")]
    assert len({base.digest, *(v.digest for v in variants)}) == 1 + len(variants)


def test_rtx_symlink_check_names_the_fix(tmp_path, monkeypatch):
    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"")
    spec = importlib.machinery.ModuleSpec("tensorrt_rtx_libs", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    fake_util = SimpleNamespace(find_spec=lambda name: spec if name == "tensorrt_rtx_libs" else None)
    monkeypatch.setattr(flavour_mod, "importlib", SimpleNamespace(util=fake_util))
    with pytest.raises(TensorRTSetupError) as err:
        flavour_mod.ensure_plugin_node_support(RTX)
    assert str(err.value).endswith(f"run: ln -sf libtensorrt_rtx.so.1 {tmp_path / 'libtensorrt_rtx.so'}")
    assert_one_line(err.value)
    flavour_mod.ensure_plugin_node_support(TRT10)  # full TensorRT ships its dev links
    os.symlink("libtensorrt_rtx.so.1", tmp_path / "libtensorrt_rtx.so")
    flavour_mod.ensure_plugin_node_support(RTX)


def test_detect_tensorrt_without_any_install(monkeypatch):
    def no_module(name):
        raise ImportError(name)

    flavour_mod._detect.cache_clear()
    monkeypatch.delenv(flavour_mod.FLAVOUR_ENV, raising=False)
    monkeypatch.setattr(flavour_mod, "importlib", SimpleNamespace(import_module=no_module))
    try:
        with pytest.raises(TensorRTUnavailable, match="neither tensorrt nor tensorrt_rtx is importable; "
                                                      "install TensorRT-RTX .*pip install tensorrt_rtx_cu13_libs") as err:
            detect_tensorrt()
        assert_one_line(err.value)
        with pytest.raises(TensorRTUnavailable, match="^tensorrt_rtx is not importable"):
            detect_tensorrt("tensorrt_rtx")
        with pytest.raises(ValueError, match="unknown TensorRT flavour"):
            detect_tensorrt("tensorrt_llm")
    finally:
        flavour_mod._detect.cache_clear()


def test_list_devices_reads_the_driver(monkeypatch):
    class FakeDriver:
        def cuInit(self, flags):
            return 0

        def cuDeviceGetCount(self, count):
            count._obj.value = 1
            return 0

        def cuDeviceGet(self, handle, index):
            handle._obj.value = index
            return 0

        def cuDeviceGetName(self, buf, size, handle):
            buf.value = b"Orin"
            return 0

        def cuDeviceGetAttribute(self, value, attribute, handle):
            value._obj.value = {75: 8, 76: 7}[attribute]
            return 0

        def cuDeviceTotalMem_v2(self, value, handle):
            value._obj.value = 8 << 30
            return 0

    monkeypatch.setattr(flavour_mod, "_load_cuda_driver", FakeDriver)
    (device,) = list_devices()
    assert device == ORIN and device.target == "sm87"
    monkeypatch.setattr(flavour_mod, "_load_cuda_driver", lambda: None)
    assert list_devices() == []


def test_exit_description_names_the_signal():
    assert builder_mod._exit_description(-6) == "was killed by SIGABRT"
    assert builder_mod._exit_description(3) == "exited with status 3"


# ------------------------------------------------------------------------------------------------
# with TensorRT / TensorRT-RTX


@needs_trt
def test_register_python_plugins_is_idempotent():
    trt = _FLAVOUR.module
    creators = python_plugins.register_python_plugins(trt)
    assert python_plugins.register_python_plugins(trt) is creators
    assert set(creators) == {"DilationFilter", "TransposedAttention"}
    creator = creators["DilationFilter"]
    found = trt.get_plugin_registry().get_creator("DilationFilter", "1", "")
    assert found is not None and found.name == "DilationFilter"
    fields = trt.PluginFieldCollection([trt.PluginField("dilations", np.array([2, 4], dtype=np.int32),
                                                        trt.PluginFieldType.INT32)])
    plugin = creator.create_plugin("df", fields, trt.TensorRTPhase.BUILD)
    clone = plugin.clone()
    assert clone is not plugin and clone.dilations == (2, 4) and clone.num_outputs == 1
    (serialized,) = list(clone.get_fields_to_serialize())
    assert serialized.name == "dilations" and list(np.asarray(serialized.data)) == [2, 4]
    assert python_plugins.DilationFilterPlugin is type(plugin)


@needs_trt
def test_plugin_runtime_hands_tensorrt_pointers_to_kernel_lib(monkeypatch, plugin_desc):
    from edge_derain.engine import kernel_lib

    trt = _FLAVOUR.module
    calls = []
    monkeypatch.setattr(kernel_lib, "load_kernel_library", lambda: "loaded-lib")
    monkeypatch.setattr(kernel_lib, "launch_dilation_filter", lambda *args, **kw: calls.append((args, kw)))

    def desc(shape, dtype):
        return plugin_desc(trt, shape, dtype)

    plugin = python_plugins.plugin_classes(trt)["DilationFilter"][0]((1, 2))
    half = trt.DataType.HALF
    image, kernels, out = desc((2, 3, 8, 9), half), desc((2, 27, 8, 9), half), desc((2, 6, 8, 9), half)
    plugin.on_shape_change([image, kernels], [out])
    with pytest.raises(ValueError, match="image's N, H, W"):
        plugin.on_shape_change([image, desc((2, 27, 9, 8), half)], [out])
    plugin.enqueue([image, kernels], [out], [0x1000, 0x2000], [0x3000], 0, 0x77)
    assert calls == [((0x1000, 0x2000, 0x3000, 1, 2, 3, 8, 9, (1, 2), 0x77), {"lib": "loaded-lib"})]
    fp32 = [desc((1, 3, 4, 5), trt.DataType.FLOAT), desc((1, 27, 4, 5), trt.DataType.FLOAT)]
    plugin.enqueue(fp32, [desc((1, 6, 4, 5), trt.DataType.FLOAT)], [1, 2], [3], 0, 0)
    assert calls[1][0][3:8] == (0, 1, 3, 4, 5)


def _requires_targets():
    if isinstance(_FLAVOUR, Exception) or not _FLAVOUR.supports_targets:
        pytest.skip("ahead-of-time builds for chosen GPUs need TensorRT-RTX")


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("target", ["sm86", "sm89"])
def test_build_plugin_graph_for_target(tmp_path, precision, target):
    _requires_targets()
    onnx_path = make_plugin_onnx(tmp_path / "g.onnx", fp16=precision == "fp16")
    log_path = tmp_path / "build.log"
    result = build_engine(onnx_path, tmp_path / "g.engine", precision, PROFILE, target, verbose_log_path=log_path)
    engine = result.engine_path.read_bytes()
    assert len(engine) == result.engine_bytes > 0 and result.targets == (target,)
    assert f"accelerators={{{target} }}".encode() in engine  # the compute capability really was applied
    assert result.plugins == [{"layer": "dilation_filter", "onnx_nodes": ["dilation_filter"],
                               "plugin": "DilationFilter", "version": "1", "namespace": "",
                               "implementation": "python"}]
    (plugin_layer,) = result.plugin_layers
    expected = "Half" if precision == "fp16" else "Float"
    assert plugin_layer.input_dtypes == (expected, expected) and plugin_layer.output_dtypes == (expected,)
    assert "dilation_filter" in plugin_layer.onnx_nodes
    compute = {d for layer in result.layers if not layer.plugin for d in layer.datatypes}
    assert expected in compute
    if precision == "fp32":
        assert compute == {"Float"}
    assert log_path.stat().st_size > 0 and result.layer_source == "build log"


@needs_trt
def test_engine_cache_hit_miss_and_sidecar(tmp_path):
    _requires_targets()
    cache = EngineCache(tmp_path / "cache")
    onnx_path = make_plugin_onnx(tmp_path / "model.onnx")
    first = cache.get_or_build(onnx_path, "fp32", PROFILE, "sm86")
    assert first.built and first.engine_path.is_file()
    mtime = first.engine_path.stat().st_mtime_ns
    second = cache.get_or_build(onnx_path, "fp32", PROFILE, "sm86")
    assert not second.built and second.engine_path == first.engine_path
    assert first.engine_path.stat().st_mtime_ns == mtime

    sidecar = json.loads(Path(f"{first.engine_path}.json").read_text())
    assert sidecar["key"] == first.key.to_dict()
    assert sidecar["key"]["fingerprint"] == {"flavour": _FLAVOUR.name, "version": _FLAVOUR.version,
                                             "targets": ["sm86"], "gpu_name": None}
    assert sidecar["key"]["shapes"] == PROFILE.to_dict() and sidecar["key"]["precision"] == "fp32"
    assert sidecar["layer_summary"]["plugin_layers"][0]["plugin"] == "DilationFilter"
    assert sidecar["layer_summary"]["datatypes"] == ["Float"] and sidecar["build_seconds"] > 0
    check_engine_compatible(first.engine_path, DeviceFingerprint(_FLAVOUR.name, _FLAVOUR.version, ("sm86",)))
    with pytest.raises(EngineMismatchError, match="--target sm87$"):
        check_engine_compatible(first.engine_path, DeviceFingerprint("tensorrt", "10.3.0", ("sm87",)))

    make_plugin_onnx(onnx_path, seed=1)  # new weights: new ONNX hash, so a new engine
    changed = cache.get_or_build(onnx_path, "fp32", PROFILE, "sm86")
    assert changed.built and changed.engine_path != first.engine_path
    assert changed.key.onnx_sha256 != first.key.onnx_sha256
    entries = cache.entries()
    assert {e.engine_path for e in entries} == {first.engine_path, changed.engine_path}
    assert all(e.problem is None for e in entries)
    first.engine_path.unlink()
    assert {e.problem for e in cache.entries()} == {None, f"engine file {first.engine_path.name} is missing"}


@needs_trt
def test_parser_errors_are_one_line(tmp_path):
    unknown = make_plugin_onnx(tmp_path / "unknown.onnx", op="NoSuchPlugin")
    with pytest.raises(OnnxParseError, match="could not parse unknown.onnx: .*NoSuchPlugin") as err:
        build_engine(unknown, tmp_path / "a.engine", "fp32", PROFILE, "sm86" if _FLAVOUR.supports_targets else "auto")
    assert_one_line(err.value)
    assert Path(f"{tmp_path / 'a.engine'}.build.log").is_file()  # the failed build keeps its log
    bad_dilation = make_plugin_onnx(tmp_path / "dil.onnx", dilations=(1, 0))
    with pytest.raises(OnnxParseError, match="dilations must be positive integers") as err:
        build_engine(bad_dilation, tmp_path / "b.engine", "fp32", PROFILE)
    assert_one_line(err.value)
    wrong_kernels = make_plugin_onnx(tmp_path / "k12.onnx", kernel_channels=12)
    with pytest.raises(OnnxParseError, match="must have 27 channels for a 3-channel image, got 12") as err:
        build_engine(wrong_kernels, tmp_path / "c.engine", "fp32", PROFILE)
    assert_one_line(err.value)
    mixed = make_plugin_onnx(tmp_path / "mixed.onnx", fp16=True, fp32_image_into_plugin=True)
    with pytest.raises(OnnxParseError, match="must share one dtype, got FLOAT and HALF") as err:
        build_engine(mixed, tmp_path / "e.engine", "fp16", PROFILE)
    assert_one_line(err.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00garbage")
    with pytest.raises(OnnxParseError):
        build_engine(garbage, tmp_path / "d.engine", "fp32", PROFILE)
    assert not any(tmp_path.glob("*.engine"))


@needs_trt
def test_fp16_of_fp32_graph_is_converted_on_strongly_typed_flavours(tmp_path):
    if _FLAVOUR.has_precision_flags:
        pytest.skip(f"{_FLAVOUR.label} still has BuilderFlag.FP16")
    result = build_engine(make_plugin_onnx(tmp_path / "g.onnx"), tmp_path / "g.engine", "fp16", PROFILE)
    assert result.strongly_typed and result.fp32_nodes == {}  # nothing FP16-fragile in this graph
    (plugin_layer,) = result.plugin_layers
    assert plugin_layer.input_dtypes == ("Half", "Half")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.engine", "g.onnx"]  # the FP16 copy is gone


@needs_trt
def test_build_timeout_is_a_one_line_error(tmp_path):
    with pytest.raises(EngineBuildError, match="timed out after 0.01 s") as err:
        build_engine(make_plugin_onnx(tmp_path / "g.onnx"), tmp_path / "g.engine", "fp32", PROFILE, timeout=0.01)
    assert_one_line(err.value)
    assert not (tmp_path / "g.engine").exists()
