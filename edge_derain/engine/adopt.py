"""Adopt an engine built elsewhere (trtexec, DeepStream, a script): the sidecar that lets the tool run it.

Engines built by ``edge-derain build`` carry a JSON sidecar (device fingerprint, precision, profile,
ONNX and plugin hashes) that :class:`~edge_derain.backends.trt_backend.TensorRTBackend` checks before it
loads anything. An engine from ``trtexec --int8 --fp16`` (the weakly typed Jetson recipe) or DeepStream
has none; :func:`adopt_engine` writes one, but only after the engine deserialises with this machine's
TensorRT on its GPU, and from what the engine itself reports: its input, optimisation profile and
layers (the engine inspector), the precision its layers run in, and the plugin implementation that
deserialised it.

Two halves, so that what needs no GPU is testable anywhere: :func:`describe_engine` deserialises (GPU)
and returns :class:`EngineFacts`; :func:`adopted_sidecar` turns them into the sidecar (pure).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..utils import atomic_write_json
from .layers import EngineLayer, attach_plugins, layers_from_inspector
from .onnx_info import OnnxSummary, inspect_onnx, onnx_sha256
from .plugin_library import load_plugin_library
from .profile import ShapeProfile
from .cache import DeviceFingerprint, EngineKey, PluginUse, engine_sidecar, sidecar_path
from .flavour import NoCudaDevice, TensorRTFlavour, detect_tensorrt, list_devices
from .python_plugins import register_python_plugins

#: Engine layer data types -> the precision the engine runs in (lowest wins).
_PRECISION_OF_DTYPE = (("Int8", "int8"), ("Half", "fp16"), ("Float", "fp32"))


class EngineAdoptError(RuntimeError):
    """The engine cannot be adopted on this machine (it does not deserialise, or does not fit its ONNX)."""


@dataclass(frozen=True)
class EngineFacts:
    """What a deserialised engine says about itself."""

    input_name: str
    profile: ShapeProfile  # optimisation profile 0 of the input
    outputs: tuple[str, ...]
    layers: list[EngineLayer]  # from the engine inspector; [] when it was built without detailed profiling


def engine_precision(layers: list[EngineLayer]) -> str | None:
    """int8 if any layer runs in INT8, else fp16 if any in FP16, else fp32; None without data types."""
    datatypes = set().union(*(layer.datatypes for layer in layers)) if layers else set()
    return next((precision for dtype, precision in _PRECISION_OF_DTYPE if dtype in datatypes), None)


def adopted_sidecar(engine_path: str | os.PathLike, onnx_path: str | os.PathLike, summary: OnnxSummary,
                    facts: EngineFacts, fingerprint: DeviceFingerprint, plugin_use: PluginUse,
                    precision: str | None = None) -> dict:
    """The sidecar of an adopted engine; one-line ValueError when the engine does not match its ONNX.

    ``precision`` defaults to what the layers run in; it must be given for an engine built without
    detailed profiling (its inspector reports layer names only).
    """
    if facts.input_name not in summary.inputs:
        raise ValueError(f"the engine's input {facts.input_name!r} is not an input of {summary.path.name} "
                         f"({', '.join(summary.inputs)}); pass the ONNX file the engine was built from")
    measured = engine_precision(facts.layers)
    if precision is None:
        if measured is None:
            raise ValueError("the engine reports no layer data types (it was built without detailed profiling, "
                             "e.g. trtexec --profilingVerbosity=detailed); pass --precision fp32|fp16|int8")
        precision = measured
    elif measured is not None and measured != precision:
        raise ValueError(f"--precision {precision} but the engine's layers run in {measured}; pass --precision "
                         f"{measured} or leave it out")
    plugins = [{"layer": layer.name, "onnx_nodes": list(layer.onnx_nodes), "plugin": layer.plugin,
                "implementation": plugin_use.implementation} for layer in facts.layers if layer.plugin]
    key = EngineKey(fingerprint, precision, facts.profile, onnx_sha256(onnx_path), plugin_use.sha256, None,
                    plugin_use.implementation, typing=None)
    adopted = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "outputs": list(facts.outputs)}
    return engine_sidecar(key, onnx_path, Path(engine_path), plugin_use, plugins, facts.layers, "inspector",
                          summary.metadata, adopted=adopted, strongly_typed=None, builder_flags=None,
                          fp32_nodes=None)


def _plugin_nodes(onnx_path: Path) -> dict[str, str]:
    """ONNX node name -> op type of the graph's custom (plugin) nodes."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {node.name: node.op_type for node in graph.node if node.domain not in ("", "ai.onnx")}


def describe_engine(flavour: TensorRTFlavour, engine_path: Path, onnx_path: Path, plugin_use: PluginUse) -> EngineFacts:
    """Deserialise ``engine_path`` with ``flavour`` on the current GPU and read its facts (needs the GPU)."""
    trt = flavour.module

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(" ".join(str(msg).split()))

    if plugin_use.library is not None:
        load_plugin_library(trt, plugin_use.library)
    elif plugin_use.implementation == "python":
        register_python_plugins(trt)
    logger = _Logger()
    runtime = trt.Runtime(logger)  # must outlive the engine
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise EngineAdoptError(f"{flavour.label} could not deserialise {engine_path.name} on this GPU: "
                               + ("; ".join(logger.errors[-3:]) or "no error was logged")
                               + "; it was built for another GPU or TensorRT version, or needs a plugin library "
                                 "(--plugin-lib)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    if len(inputs) != 1 or not outputs:
        raise EngineAdoptError(f"{engine_path.name} has inputs {inputs} and outputs {list(outputs)}; the tool runs "
                               "engines with one image input, as 'edge-derain export' writes them")
    shapes = [tuple(int(d) for d in shape) for shape in engine.get_tensor_profile_shape(inputs[0], 0)]
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    layers = attach_plugins(layers_from_inspector(json.loads(info)), _plugin_nodes(onnx_path))
    return EngineFacts(inputs[0], ShapeProfile(*shapes, input_name=inputs[0]), outputs, layers)


def adopt_engine(engine_path: str | os.PathLike, onnx_path: str | os.PathLike, precision: str | None = None,
                 plugin_library: str | os.PathLike | None = None, flavour: TensorRTFlavour | None = None) -> dict:
    """Check that ``engine_path`` deserialises on this machine's GPU 0 and write its sidecar; returns it.

    ``onnx_path`` is the graph the engine was built from (its hash, input and ``input_multiple`` go into
    the sidecar); ``plugin_library`` the libedge_derain_plugins.so it was built with, when it has plugin
    layers (default: ``$EDGE_DERAIN_PLUGIN_LIB`` or the checkout's CMake build, else the Python plugin).
    """
    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"engine {engine_path} not found")
    summary = inspect_onnx(onnx_path)
    if not list_devices():  # checked before TensorRT is imported: the usual case on a build server
        raise NoCudaDevice(f"adopting {engine_path.name} means deserialising it on the GPU it will run on, and this "
                           "machine has no CUDA GPU; run edge-derain adopt on that device")
    flavour = flavour or detect_tensorrt()
    fingerprint = DeviceFingerprint.current(flavour)
    plugin_use = PluginUse.for_graph(summary, plugin_library)
    facts = describe_engine(flavour, engine_path, onnx_path, plugin_use)
    sidecar = adopted_sidecar(engine_path, onnx_path, summary, facts, fingerprint, plugin_use, precision)
    atomic_write_json(sidecar_path(engine_path), sidecar)
    return sidecar
