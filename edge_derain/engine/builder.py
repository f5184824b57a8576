"""ONNX -> serialized TensorRT engine, built in a subprocess.

:func:`build_engine` checks everything it can in this process (the ONNX file, the precision the graph
carries, the shape profile, the targets), then runs TensorRT in ``python -m
edge_derain.engine._build_worker`` so that a crash inside TensorRT or a plugin callback becomes a
one-line :class:`EngineBuildError` with the tail of the build log instead of killing the caller.

Precision follows the flavour's typing rules:

* strongly typed networks (TensorRT-RTX, tensorrt 11.x, and any graph that already carries FP16 casts
  or Q/DQ nodes): the engine runs in exactly the dtypes of the ONNX, so ``precision="fp16"`` needs an
  FP16 ONNX and ``"int8"`` needs Q/DQ nodes. Given an FP32 ONNX, :func:`build_engine` converts it with
  ``edge_derain.export.fp16.convert_to_fp16`` (FP16-fragile nodes stay FP32) and builds that;
* tensorrt 10.x with an FP32 graph and ``precision="fp16"``: weakly typed network + ``BuilderFlag.FP16``;
* tensorrt 10.x with a Q/DQ graph and ``precision="int8"``: weakly typed network + ``BuilderFlag.INT8`` and
  ``FP16``, as NVIDIA recommends for Jetson: the Q/DQ nodes still fix where INT8 runs (explicit
  quantization) and the layers left unquantized, the plugin included, may run in FP16.
  ``typing="strong"`` builds the Q/DQ graph strongly typed instead (INT8 at the Q/DQ, FP32 elsewhere).

``typing`` (``"auto"``, ``"weak"``, ``"strong"``) overrides the automatic choice where the flavour has one:
only tensorrt 10.x builds weakly typed networks, so ``"weak"`` elsewhere is a one-line ValueError.

``fp32`` engines clear ``BuilderFlag.TF32`` so that FP32 means FP32 (TF32 convolutions carry a 10-bit
mantissa, which would blur comparisons with the PyTorch reference).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .flavour import (CudaDevice, NoCudaDevice, TensorRTFlavour, TensorRTSetupError, TensorRTUnavailable,
                      detect_tensorrt, ensure_plugin_node_support, list_devices)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
TYPINGS = ("auto", "weak", "strong")
#: Compute capabilities TensorRT-RTX engines run on by default (its documented portable set).
RTX_PORTABLE_TARGETS = ("sm86", "sm89", "sm120")
_LOG_TAIL_LINES = 3


class EngineBuildError(RuntimeError):
    """TensorRT failed to build an engine (or crashed while doing so)."""


class OnnxParseError(EngineBuildError):
    """The ONNX file could not be read or TensorRT's parser rejected it."""


# --------------------------------------------------------------------------------------------------
# shape profile


def _dims(value: Sequence[int], what: str) -> tuple[int, ...]:
    dims = tuple(int(v) for v in value)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{what} shape must be positive integers, got {tuple(value)}")
    return dims


