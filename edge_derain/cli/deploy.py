"""Sub-commands that turn a model into something a device runs: ``export`` (ONNX), ``build`` (a TensorRT engine
for a GPU target, cached) and ``adopt`` (an engine built elsewhere)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import DeprecatedAlias, add_model_arg, add_weights, engine_cache, model_config


def _model_for_export(args):
    """The model to export: ``--weights`` if given, else the shipped weights of ``--model``, else a
    freshly initialised ``--model`` (useful to check that an untrained architecture exports)."""
    from ..checkpoint import DEFAULT_WEIGHTS, list_shipped_weights, load_model, read_sidecar, resolve_weights
    from ..models import create_model

    weights = args.weights
    if weights is None and args.model:
        shipped = sorted((name != DEFAULT_WEIGHTS, name) for name in list_shipped_weights()
                         if read_sidecar(resolve_weights(name))["model"] == args.model)
        if not shipped:
            logging.getLogger(__name__).warning("no shipped weights for %s: exporting an untrained model", args.model)
            return create_model(args.model, **model_config(args)), args.model
        weights = shipped[0][1]
    model = load_model(weights)
    if args.model and model.model_name != args.model:
        raise ValueError(f"--model {args.model} but the weights hold {model.model_name}; pass matching --weights")
    return model, resolve_weights(weights).stem


def cmd_export(args) -> int:
    from ..export import export_model

    model, _ = _model_for_export(args)
    result = export_model(model, args.out, opset=args.opset, portable=not args.no_portable)
    print(result.summary())
    return 0


def cmd_build(args) -> int:
    from ..engine import ShapeProfile
    from ..utils import cache_dir

    if bool(args.onnx) == bool(args.model):
        raise ValueError("pass exactly one of --onnx FILE (a plugin or portable graph) or --model NAME (exported first)")
    onnx_path = args.onnx
    if args.model:
        from ..export import export_model

        model, stem = _model_for_export(args)
        onnx_path = export_model(model, (args.cache_dir and Path(args.cache_dir) or cache_dir("onnx")) / stem,
                                 portable=False).plugin_path
    engine = engine_cache(args).get_or_build(onnx_path, precision=args.precision,
                                             shapes=ShapeProfile.parse(args.shapes), target=args.target,
                                             verbose_log_path=args.log, rebuild=args.rebuild, typing=args.typing)
    sidecar = engine.sidecar
    state = "built" if engine.built else "cached"
    flags = "+".join(sidecar["builder_flags"]) or "no precision flags"
    print(f"{state}: {engine.engine_path}")
    print(f"  {sidecar['key']['fingerprint']['flavour']} {sidecar['key']['fingerprint']['version']}, "
          f"targets {','.join(sidecar['key']['fingerprint']['targets'])}, {args.precision}, "
          f"{engine.key.typing}ly typed ({flags}), {engine.key.plugin_implementation} plugin, "
          f"profile {ShapeProfile.parse(args.shapes).label}")
    print(f"  layers: {sidecar['layer_summary']}")
    return 0


def cmd_adopt(args) -> int:
    from ..engine import ShapeProfile
    from ..engine.adopt import adopt_engine
    from ..engine.cache import sidecar_path

    sidecar = adopt_engine(args.engine, args.onnx, precision=args.precision, plugin_library=args.plugin_lib)
    key, device = sidecar["key"], sidecar["key"]["fingerprint"]
    profile = ShapeProfile.from_dict(key["shapes"]).label
    print(f"adopted: {args.engine} (sidecar {sidecar_path(args.engine).name})")
    print(f"  {device['flavour']} {device['version']}, {device['targets'][0]} {device['gpu_name']}, {key['precision']}, "
          f"profile {profile}, {key['plugin_implementation']} plugin, {sidecar['layer_summary']['count']} layers")
    return 0


def _register_export(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX: plugin graph (custom nodes) + portable graph (standard ops)")
    add_weights(p, backend=False)
    p.add_argument("--model", default=None, help="model name (default: the one named by the weights' sidecar)")
    add_model_arg(p)
    p.add_argument("--out", required=True, help="output path; writes OUT.onnx and OUT.portable.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-portable", action="store_true", help="write only the plugin graph")
    p.set_defaults(func=cmd_export)


def _register_build(sub) -> None:
    p = sub.add_parser("build", help="build (or fetch from the cache) a TensorRT engine for a device")
    p.add_argument("--onnx", default=None, help="plugin or portable ONNX graph")
    p.add_argument("--model", default=None, help="export this model (with --weights) first")
    p.add_argument("--weights", default=None, help="weights for --model (default: shipped)")
    add_model_arg(p)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--shapes", default="1x3x256x256:1x3x720x1280:1x3x1088x1920",
                   help="optimisation profile min:opt:max (NxCxHxW, H and W multiples of the model's multiple)")
    p.add_argument("--target", default="auto",
                   help="auto (the local GPU; without one TensorRT-RTX builds for sm86,sm89,sm120) or targets "
                        "like sm86 / sm86,sm89 (TensorRT-RTX builds for GPUs it does not have)")
    p.add_argument("--device", dest="target", action=DeprecatedAlias, new_flag="--target",
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help="engine cache folder (default: ~/.cache/edge_derain/engines)")
    p.add_argument("--log", default=None, help="write the verbose build log here")
    p.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    typing = p.add_mutually_exclusive_group()
    typing.add_argument("--weak-typing", dest="typing", action="store_const", const="weak", default="auto",
                        help="weakly typed network with precision builder flags (tensorrt 10.x, e.g. JetPack 6; "
                             "the default there): int8 sets INT8+FP16, so layers the Q/DQ leave out may run in FP16")
    typing.add_argument("--strong-typing", dest="typing", action="store_const", const="strong",
                        help="strongly typed network: every layer runs in the ONNX's types (the only kind tensorrt "
                             "11.x and TensorRT-RTX build)")
    p.set_defaults(func=cmd_build)


def _register_adopt(sub) -> None:
    p = sub.add_parser("adopt", help="write the sidecar of an engine built elsewhere (trtexec, DeepStream) after "
                                      "checking it deserialises on this GPU, so the tool can run it")
    p.add_argument("engine", help="the serialized engine (.engine / .plan)")
    p.add_argument("--onnx", required=True, help="the ONNX graph it was built from (hash, input, input_multiple)")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8"],
                   help="what it runs in (default: read from its layers; needed when it was built without "
                        "--profilingVerbosity=detailed)")
    p.add_argument("--plugin-lib", default=None,
                   help="the libedge_derain_plugins.so it was built with (default: $EDGE_DERAIN_PLUGIN_LIB or "
                        "build/plugins, else the Python plugin)")
    p.set_defaults(func=cmd_adopt)


def register(sub) -> None:
    _register_export(sub)
    _register_build(sub)
    _register_adopt(sub)
