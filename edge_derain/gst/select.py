"""Which derain backend a pipeline runs: TensorRT where it can build for this GPU, ONNX Runtime otherwise,
PyTorch last.

``auto`` resolves in that order: an ``engine`` file means TensorRT; without one, TensorRT is used when the
installed flavour can build engines for the local GPU (:mod:`edge_derain.backends.auto`; the engine is
built once per frame size from the weights' plugin graph and cached in ``~/.cache/edge_derain/engines``);
otherwise ONNX Runtime (its CUDA provider when it has one and a GPU is visible) runs the
weights' portable graph, exported once into ``~/.cache/edge_derain/onnx`` (named by the weights' stem and
content hash, so retrained weights get a fresh export); PyTorch is the fallback when onnxruntime is not
installed. ``model`` names an ONNX graph to use instead of exporting the weights.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ..backends import Backend
from ..backends.auto import AutoChoice, auto_backend

log = logging.getLogger(__name__)

BACKEND_KINDS = ("auto", "trt", "ort", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BackendRequest:
    """What the ``derain`` element's properties (or ``edge-derain run`` options) ask for."""

    kind: str = "auto"
    engine: str | None = None    # serialized TensorRT engine (``edge-derain build``)
    model: str | None = None     # ONNX graph: portable for ONNX Runtime, plugin or portable for a TensorRT build
    weights: str | None = None   # .safetensors or shipped name; None: the shipped default
    precision: str = "fp32"      # engines built on the fly; ONNX Runtime and PyTorch run FP32
    device: str = "auto"         # PyTorch: auto (CUDA when available), cpu or cuda

    def validate(self) -> None:
        """One-line errors for settings that cannot work, before any model is loaded."""
        if self.kind not in BACKEND_KINDS:
            raise ValueError(f"backend {self.kind!r} is not one of {', '.join(BACKEND_KINDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.engine and self.kind not in ("auto", "trt"):
            raise ValueError(f"an engine ({self.engine}) runs on TensorRT only; use backend=trt or auto, "
                             f"or drop the engine to run backend={self.kind}")
        if self.precision != "fp32" and self.kind in ("ort", "torch"):
            raise ValueError(f"precision {self.precision} needs TensorRT; the {self.kind} backend runs fp32 "
                             f"(use backend=trt or precision=fp32)")
        for label, path in (("engine", self.engine), ("model", self.model)):
            if path and not Path(path).is_file():
                raise FileNotFoundError(f"{label} file {path} not found; "
                                        + ("build one with 'edge-derain build'" if label == "engine"
                                           else "export one with 'edge-derain export'"))
        if self.model:  # a truncated or foreign file fails here, not after the pipeline started
            from ..export.graph import load_onnx

            load_onnx(self.model)
        if self.engine:
            from ..engine.cache import read_sidecar

            read_sidecar(self.engine)
        if self.weights:
            from ..checkpoint import resolve_weights

            resolve_weights(self.weights)


def resolve_kind(request: BackendRequest) -> AutoChoice:
    """``auto`` -> :func:`~edge_derain.backends.auto.auto_backend`'s choice (TensorRT when an engine is
    given); other kinds as asked."""
    if request.kind != "auto":
        return AutoChoice(request.kind, f"backend={request.kind} was asked for")
    if request.engine:
        return AutoChoice("trt", f"an engine was given ({request.engine})")
    return auto_backend()


def exported_onnx(weights: str | None = None) -> tuple[Path, Path]:
    """(plugin graph, portable graph) of ``weights``, exported once into the per-user cache (keyed by the
    weights and by the exporter's code)."""
    from ..checkpoint import load_model, resolve_weights
    from ..export import export_model, exporter_digest, plugin_and_portable_paths
    from ..utils import cache_dir

    path = resolve_weights(weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    plugin, portable = plugin_and_portable_paths(cache_dir("onnx") / f"{path.stem}-{digest}-{exporter_digest()}.onnx")
    if not (plugin.is_file() and portable.is_file()):
        log.info("exporting %s to %s", path.name, plugin.parent)
        export_model(load_model(path), plugin)
    return plugin, portable


def _engine_for(request: BackendRequest, frame_size: tuple[int, int], max_batch: int = 1) -> Path:
    """A cached engine for one frame size: a profile at the padded size, since the pipeline's caps fix the
    frame size (a caps change re-opens the backend), and batches of 1 to ``max_batch`` frames (streams)."""
    from ..engine import EngineCache, ShapeProfile
    from ..engine.onnx_info import inspect_onnx
    from ..engine.cache import input_multiple_of
    from ..utils import cache_dir

    onnx_path = Path(request.model) if request.model else exported_onnx(request.weights)[0]
    multiple = input_multiple_of(inspect_onnx(onnx_path).metadata) or Backend.input_multiple
    size = tuple(-(-side // multiple) * multiple for side in frame_size)
    smallest, largest = (1, 3, *size), (max_batch, 3, *size)
    engine = EngineCache(cache_dir("engines")).get_or_build(onnx_path, precision=request.precision,
                                                           shapes=ShapeProfile(smallest, largest, largest))
    return engine.engine_path


def open_backend_for(request: BackendRequest, frame_size: tuple[int, int], max_batch: int = 1) -> Backend:
    """Open the backend ``request`` asks for; ``frame_size`` (H, W) and ``max_batch`` (frames per call, e.g.
    the number of streams) size engines built on the fly."""
    request.validate()
    choice = resolve_kind(request)
    kind = choice.kind
    log.info("derain backend: %s (%s)", kind, choice.reason)
    if kind == "trt":
        from ..backends.trt_backend import TensorRTBackend

        return TensorRTBackend(request.engine or _engine_for(request, frame_size, max_batch))
    if request.precision != "fp32":
        log.warning("precision %s needs TensorRT, which is not usable here; running %s in fp32",
                    request.precision, kind)
    if kind == "ort":
        from ..backends.ort_backend import OnnxRuntimeBackend

        model = Path(request.model) if request.model else exported_onnx(request.weights)[1]
        return OnnxRuntimeBackend(model, providers=list(choice.providers) or "auto")
    import torch

    from ..backends import TorchBackend
    from ..checkpoint import load_model

    device = ("cuda" if torch.cuda.is_available() else "cpu") if request.device == "auto" else request.device
    return TorchBackend(load_model(request.weights, device=device), device=device)
