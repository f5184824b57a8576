"""What several sub-commands share: argument groups (weights and device, model config, quiet, seed) and the
small conversions from parsed arguments to library objects."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's ``dest`` and prints one deprecation line."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated here, use {self.new_flag} "
              f"({option_string} now means the PyTorch device only)", file=sys.stderr)
        setattr(namespace, self.dest, values)


# --------------------------------------------------------------------------------------------------
# argument groups


def add_weights(p, backend=True):
    """``--weights``, ``--device`` (cpu default) and, for commands that run a model, ``--backend``."""
    p.add_argument("--weights", default=None,
                   help="a .safetensors checkpoint (with its .json sidecar) or a shipped name; default: shipped")
    add_device(p)
    if backend:
        p.add_argument("--backend", default="torch",
                       help="torch (with --weights), a portable .onnx (ONNX Runtime) or a .engine (TensorRT)")


def add_device(p, default: str = "cpu") -> None:
    """``--device``: the PyTorch device, in every command (TensorRT build targets are ``build --target``)."""
    p.add_argument("--device", default=default,
                   help=f"PyTorch device: {'auto, ' if default == 'auto' else ''}cpu or cuda")


def add_model_arg(p, help="config of an untrained --model that has no shipped weights"):
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_quiet(p, help=None):
    p.add_argument("--quiet", action="store_true", help=help)


def add_seed(p):
    p.add_argument("--seed", type=int, default=0)


def add_detector(p, default: str):
    p.add_argument("--detector", default=default, help="hog, yolo:MODEL.onnx or none")


# --------------------------------------------------------------------------------------------------
# parsed arguments -> library objects


def parse_kv(items: list[str]) -> dict:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, lists, booleans)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{item!r} must look like KEY=VALUE, e.g. width=0.25")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def model_config(args) -> dict:
    config = parse_kv(args.model_arg)
    if getattr(args, "width", None) is not None:
        config["width"] = args.width
    return config


def open_args_backend(args):
    from ..backends import open_backend

    return open_backend(args.backend, weights=args.weights, device=args.device)


def sizes(items: list[str]) -> list[tuple[int, int]]:
    """``HxW`` strings -> (H, W) tuples."""
    out = []
    for item in items:
        try:
            h, w = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"size {item!r} must look like HEIGHTxWIDTH, e.g. 480x640") from None
        out.append((h, w))
    return out


def detector(args):
    if not args.detector or args.detector == "none":
        return None
    from ..detect import create_detector

    return create_detector(args.detector)


def derain_request(args):
    """``--backend`` auto|trt|ort|torch (+ --engine/--model/--weights/--precision) as a BackendRequest."""
    from ..gst.select import BackendRequest

    return BackendRequest(kind=args.backend, engine=getattr(args, "engine", None), model=getattr(args, "model", None),
                          weights=args.weights, precision=getattr(args, "precision", "fp32"), device=args.device)


def engine_cache(args):
    from ..engine import EngineCache
    from ..utils import cache_dir

    return EngineCache(args.cache_dir or cache_dir("engines"))


# --------------------------------------------------------------------------------------------------
# output


def report_failures(failed: list[tuple], what: str) -> int:
    """After a batch that went on past bad items, (name, reason) pairs: list them once more at the end;
    exit code 1 if any."""
    if not failed:
        return 0
    print(f"{len(failed)} {what}{'s' if len(failed) > 1 else ''} failed:", file=sys.stderr)
    for name, error in failed:
        print(f"  {name}: {error}", file=sys.stderr)
    return 1


def print_written(json_path: Path, png_path: Path | None) -> None:
    from ..utils import PLOT_HINT

    print(f"wrote {json_path} and {png_path}" if png_path else f"wrote {json_path}; {PLOT_HINT}")
