"""Build policy, decided before TensorRT runs: which precision flags and typing give the engine the precision
asked for with this flavour and graph, and which compute capabilities to build for."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .flavour import CudaDevice, NoCudaDevice, TensorRTFlavour
from .onnx_info import OnnxSummary

PRECISIONS = ("fp32", "fp16", "int8")
TYPINGS = ("auto", "weak", "strong")
#: Compute capabilities TensorRT-RTX engines run on by default (its documented portable set).
RTX_PORTABLE_TARGETS = ("sm86", "sm89", "sm120")


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


def build_target_for(flavour: TensorRTFlavour, requested: tuple[str, ...], devices: list[CudaDevice]) -> BuildTarget:
    """Which compute capabilities to build for, given the ``requested`` ones (() = auto) and the local GPUs.

    ``auto`` means the local GPU when there is one; without a GPU, TensorRT-RTX builds its portable
    default set (sm86, sm89, sm120). Full tensorrt can only build for the GPU it runs on.
    """
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
