"""Subprocess entry of :func:`edge_derain.engine.builder.build_engine`: ``python -m
edge_derain.engine._build_worker REQUEST.json``.

Runs TensorRT in its own process because a crash in TensorRT or in a Python plugin callback would
otherwise take the caller down. Everything TensorRT logs (VERBOSE) goes to stdout, which the parent
points at the build log; the outcome (layers, timings, or a one-line error) goes to the request's
``result`` JSON file.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from ..utils import atomic_write_bytes, atomic_write_json
from .errors import EngineBuildError, OnnxParseError
from .flavour import detect_tensorrt, list_devices
from .layers import attach_plugins, layers_from_inspector, onnx_nodes_of, parse_layer_log
from .plugin_library import load_plugin_library
from .python_plugins import plugin_classes, plugin_errors, register_python_plugins

_LAYER_HEADERS = ("Layers:", "Engine Layer Information:")


def _make_logger(trt):
    class BuildLogger(trt.ILogger):
        """Writes every message to stdout and keeps errors and the layer report for the result."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.layer_reports: list[str] = []

        def log(self, severity, msg):
            sys.stdout.write(f"[{severity.name}] {msg}\n")
            sys.stdout.flush()
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(" ".join(msg.split()))
            elif msg.lstrip().startswith(_LAYER_HEADERS):
                self.layer_reports.append(msg.strip())

    return BuildLogger()


def _plugin_layers(trt, network) -> list[dict]:
    """Plugin layers of the parsed network: layer name, ONNX nodes, plugin name and version, and whether
    the plugin object is our Python plugin or comes from a (C++) plugin library."""
    python_plugins = tuple(plugin for plugin, _ in plugin_classes(trt).values())
    out = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type != trt.LayerType.PLUGIN_V3:
            continue
        layer.__class__ = trt.IPluginV3Layer  # the bindings return the ILayer base
        core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        out.append({"layer": layer.name, "onnx_nodes": list(onnx_nodes_of(layer.metadata)) or [layer.name],
                    "plugin": core.plugin_name, "version": core.plugin_version,
                    "namespace": core.plugin_namespace,
                    "implementation": "python" if isinstance(layer.plugin, python_plugins) else "library"})
    return out


def _inspect(trt, logger, serialized):
    """Layers via the engine inspector; needs a GPU to deserialise, so None when that fails."""
    try:
        runtime = trt.Runtime(logger)  # must outlive the engine
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            return None
        info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        return layers_from_inspector(json.loads(info))
    except Exception:  # any failure here only loses the richer report, not the engine
        print("engine inspector unavailable, using the build log:\n" + traceback.format_exc(), flush=True)
        return None


def _builder_config(flavour, builder, network, request: dict):
    """The builder config the request asks for: the input's profile, precision flags, targets, workspace."""
    trt = flavour.module
    config = builder.create_builder_config()
    profile_spec = request["profile"]
    input_names = [network.get_input(i).name for i in range(network.num_inputs)]
    if profile_spec["input"] not in input_names:
        raise ValueError(f"network has no input {profile_spec['input']!r} (inputs: {', '.join(input_names)})")
    profile = builder.create_optimization_profile()
    profile.set_shape(profile_spec["input"], profile_spec["min"], profile_spec["opt"], profile_spec["max"])
    config.add_optimization_profile(profile)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for name in request["set_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in request["clear_flags"]:
        if name in trt.BuilderFlag.__members__:
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if request["compute_capabilities"]:
        config.num_compute_capabilities = len(request["compute_capabilities"])
        for index, target in enumerate(request["compute_capabilities"]):
            if not config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), index):
                raise EngineBuildError(f"{flavour.label} rejected compute capability {target}")
    if request["workspace"] is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request["workspace"])
    return config


def build(request: dict) -> dict:
    flavour = detect_tensorrt(request["flavour"])
    trt = flavour.module
    logger = _make_logger(trt)
    if request.get("plugin_library"):
        # The library's creators must be the only ones: the Python plugin stays unregistered.
        load_plugin_library(trt, request["plugin_library"])
    else:
        register_python_plugins(trt)
    onnx_name = Path(request["onnx"]).name

    builder = trt.Builder(logger)
    # Flavours without precision flags (tensorrt 11.x, TensorRT-RTX) are always strongly typed; 11.x
    # deprecates the creation flag, so it is passed only where typing is a choice (tensorrt 10.x).
    strongly_typed_flag = request["strongly_typed"] and flavour.has_precision_flags
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed_flag else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(request["onnx"]):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        messages = [f"node {e.node()} ({e.node_operator()}): {' '.join(e.desc().split())}" for e in errors]
        detail = "; ".join(dict.fromkeys(plugin_errors + messages)) or "no parser message"
        raise OnnxParseError(f"{flavour.label} could not parse {onnx_name}: {detail}")
    plugins = _plugin_layers(trt, network)

    config = _builder_config(flavour, builder, network, request)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
    if serialized is None:
        raise EngineBuildError(f"{flavour.label} failed to build {onnx_name}: "
                               + ("; ".join(logger.errors) or "no error message was logged"))
    atomic_write_bytes(request["out"], memoryview(serialized))

    layers = _inspect(trt, logger, serialized) if flavour.name == "tensorrt" or list_devices() else None
    layer_source = "inspector" if layers else "build log"
    if not layers:
        layers = parse_layer_log(logger.layer_reports)
    plugin_nodes = {node: p["plugin"] for p in plugins for node in p["onnx_nodes"] + [p["layer"]]}
    layers = attach_plugins(layers, plugin_nodes)
    return {"build_seconds": build_seconds, "engine_bytes": serialized.nbytes,
            "layers": [layer.to_dict() for layer in layers], "plugins": plugins, "layer_source": layer_source}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    try:
        result = build(request)
        status = 0
    except Exception as exc:  # reported to the parent as one line; the traceback goes to the log
        traceback.print_exc(file=sys.stdout)
        message = " ".join(str(exc).split()) or type(exc).__name__
        result = {"error": {"type": type(exc).__name__, "message": message}}
        status = 1
    atomic_write_json(request["result"], result)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