@dataclass(frozen=True)
class ShapeProfile:
    """Optimisation profile (min, opt, max) for one network input, ``image`` by default."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    input_name: str = "image"

    def __post_init__(self):
        for attr in ("min", "opt", "max"):
            object.__setattr__(self, attr, _dims(getattr(self, attr), f"profile {attr}"))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"profile shapes must have one rank, got {self.min}, {self.opt}, {self.max}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile needs min <= opt <= max in every dimension, got {self.min}, "
                             f"{self.opt}, {self.max}")

    @classmethod
    def static(cls, shape: Sequence[int], input_name: str = "image") -> "ShapeProfile":
        return cls(tuple(shape), tuple(shape), tuple(shape), input_name)

    @classmethod
    def parse(cls, text: str, input_name: str = "image") -> "ShapeProfile":
        """``"1x3x512x512"`` (static) or ``"1x3x256x256:1x3x512x512:2x3x1024x1024"`` (min:opt:max)."""
        parts = text.split(":")
        if len(parts) not in (1, 3):
            raise ValueError(f"shape profile {text!r} must be one shape NxCxHxW or three as min:opt:max")
        try:
            shapes = [tuple(int(v) for v in part.lower().split("x")) for part in parts]
        except ValueError:
            raise ValueError(f"shape profile {text!r} must contain integers like 1x3x512x512") from None
        return cls.static(shapes[0], input_name) if len(shapes) == 1 else cls(*shapes, input_name=input_name)

    @property
    def label(self) -> str:
        return ":".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))

    def to_dict(self) -> dict:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]), d["input"])


# --------------------------------------------------------------------------------------------------
# what the ONNX carries


@dataclass(frozen=True)
class OnnxSummary:
    path: Path
    inputs: dict[str, tuple]  # name -> dims (int or symbolic str)
    has_fp16: bool
    has_qdq: bool
    custom_ops: tuple[str, ...]  # "domain::op" of nodes outside the standard ONNX domains
    metadata: dict = field(default_factory=dict)  # metadata_props, e.g. input_multiple from the exporter


def inspect_onnx(path: str | os.PathLike) -> OnnxSummary:
    """Read an ONNX file's inputs and the precision it carries; one-line OnnxParseError when unreadable."""
    import onnx

    from ..export.graph import load_onnx, read_metadata

    path = Path(path)
    model = load_onnx(path, OnnxParseError)
    fp16 = onnx.TensorProto.FLOAT16
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in initializer_names:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in value.type.tensor_type.shape.dim)
        inputs[value.name] = dims
    typed_values = list(graph.input) + list(graph.output) + list(graph.value_info)
    has_fp16 = (any(t.data_type == fp16 for t in graph.initializer)
                or any(v.type.tensor_type.elem_type == fp16 for v in typed_values)
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                       for n in graph.node))
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")})
    metadata = read_metadata(model)
    return OnnxSummary(path, inputs, has_fp16, has_qdq, tuple(custom), metadata)


def onnx_sha256(path: str | os.PathLike) -> str:
    """SHA-256 over the ONNX file and, in name order, any external-data files it references."""
    import onnx

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({entry.value for tensor in model.graph.initializer for entry in tensor.external_data
                        if entry.key == "location"})
    for location in locations:
        digest.update(location.encode())
        digest.update((path.parent / location).read_bytes())
    return digest.hexdigest()


