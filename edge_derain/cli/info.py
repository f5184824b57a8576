"""``edge-derain info``: versions, devices, TensorRT, models, shipped weights, cached engines, the auto backend."""
from __future__ import annotations

import json

from .common import engine_cache


def _tensorrt_info(args) -> dict:
    """TensorRT flavour, CUDA devices it sees, and the engines in the cache (with their build keys)."""
    from ..engine import TensorRTUnavailable, detect_tensorrt, list_devices

    try:
        flavour = detect_tensorrt()
        trt = {"flavour": flavour.name, "version": flavour.version,
               "targets": flavour.supported_targets() if flavour.supports_targets else "local GPU only"}
    except TensorRTUnavailable as exc:
        trt = {"unavailable": str(exc)}
    cache = engine_cache(args)
    engines = [{"engine": str(e.engine_path), "problem": e.problem,
                **({"precision": e.sidecar["key"]["precision"], "targets": e.sidecar["key"]["fingerprint"]["targets"],
                    "tensorrt": f"{e.sidecar['key']['fingerprint']['flavour']} {e.sidecar['key']['fingerprint']['version']}",
                    "built_at": e.sidecar.get("built_at")} if e.sidecar else {})}
               for e in (cache.entries() if cache.root.is_dir() else [])]
    return {"tensorrt": trt, "gpus": [f"{d.name} ({d.target})" for d in list_devices()],
            "engine_cache": str(cache.root), "engines": engines}


def cmd_info(args) -> int:
    import platform

    import torch

    from .. import __version__
    from ..backends.auto import auto_backend
    from ..checkpoint import list_shipped_weights
    from ..models import list_models

    info = {"edge_derain": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "models": {m.name: m.description for m in list_models()},
            "shipped_weights": list_shipped_weights()}
    info.update(_tensorrt_info(args))
    choice = auto_backend()
    info["auto_backend"] = {"backend": choice.kind, "why": choice.reason,
                            **({"providers": list(choice.providers)} if choice.providers else {})}
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, devices, TensorRT, models, shipped weights, cached engines")
    p.add_argument("--cache-dir", default=None, help="engine cache folder to list")
    p.set_defaults(func=cmd_info)
