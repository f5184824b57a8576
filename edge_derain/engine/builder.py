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

The build's parts live one job a module: :mod:`.profile` (optimisation profiles), :mod:`.onnx_info` (what the
ONNX carries), :mod:`.policy` (precision flags, typing, targets), :mod:`.layers` (the engine's layers from the
inspector or the log), :mod:`.plugin_library` (the C++ plugin library); this module runs the build
subprocess. Their public names still import from here.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import EngineBuildError, OnnxParseError
from .flavour import (CudaDevice, NoCudaDevice, TensorRTFlavour, TensorRTSetupError, TensorRTUnavailable,
                      detect_tensorrt, ensure_plugin_node_support, list_devices)
from .layers import (EngineLayer, attach_plugins, layers_from_inspector, one_line,  # noqa: F401
                     onnx_nodes_of, parse_layer_log, summarize_layers)
from .onnx_info import OnnxSummary, input_multiple_of, inspect_onnx, onnx_sha256, resolve_shapes  # noqa: F401
from .plugin_library import (_LOADED_LIBRARIES, PLUGIN_LIBRARY_ENV, PLUGIN_LIBRARY_NAME,  # noqa: F401
                             find_plugin_library, load_plugin_library)
from .policy import (PRECISIONS, RTX_PORTABLE_TARGETS, TYPINGS, BuildTarget, PrecisionPlan,  # noqa: F401
                     build_target_for, check_typing, needs_fp16_conversion, parse_targets, plan_precision)
from .profile import ShapeProfile, check_profile_multiple  # noqa: F401

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 3


def resolve_build_target(flavour: TensorRTFlavour, target: str | Iterable[str] = "auto",
                         devices: list[CudaDevice] | None = None) -> BuildTarget:
    """Which compute capabilities to build for (:func:`.policy.build_target_for`), ``devices`` defaulting to
    this machine's GPUs."""
    return build_target_for(flavour, parse_targets(target), list_devices() if devices is None else devices)


def convert_onnx_to_fp16(onnx_path: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, str]:
    """Write the strongly typed FP16 version of an FP32 ONNX file; return its FP32 nodes (name -> reason)."""
    import onnx

    from ..export.fp16 import convert_to_fp16, fp32_nodes_of

    converted = convert_to_fp16(onnx.load(str(onnx_path)))
    onnx.save(converted, str(out_path))
    return fp32_nodes_of(converted)


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
    kept = [one_line(line) for line in text.splitlines() if line.strip()][-lines:]
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
    plan = None if convert else plan_precision(flavour, precision, summary, typing)
    build_target = resolve_build_target(flavour, target)
    if summary.custom_ops:
        ensure_plugin_node_support(flavour)
    plugin_library = _existing_plugin_library(plugin_library)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    keep_log = verbose_log_path is not None
    with _graph_to_build(onnx_path, out_path.parent, convert) as (graph_path, fp32_nodes):
        if convert:
            plan = plan_precision(flavour, precision, inspect_onnx(graph_path), typing)
        log_path = _open_log(verbose_log_path, out_path)
        request = _worker_request(graph_path, out_path, flavour, plan, shapes, build_target, workspace, plugin_library)
        result, returncode = _run_worker(request, log_path, timeout)
    _settle_log(result, returncode, log_path, keep_log, out_path, Path(onnx_path).name, timeout)

    return BuildResult(
        engine_path=out_path, onnx_path=Path(onnx_path), flavour=flavour.name, version=flavour.version,
        precision=precision, shapes=shapes, targets=build_target.targets, gpu_name=build_target.gpu_name,
        strongly_typed=plan.strongly_typed, builder_flags=plan.set_flags, build_seconds=result["build_seconds"],
        wall_seconds=time.perf_counter() - started, engine_bytes=result["engine_bytes"],
        layers=[EngineLayer.from_dict(d) for d in result["layers"]], plugins=result["plugins"],
        layer_source=result["layer_source"], log_path=log_path if keep_log else None, fp32_nodes=fp32_nodes,
        plugin_library=plugin_library, onnx_metadata=dict(summary.metadata))


def _worker_request(graph_path: Path, out_path: Path, flavour: TensorRTFlavour, plan: PrecisionPlan,
                    shapes: ShapeProfile, build_target: BuildTarget, workspace: int | None,
                    plugin_library: Path | None) -> dict:
    """What the build worker is told (as JSON): the graph, where to write, flags, profile, targets, library."""
    return {
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


def _existing_plugin_library(plugin_library: str | os.PathLike | None) -> Path | None:
    if plugin_library is None:
        return None
    plugin_library = Path(plugin_library).resolve()
    if not plugin_library.is_file():
        raise FileNotFoundError(f"plugin library {plugin_library} does not exist; build it with "
                                "cmake -S plugins -B build/plugins && cmake --build build/plugins")
    return plugin_library


def _open_log(verbose_log_path: str | os.PathLike | None, out_path: Path) -> Path:
    """The build log: ``verbose_log_path`` (kept), else a hidden temporary file beside the engine."""
    if verbose_log_path is not None:
        log_path = Path(verbose_log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return log_path
    fd, name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".log", dir=out_path.parent)
    os.close(fd)
    return Path(name)


def _settle_log(result: dict | None, returncode: int | None, log_path: Path, keep_log: bool, out_path: Path,
                onnx_name: str, timeout: float | None) -> None:
    """After the worker: on failure keep the log (as ``<out_path>.build.log`` when it was temporary) and raise the
    worker's error as one line naming it; on success delete a temporary log."""
    if result is not None and "error" not in result:
        if not keep_log:
            log_path.unlink(missing_ok=True)
        return
    if not keep_log:
        failed_log = Path(f"{out_path}.build.log")
        os.replace(log_path, failed_log)
        log_path = failed_log
    where = f"full log: {log_path}"
    if result is not None:
        kind, message = result["error"]["type"], result["error"]["message"]
        if kind in _ERROR_TYPES:
            raise _ERROR_TYPES[kind](f"{message} ({where})")
        raise EngineBuildError(f"{kind} while building {onnx_name}: {message} ({where})")
    what = f"timed out after {timeout} s" if returncode is None else _exit_description(returncode)
    raise EngineBuildError(f"TensorRT build of {onnx_name} {what}; log tail: {_log_tail(log_path)} ({where})")