def positive_int_prop(onnx_metadata: dict, key: str) -> int | None:
    """An exporter metadata prop (``input_multiple``, ``receptive_radius``) as a positive int, None when
    absent or malformed."""
    try:
        value = int(onnx_metadata[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def input_multiple_of(onnx_metadata: dict) -> int | None:
    """The exporter's ``input_multiple`` metadata prop as an int, None when absent or malformed."""
    return positive_int_prop(onnx_metadata, "input_multiple")


def check_profile_multiple(shapes: ShapeProfile, multiple: int | None, name: str) -> None:
    """One-line ValueError unless every profile H and W is a multiple of the model's input multiple: the
    network down-samples that often, and TensorRT aborts the build (not an error it returns) otherwise."""
    if not multiple or len(shapes.min) != 4:
        return
    bad = [(label, shape) for label, shape in (("min", shapes.min), ("opt", shapes.opt), ("max", shapes.max))
           if shape[2] % multiple or shape[3] % multiple]
    if bad:
        label, shape = bad[0]
        fixed = ":".join("x".join(map(str, (*s[:2], *(-(-d // multiple) * multiple for d in s[2:]))))
                         for s in (shapes.min, shapes.opt, shapes.max))
        raise ValueError(f"profile {label} {'x'.join(map(str, shape))} of {name}: H and W must be multiples of "
                         f"{multiple} (the model's input multiple); use --shapes {fixed}")


def resolve_shapes(summary: OnnxSummary, shapes: ShapeProfile | None) -> ShapeProfile:
    """Check ``shapes`` against the ONNX input; without one, use the input's static shape."""
    name = shapes.input_name if shapes else "image"
    if name not in summary.inputs:
        raise ValueError(f"{summary.path.name} has no input {name!r} (inputs: {', '.join(summary.inputs)}); "
                         f"pass ShapeProfile(..., input_name=<one of them>)")
    dims = summary.inputs[name]
    if shapes is None:
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise ValueError(f"input {name!r} of {summary.path.name} has dynamic shape {dims}; pass "
                             "shapes=ShapeProfile(min, opt, max)")
        return ShapeProfile.static(dims, name)
    if len(dims) != len(shapes.min):
        raise ValueError(f"profile for {name!r} has rank {len(shapes.min)} but the ONNX input is {dims}")
    for axis, d in enumerate(dims):
        if isinstance(d, int) and d > 0 and not shapes.min[axis] == shapes.max[axis] == d:
            raise ValueError(f"profile {shapes.label} conflicts with the ONNX input {name!r} {dims} "
                             f"at axis {axis} (fixed to {d})")
    check_profile_multiple(shapes, input_multiple_of(summary.metadata), summary.path.name)
    return shapes


# --------------------------------------------------------------------------------------------------
# precision and targets


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool
    set_flags: tuple[str, ...] = ()  # BuilderFlag member names
    clear_flags: tuple[str, ...] = ()

    @property
    def typing(self) -> str:
        return "strong" if self.strongly_typed else "weak"


def check_typing(flavour: TensorRTFlavour, typing: str) -> None:
    if typing not in TYPINGS:
        raise ValueError(f"typing must be one of {', '.join(TYPINGS)}, got {typing!r}")
    if typing == "weak" and not flavour.has_precision_flags:
        raise ValueError(f"{flavour.label} builds strongly typed networks only (it has no precision builder "
                         "flags); drop --weak-typing, or build weakly typed engines with tensorrt 10.x (JetPack 6)")


def plan_precision(flavour: TensorRTFlavour, precision: str, summary: OnnxSummary,
                   typing: str = "auto") -> PrecisionPlan:
    """How to make ``flavour`` produce a ``precision`` engine from this graph, or a one-line ValueError.

    ``typing="auto"`` builds weakly typed where that is tensorrt 10.x's better engine (an FP32 graph,
    INT8 with an FP16 fallback); ``"weak"``/``"strong"`` force one (see the module docstring).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    check_typing(flavour, typing)
    weak = flavour.has_precision_flags and typing != "strong"
    name = summary.path.name
    if precision == "int8":
        if not summary.has_qdq:
            raise ValueError(f"precision int8 needs explicit Q/DQ nodes but {name} has none; insert them with "
                             "the quant stage (implicit INT8 calibration is not used)")
        return PrecisionPlan(strongly_typed=False, set_flags=("INT8", "FP16")) if weak else PrecisionPlan(True)
    if summary.has_qdq:
        raise ValueError(f"{name} carries Q/DQ (INT8) nodes; build it with precision='int8'")
    if precision == "fp32":
        if summary.has_fp16:
            raise ValueError(f"{name} carries FP16 tensors, so it cannot give an fp32 engine; build it with "
                             "precision='fp16' or use the FP32 ONNX")
        return PrecisionPlan(strongly_typed=not weak, clear_flags=("TF32",))
    if summary.has_fp16:  # the graph's casts already say where FP16 runs
        return PrecisionPlan(strongly_typed=False, set_flags=("FP16",)) if typing == "weak" else PrecisionPlan(True)
    if weak:
        return PrecisionPlan(strongly_typed=False, set_flags=("FP16",))
    raise ValueError(f"{flavour.label} builds strongly typed networks only, so FP16 must already be in the "
                     f"ONNX as casts, but {name} is FP32; export an FP16 ONNX first")


def needs_fp16_conversion(flavour: TensorRTFlavour, precision: str, summary: OnnxSummary,
                          typing: str = "auto") -> bool:
    """True when an fp16 engine of this FP32 graph needs the graph converted first (strongly typed builds)."""
    return (precision == "fp16" and not summary.has_fp16 and not summary.has_qdq
            and (not flavour.has_precision_flags or typing == "strong"))


def convert_onnx_to_fp16(onnx_path: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, str]:
    """Write the strongly typed FP16 version of an FP32 ONNX file; return its FP32 nodes (name -> reason)."""
    import onnx

    from ..export.fp16 import convert_to_fp16, fp32_nodes_of

    converted = convert_to_fp16(onnx.load(str(onnx_path)))
    onnx.save(converted, str(out_path))
    return fp32_nodes_of(converted)


def parse_targets(target: str | Iterable[str]) -> tuple[str, ...]:
    """``"auto"`` -> (); ``"sm86"``, ``"SM_86"``, ``"86"``, ``"8.6"`` -> ("sm86",); commas list several."""
    items = target.split(",") if isinstance(target, str) else list(target)
    items = [str(t).strip().lower() for t in items if str(t).strip()]
    if items == ["auto"]:
        return ()
    out = []
    for item in items:
        match = re.fullmatch(r"(?:sm_?)?(\d+)(?:\.(\d+))?", item)
        if not match:
            raise ValueError(f"target {item!r} is not a compute capability; use e.g. sm86, sm87, 8.9 or auto")
        out.append(f"sm{match[1]}{match[2] or ''}")
    if not out:
        raise ValueError("no target given; use auto or a compute capability such as sm86")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class BuildTarget:
    targets: tuple[str, ...]  # compute capabilities the engine runs on, e.g. ("sm86",)
    set_compute_capabilities: bool  # True: pass them to IBuilderConfig (TensorRT-RTX)
    gpu_name: str | None  # the local GPU the engine is tuned for, None for ahead-of-time builds


def resolve_build_target(flavour: TensorRTFlavour, target: str | Iterable[str] = "auto",
                         devices: list[CudaDevice] | None = None) -> BuildTarget:
    """Which compute capabilities to build for.

    ``auto`` means the local GPU when there is one; without a GPU, TensorRT-RTX builds its portable
    default set (sm86, sm89, sm120). Full tensorrt can only build for the GPU it runs on.
    """
    requested = parse_targets(target)
    devices = list_devices() if devices is None else devices
    local = devices[0] if devices else None
    if flavour.supports_targets:
        gpu_name = None
        if not requested:
            requested = (local.target,) if local else RTX_PORTABLE_TARGETS
            gpu_name = local.name if local else None
        supported = flavour.supported_targets()
        unsupported = [t for t in requested if t not in supported]
        if unsupported:
            raise ValueError(f"{flavour.label} cannot target {', '.join(unsupported)} (it supports "
                             f"{', '.join(supported)}); build on that device with its own TensorRT")
        return BuildTarget(requested, True, gpu_name)
    if local is None:
        raise NoCudaDevice(f"{flavour.label} needs a GPU to build engines and none was found; for "
                           "ahead-of-time builds on a CPU machine use TensorRT-RTX "
                           "(EDGE_DERAIN_TENSORRT=tensorrt_rtx)")
    if requested and requested != (local.target,):
        raise ValueError(f"{flavour.label} builds only for the GPU it runs on ({local.target}, {local.name}), "
                         f"not {'+'.join(requested)}; build on that device or with TensorRT-RTX")
    return BuildTarget((local.target,), False, local.name)


# --------------------------------------------------------------------------------------------------
# layer information


_DTYPE_WORDS = (("Float", r"Float|FP32"), ("Half", r"Half|FP16"), ("BFloat16", r"BFloat16|BF16"),
                ("Int8", r"Int8|INT8"), ("Int32", r"Int32|INT32"), ("Int64", r"Int64|INT64"),
                ("UInt8", r"UInt8|UINT8"), ("Bool", r"Bool|BOOL"), ("FP8", r"FP8|Fp8"),
                ("Int4", r"Int4|INT4"), ("FP4", r"FP4|Fp4"))
_DTYPE_RE = re.compile(r"\b(" + "|".join(alts for _, alts in _DTYPE_WORDS) + r")\b")
_DTYPE_CANON = {alt: canon for canon, alts in _DTYPE_WORDS for alt in alts.split("|")}
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
# RTX log / ONELINE inspector format: "Name: n, LayerType: t, Inputs: [...], Outputs: [...], ..."
_ONELINE_RE = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*), Inputs: (?P<rest>.*)$")
_ONELINE_IO_RE = re.compile(r"(?:Format/Datatype|Datatype): ([^,}\]]+)")
# tensorrt 8.x-10.x build log: "Layer(Type): name, Tactic: 0x.., in (Float[1,3,8,8]) -> out (Half[...])"
_LEGACY_RE = re.compile(r"^Layer\((?P<type>[^)]*)\): (?P<name>.*?), Tactic: \S+?, (?P<io>.*)$")
_LEGACY_IO_RE = re.compile(r"(?:\(|\[)\s*(" + "|".join(alts for _, alts in _DTYPE_WORDS) + r")\s*(?:\[|\()")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def onnx_nodes_of(metadata: str) -> tuple[str, ...]:
    """ONNX node names in a layer's metadata (``[ONNX Layer: a]\x1e[ONNX Layer: b]``)."""
    return tuple(_ONNX_LAYER_RE.findall(metadata or ""))


def _canon_dtypes(texts: Iterable[str]) -> tuple[str, ...]:
    out = []
    for text in texts:
        match = _DTYPE_RE.search(text)
        if match:
            out.append(_DTYPE_CANON[match[1]])
    return tuple(out)


@dataclass(frozen=True)
class EngineLayer:
    """One layer of the built engine (after fusion), as reported by TensorRT."""

    name: str
    type: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    onnx_nodes: tuple[str, ...] = ()
    plugin: str | None = None  # plugin name when the layer runs a plugin

    @property
    def datatypes(self) -> frozenset[str]:
        return frozenset(self.input_dtypes) | frozenset(self.output_dtypes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EngineLayer":
        return cls(d["name"], d["type"], tuple(d["input_dtypes"]), tuple(d["output_dtypes"]),
                   tuple(d.get("onnx_nodes", ())), d.get("plugin"))


def _parse_oneline(match: re.Match) -> EngineLayer:
    rest = match["rest"]
    inputs, _, outputs = rest.partition("Outputs: [")
    inputs = inputs.split("Constants: [")[0]  # folded weights are not activations
    outputs = re.split(r"\], (?:ParameterType|TacticName|TacticValue|StreamId|Metadata):", outputs)[0]
    metadata = rest.rpartition("Metadata:")[2]
    return EngineLayer(match["name"], match["type"], _canon_dtypes(_ONELINE_IO_RE.findall(inputs)),
                       _canon_dtypes(_ONELINE_IO_RE.findall(outputs)),
                       onnx_nodes_of(metadata))


def _parse_legacy(match: re.Match) -> EngineLayer:
    inputs, _, outputs = match["io"].partition(" -> ")
    return EngineLayer(match["name"], match["type"], _canon_dtypes(_LEGACY_IO_RE.findall(inputs)),
                       _canon_dtypes(_LEGACY_IO_RE.findall(outputs)),
                       tuple(part.strip() for part in match["name"].split(" + ")))


def parse_layer_log(messages: Iterable[str]) -> list[EngineLayer]:
    """Engine layers from the builder's VERBOSE log with ProfilingVerbosity.DETAILED.

    TensorRT-RTX logs a ``Layers:`` message in the inspector's one-line format; tensorrt 8.x-10.x log
    ``Engine Layer Information:`` with ``Layer(Type): name, Tactic: .., in (Float[..]) -> out (Half[..])``.
    """
    layers = []
    for message in messages:
        lines = message.split("\n")  # not splitlines(): it also splits at the \x1e between metadata entries
        if not lines or lines[0].strip() not in ("Layers:", "Engine Layer Information:"):
            continue
        for line in lines[1:]:
            line = line.strip()
            match = _ONELINE_RE.match(line)
            if match:
                layers.append(_parse_oneline(match))
                continue
            match = _LEGACY_RE.match(line)
            if match:
                layers.append(_parse_legacy(match))
    return layers


def layers_from_inspector(info: dict) -> list[EngineLayer]:
    """Engine layers from ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``."""
    layers = []
    for entry in info.get("Layers", []):
        if not isinstance(entry, dict):  # LAYER_NAMES_ONLY verbosity gives bare names
            continue

        def dtypes(key):
            return _canon_dtypes(str(t.get("Format/Datatype", t.get("Datatype", ""))) for t in entry.get(key, []))

        layers.append(EngineLayer(str(entry.get("Name", "")), str(entry.get("LayerType", "")), dtypes("Inputs"),
                                  dtypes("Outputs"), onnx_nodes_of(str(entry.get("Metadata", "")))))
    return layers


def summarize_layers(layers: list[EngineLayer], source: str) -> dict:
    """Layer counts by type, the data types used and the plugin layers, for sidecars and reports."""
    types: dict[str, int] = {}
    for layer in layers:
        types[layer.type] = types.get(layer.type, 0) + 1
    return {
        "count": len(layers),
        "types": types,
        "datatypes": sorted(set().union(*(layer.datatypes for layer in layers))),
        "plugin_layers": [{"name": l.name, "plugin": l.plugin, "datatypes": sorted(l.datatypes)}
                          for l in layers if l.plugin],
        "source": source,
    }


def attach_plugins(layers: list[EngineLayer], plugin_nodes: dict[str, str]) -> list[EngineLayer]:
    """Mark engine layers that came from plugin nodes (ONNX node / network layer name -> plugin name)."""
    out = []
    for layer in layers:
        plugin = next((plugin_nodes[n] for n in layer.onnx_nodes if n in plugin_nodes), None)
        out.append(EngineLayer(layer.name, layer.type, layer.input_dtypes, layer.output_dtypes,
                               layer.onnx_nodes, plugin))
    return out


# --------------------------------------------------------------------------------------------------
# C++ plugin library

#: Environment variable naming a built ``libedge_derain_plugins.so`` to use instead of the Python plugin.
PLUGIN_LIBRARY_ENV = "EDGE_DERAIN_PLUGIN_LIB"
PLUGIN_LIBRARY_NAME = "libedge_derain_plugins.so"
# (TensorRT module name, library path) -> handle; a library is loaded once per process and module.
_LOADED_LIBRARIES: dict[tuple[str, str], object] = {}


def find_plugin_library() -> Path | None:
    """The C++ plugin library to use: ``$EDGE_DERAIN_PLUGIN_LIB``, else the CMake build in the source
    checkout (``build/plugins/libedge_derain_plugins.so``), else None (the Python plugin is used)."""
    from . import kernel_lib

    explicit = kernel_lib.library_from_env(PLUGIN_LIBRARY_ENV, PLUGIN_LIBRARY_NAME, unset_means="use the Python plugin")
    if explicit:
        return explicit
    try:
        built = kernel_lib.plugin_source_dir().parent / "build" / "plugins" / PLUGIN_LIBRARY_NAME
    except FileNotFoundError:  # installed without the plugins/ sources: no CMake build either
        return None
    return built if built.is_file() else None


def load_plugin_library(trt, path: str | os.PathLike) -> Path:
    """Load a plugin library into ``trt``'s registry (once per process) and check it provides our plugins."""
    from .python_plugins import PLUGIN_NAMES, PLUGIN_NAMESPACE, PLUGIN_VERSION

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"plugin library {path} does not exist; build it with "
                                "cmake -S plugins -B build/plugins && cmake --build build/plugins")
    key = (trt.__name__, str(path))
    if key not in _LOADED_LIBRARIES:
        registry = trt.get_plugin_registry()
        handle = registry.load_library(str(path))
        if handle is None:
            raise TensorRTSetupError(f"{trt.__name__} could not load the plugin library {path} (its log says why); "
                                     "build it against the headers of the TensorRT in use")
        _LOADED_LIBRARIES[key] = handle
        missing = [name for name in PLUGIN_NAMES
                   if registry.get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None]
        if missing:
            raise TensorRTSetupError(f"{path} loaded but registered no {' / '.join(missing)} v{PLUGIN_VERSION} "
                                     "plugin creator; rebuild the edge_derain plugin library from this checkout "
                                     "(cmake --build build/plugins)")
    return path


# --------------------------------------------------------------------------------------------------
# build


@dataclass
class BuildResult:
    engine_path: Path
    onnx_path: Path
    flavour: str
    version: str
    precision: str
    shapes: ShapeProfile
    targets: tuple[str, ...]
    gpu_name: str | None
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    build_seconds: float  # TensorRT's build only
    wall_seconds: float  # including the subprocess start
    engine_bytes: int
    layers: list[EngineLayer] = field(default_factory=list)
    plugins: list[dict] = field(default_factory=list)  # network plugin layers: layer, plugin, version
    layer_source: str = ""  # "inspector" or "build log"
    log_path: Path | None = None
    fp32_nodes: dict[str, str] | None = None  # nodes the FP16 conversion kept FP32; None: no conversion
    plugin_library: Path | None = None  # the C++ plugin library used instead of the Python plugin
    onnx_metadata: dict = field(default_factory=dict)

    @property
    def plugin_layers(self) -> list[EngineLayer]:
        return [layer for layer in self.layers if layer.plugin]

    def layer_summary(self) -> dict:
        return summarize_layers(self.layers, self.layer_source)


_ERROR_TYPES = {cls.__name__: cls for cls in (EngineBuildError, OnnxParseError, ValueError, TensorRTSetupError,
                                              TensorRTUnavailable, NoCudaDevice)}


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = [_one_line(line) for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(empty log)"


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _run_worker(request: dict, log_path: Path, timeout: float | None) -> tuple[dict | None, int | None]:
    """Run the build worker; return its result (None if it died) and exit status (None on timeout)."""
    with tempfile.TemporaryDirectory(prefix="edge_derain_build_") as scratch:
        request = dict(request, result=str(Path(scratch) / "result.json"))
        request_path = Path(scratch) / "request.json"
        request_path.write_text(json.dumps(request))
        package_root = str(Path(__file__).resolve().parents[2])  # the worker imports this same checkout
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        with open(log_path, "wb") as log_file:
            try:
                proc = subprocess.run([sys.executable, "-m", "edge_derain.engine._build_worker", str(request_path)],
                                      stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                      env=env, timeout=timeout)
                returncode = proc.returncode
            except subprocess.TimeoutExpired:
                returncode = None
        result_path = Path(request["result"])
        return (json.loads(result_path.read_text()) if result_path.exists() else None), returncode


@contextlib.contextmanager
def _graph_to_build(onnx_path: str | os.PathLike, scratch_dir: Path, convert: bool):
    """Yield (ONNX file to build, FP32 nodes): ``onnx_path`` itself, or its FP16 conversion (deleted after)."""
    if not convert:
        yield Path(onnx_path), None
        return
    fd, name = tempfile.mkstemp(prefix=f".{Path(onnx_path).stem}.", suffix=".fp16.onnx", dir=scratch_dir)
    os.close(fd)
    converted = Path(name)
    try:
        fp32_nodes = convert_onnx_to_fp16(onnx_path, converted)
        log.info("building the FP16 conversion of %s; %d node(s) kept FP32", Path(onnx_path).name, len(fp32_nodes))
        yield converted, fp32_nodes
    finally:
        converted.unlink(missing_ok=True)


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, precision: str = "fp32",
                 shapes: ShapeProfile | None = None, target: str | Iterable[str] = "auto",
                 workspace: int | None = None, verbose_log_path: str | os.PathLike | None = None,
                 flavour: TensorRTFlavour | None = None, timeout: float | None = None,
                 plugin_library: str | os.PathLike | None = None, typing: str = "auto") -> BuildResult:
    """Build ``onnx_path`` into a serialized engine at ``out_path`` (written atomically).

    ``shapes`` is the optimisation profile of the input (default: the input's static shape);
    ``target`` is ``"auto"`` or compute capabilities such as ``"sm86"`` / ``"sm86,sm89"`` (targets other
    than the local GPU need TensorRT-RTX); ``workspace`` caps the builder's workspace pool in bytes.
    The full VERBOSE build log goes to ``verbose_log_path``; without one it is kept only on failure,
    as ``<out_path>.build.log``. Layer information comes from the engine inspector when the engine can
    be deserialised here (a GPU is present), otherwise from the DETAILED build log.

    ``precision="fp16"`` with an FP32 ONNX on a strongly typed flavour builds the graph converted by
    ``convert_to_fp16`` (``BuildResult.fp32_nodes`` lists what stayed FP32). ``plugin_library`` is a
    built ``libedge_derain_plugins.so`` whose creators replace the Python plugin in the build. ``typing``
    (auto, weak, strong) chooses weakly or strongly typed where the flavour offers both (tensorrt 10.x).
    """
    started = time.perf_counter()
    flavour = flavour or detect_tensorrt()
    if workspace is not None and int(workspace) <= 0:
        raise ValueError(f"workspace must be a positive number of bytes, got {workspace}")
    check_typing(flavour, typing)
    summary = inspect_onnx(onnx_path)
    shapes = resolve_shapes(summary, shapes)
    convert = needs_fp16_conversion(flavour, precision, summary, typing)
    if not convert:
        plan = plan_precision(flavour, precision, summary, typing)
    build_target = resolve_build_target(flavour, target)
    if summary.custom_ops:
        ensure_plugin_node_support(flavour)
    if plugin_library is not None:
        plugin_library = Path(plugin_library).resolve()
        if not plugin_library.is_file():
            raise FileNotFoundError(f"plugin library {plugin_library} does not exist; build it with "
                                    "cmake -S plugins -B build/plugins && cmake --build build/plugins")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _graph_to_build(onnx_path, out_path.parent, convert) as (graph_path, fp32_nodes):
        if convert:
            plan = plan_precision(flavour, precision, inspect_onnx(graph_path), typing)
        keep_log = verbose_log_path is not None
        if keep_log:
            log_path = Path(verbose_log_path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            fd, name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".log", dir=out_path.parent)
            os.close(fd)
            log_path = Path(name)
        request = {
            "onnx": str(graph_path.resolve()),
            "out": str(out_path.resolve()),
            "flavour": flavour.name,
            "strongly_typed": plan.strongly_typed,
            "set_flags": list(plan.set_flags),
            "clear_flags": list(plan.clear_flags),
            "profile": shapes.to_dict(),
            "compute_capabilities": list(build_target.targets) if build_target.set_compute_capabilities else [],
            "workspace": int(workspace) if workspace is not None else None,
            "plugin_library": str(plugin_library) if plugin_library is not None else None,
        }
        result, returncode = _run_worker(request, log_path, timeout)

    if result is None or "error" in result:
        if not keep_log:
            failed_log = Path(f"{out_path}.build.log")
            os.replace(log_path, failed_log)
            log_path = failed_log
        where = f"full log: {log_path}"
        if result is not None:
            kind, message = result["error"]["type"], result["error"]["message"]
            if kind in _ERROR_TYPES:
                raise _ERROR_TYPES[kind](f"{message} ({where})")
            raise EngineBuildError(f"{kind} while building {Path(onnx_path).name}: {message} ({where})")
        what = f"timed out after {timeout} s" if returncode is None else _exit_description(returncode)
        raise EngineBuildError(f"TensorRT build of {Path(onnx_path).name} {what}; log tail: {_log_tail(log_path)} "
                               f"({where})")
    if not keep_log:
        log_path.unlink(missing_ok=True)

    return BuildResult(
        engine_path=out_path, onnx_path=Path(onnx_path), flavour=flavour.name, version=flavour.version,
        precision=precision, shapes=shapes, targets=build_target.targets, gpu_name=build_target.gpu_name,
        strongly_typed=plan.strongly_typed, builder_flags=plan.set_flags, build_seconds=result["build_seconds"],
        wall_seconds=time.perf_counter() - started, engine_bytes=result["engine_bytes"],
        layers=[EngineLayer.from_dict(d) for d in result["layers"]], plugins=result["plugins"],
        layer_source=result["layer_source"], log_path=log_path if keep_log else None, fp32_nodes=fp32_nodes,
        plugin_library=plugin_library, onnx_metadata=dict(summary.metadata))
