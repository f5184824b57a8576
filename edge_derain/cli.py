"""The ``edge-derain`` command. Thin: each sub-command parses arguments and calls one library function."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


#: What the library raises for a person to read (one line naming the problem and the fix): printed as one
#: ``edge-derain CMD: error: ...`` line with exit code 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, FloatingPointError, ImportError)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's ``dest`` and prints one deprecation line."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated here, use {self.new_flag} "
              f"({option_string} now means the PyTorch device only)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _parse_kv(items: list[str]) -> dict:
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


def _model_config(args) -> dict:
    config = _parse_kv(args.model_arg)
    if getattr(args, "width", None) is not None:
        config["width"] = args.width
    return config


def _backend(args):
    from .backends import open_backend

    return open_backend(args.backend, weights=args.weights, device=args.device)


def _sizes(items: list[str]) -> list[tuple[int, int]]:
    """``HxW`` strings -> (H, W) tuples."""
    out = []
    for item in items:
        try:
            h, w = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"size {item!r} must look like HEIGHTxWIDTH, e.g. 480x640") from None
        out.append((h, w))
    return out


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    if args.model == "rain_autoencoder":
        from .train import train_rain_autoencoder

        path = train_rain_autoencoder(args.data, Path(args.out) / "rain_autoencoder", iters=args.iters,
                                      batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                                      device=args.device, progress=not args.quiet)
        print(f"wrote {path}; train RECA-Net with --loss-arg autoencoder={path}")
        return 0
    cfg = TrainConfig(model=args.model, data=args.data, out=args.out, model_config=_model_config(args),
                      iters=args.iters, batch=args.batch, crop=args.crop, lr=args.lr, betas=tuple(args.betas),
                      decay_start=args.decay_start, loss=args.loss, loss_config=_parse_kv(args.loss_arg),
                      rainmix=args.rainmix, recipe=_parse_kv(args.recipe_arg), pack=args.pack,
                      pack_mib=args.pack_mib, init=args.init, time_limit_min=args.time_limit,
                      epoch_iters=args.epoch_iters, amp=args.amp, gpu_share=args.gpu_share, seed=args.seed,
                      workers=args.workers,
                      device=args.device, resume=args.resume, val_limit=args.val_limit)
    result = train(cfg, progress=not args.quiet)
    print(json.dumps({"out": args.out, "best": result["best"], "last": result["last"], "val": result["val"],
                      "eval": result["eval"]}, indent=2))
    return 0


def cmd_pack(args) -> int:
    from .data import build_pack

    pack = build_pack(args.data, args.out, budget_mib=args.pack_mib, crop=args.crop, seed=args.seed,
                      progress=not args.quiet)
    print(f"wrote {args.out} ({pack.meta['bytes'] / 2 ** 20:.1f} MiB): {pack.summary()}")
    return 0


def cmd_presets(args) -> int:
    from .data import read_image, write_image
    from .data.preview import preset_grid
    from .demo import SAMPLE_IMAGE

    write_image(args.out, preset_grid(read_image(args.image or SAMPLE_IMAGE), seed=args.seed))
    print(f"wrote {args.out}")
    return 0


def cmd_ship(args) -> int:
    from .release import ship_weights

    path = ship_weights(args.weights, args.name, args.data, dest=args.dest, device=args.device,
                        progress=not args.quiet)
    print(f"wrote {path}, {path.with_suffix('.json').name} and {path.with_suffix('.md').name}")
    return 0


def cmd_card(args) -> int:
    from .checkpoint import resolve_weights
    from .model_card import write_model_card

    print(f"wrote {write_model_card(resolve_weights(args.weights))}")
    return 0


def cmd_import(args) -> int:
    from .checkpoint import read_sidecar
    from .convert import import_official

    path = import_official(args.model, args.checkpoint, args.out, _model_config(args))
    meta = read_sidecar(path)
    config = ", ".join(f"{k}={v!r}" for k, v in meta["config"].items())
    print(f"wrote {path} and {path.with_suffix('.json').name}: {meta['model']}({config}), "
          f"{meta['parameters']:,} parameters, from {meta['imported_from']['layout']}")
    print(f"next: edge-derain eval --weights {path} --data DIR; edge-derain export --weights {path} --out DIR")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate, print_report, write_report

    if args.precisions:
        return _eval_precisions(args)
    data = args.data
    if args.set:
        from .data import open_eval_set

        data = open_eval_set(args.data, args.set)
    report = evaluate(_backend(args), data, limit=args.limit, progress=not args.quiet,
                      detector=_detector(args), label=f"{args.set} of {args.data}" if args.set else None)
    report["weights"] = str(args.weights or "default")
    json_path, csv_path = write_report(report, args.out)
    print_report(report)
    print(f"wrote {json_path} and {csv_path}")
    return _report_failures([(f["name"], f["error"]) for f in report["failed"]], "image")


def _detector(args):
    if not args.detector or args.detector == "none":
        return None
    from .detect import create_detector

    return create_detector(args.detector)


def _eval_precisions(args) -> int:
    from .quant import precision_report, print_precision_report, write_precision_report

    if not args.onnx:
        raise ValueError("--precisions compares exported graphs: pass --onnx <plugin graph> (edge-derain export)")
    # Precisions are properties of exported graphs, so PyTorch (the plain eval default) means ONNX Runtime here.
    backend = "ort" if args.backend == "torch" else args.backend
    report = precision_report(args.onnx, args.data, args.precisions, backend=backend, int8_path=args.int8,
                              limit=args.limit, progress=not args.quiet, detector=_detector(args))
    json_path, png_path = write_precision_report(report, args.out)
    print_precision_report(report)
    _print_written(json_path, png_path)
    return _report_failures([(f"{f['name']} ({f['precision']})", f["error"]) for f in report["failed"]], "image")


def cmd_calibrate(args) -> int:
    from .quant import calibrate
    from .quant.report import default_int8_path

    if not args.onnx:
        raise ValueError("pass --onnx <FP32 plugin graph> (edge-derain export), or use 'calibrate collect' to make "
                         "a calibration set")
    result = calibrate(args.onnx, args.out or default_int8_path(args.onnx), calib_dir=args.calib, method=args.method,
                       percentile=args.percentile, engine=args.engine, cache=args.cache,
                       max_drop_db=args.max_drop_db, groups=args.groups)
    print(result.summary())
    return 0


def cmd_calibrate_collect(args) -> int:
    from .quant import collect_from_media, collect_from_recipe

    if bool(args.data) == bool(args.sources):
        raise ValueError("pass --data DIR (the default set: clean images + synthetic rain + RainMix) or --from "
                         "images/videos/cameras, not both")
    if args.data:
        calib_set = collect_from_recipe(args.data, args.out, recipe=args.recipe, input_multiple=args.multiple)
    else:
        calib_set = collect_from_media(args.sources, args.out, count=args.count, input_multiple=args.multiple,
                                       crop=_sizes([args.crop])[0] if args.crop else None, seed=args.seed)
    print(json.dumps(calib_set.describe(), indent=2))
    skipped = calib_set.manifest["origin"].get("skipped", [])
    return _report_failures([(item["source"], item["error"]) for item in skipped], "source")


def cmd_derain(args) -> int:
    from .inference import derain_paths

    failed = []
    for item in derain_paths(_backend(args), args.inputs, args.out, tile=args.tile or None, overlap=args.overlap,
                             progress=not args.quiet):
        if item.error:
            failed.append((item.source, item.error))
            print(f"{item.source}: skipped: {item.error}", file=sys.stderr)
        else:
            print(f"{item.source} -> {item.output}")
    return _report_failures(failed, "input")


def _report_failures(failed: list[tuple], what: str) -> int:
    """After a batch that went on past bad items, (name, reason) pairs: list them once more at the end;
    exit code 1 if any."""
    if not failed:
        return 0
    print(f"{len(failed)} {what}{'s' if len(failed) > 1 else ''} failed:", file=sys.stderr)
    for name, error in failed:
        print(f"  {name}: {error}", file=sys.stderr)
    return 1


def _derain_request(args):
    """``--backend`` auto|trt|ort|torch (+ --engine/--model/--weights/--precision) as a BackendRequest."""
    from .gst.select import BackendRequest

    return BackendRequest(kind=args.backend, engine=getattr(args, "engine", None), model=getattr(args, "model", None),
                          weights=args.weights, precision=getattr(args, "precision", "fp32"), device=args.device)


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .gst.select import BACKEND_KINDS

    # a kind is resolved by the derain element (it knows the frame size); a file is opened here
    backend = _derain_request(args) if args.backend in BACKEND_KINDS else _backend(args)
    if args.backend in BACKEND_KINDS:
        backend.validate()
    _detector(args)  # a missing or broken detector model fails now, not after the pipeline started
    result = run_demo(backend, args.out, source=args.input, clip=args.clip, intensity=args.intensity,
                      seed=args.seed, max_frames=args.max_frames, detector=args.detector)
    print(result.summary())
    return 0


def _gate_settings(args) -> dict:
    """The ``--gate-*`` options that were given, as RainGate keyword arguments."""
    names = {"gate_on": "on_threshold", "gate_off": "off_threshold", "gate_min_frames": "min_frames",
             "gate_interval": "probe_interval"}
    return {key: getattr(args, flag) for flag, key in names.items() if getattr(args, flag) is not None}


def _run_streams(args) -> int:
    """``run`` with several sources (or --streams, --metrics-port, --events): the batched fleet runner."""
    from .gst.multistream import MultiStreamOptions, MultiStreamRunner, format_multistream_summary, read_streams
    from .utils import atomic_write_json

    sources, names = read_streams(args.streams) if args.streams else (list(args.source or ["test"]), [])
    request = None if args.no_derain else _derain_request(args)
    if request is not None:
        request.validate()
    options = MultiStreamOptions(sources=sources, names=names, sink=args.sink, width=args.width or 640,
                                 height=args.height or 360, fps=args.fps, derain=request, detector=args.detector,
                                 overlay=not args.no_overlay, gate=_gate_settings(args) if args.gate else None,
                                 reconnect=args.reconnect, max_retries=args.max_retries, bitrate_kbps=args.bitrate)
    options.stream_names()
    runner = MultiStreamRunner(options, max_frames=args.frames, duration=args.duration,
                               eos_timeout=args.eos_timeout, stall_timeout=args.stall_timeout or None)
    with _fleet_outputs(args) as (metrics, events):
        runner.metrics, runner.events = metrics, events
        if request is not None:
            from .gst.select import open_backend_for

            runner.backend = open_backend_for(request, (options.height, options.width), max_batch=len(sources))
        if args.detector and args.detector != "none":
            from .detect import create_detector

            runner.detector = create_detector(args.detector)
        result = runner.run()
    print(format_multistream_summary(result.stats))
    if args.stats:
        atomic_write_json(args.stats, {"status": result.status, "error": result.error, **result.stats})
        print(f"stats: {args.stats}")
    if result.status == "error":
        raise RuntimeError(result.error or "every stream failed")
    return 0


class _fleet_outputs:
    """The metrics endpoint and the event publisher a run asked for (None when not), closed at the end."""

    def __init__(self, args):
        self.args, self.metrics, self.events = args, None, None

    def __enter__(self):
        from .fleet import EventPublisher, PipelineMetrics

        if self.args.metrics_port is not None:
            self.metrics = PipelineMetrics(self.args.metrics_port)
            print(f"metrics: http://0.0.0.0:{self.metrics.port}/metrics", file=sys.stderr)
        if self.args.events:
            self.events = EventPublisher(self.args.events)
        return self.metrics, self.events

    def __exit__(self, *exc):
        if self.events is not None:
            unacked = self.events.close()
            if unacked:
                print(f"warning: the broker did not acknowledge {unacked} event(s)", file=sys.stderr)
        if self.metrics is not None:
            self.metrics.close()


def cmd_run(args) -> int:
    from .gst.pipeline import PipelineOptions, compose, run_pipeline
    from .gst.stats import format_summary

    if len(args.source or []) > 1 or args.streams or args.metrics_port is not None or args.events:
        return _run_streams(args)
    args.source = args.source[0] if args.source else None
    request = _derain_request(args)
    request.validate()
    derain = None if args.no_derain else {
        "backend": request.kind, "engine": request.engine, "model": request.model, "weights": request.weights,
        "precision": request.precision, "device": request.device, "tile": args.tile or None, **({
            "gate": True, "gate_on": args.gate_on, "gate_off": args.gate_off, "gate_min_frames": args.gate_min_frames,
            "gate_interval": args.gate_interval} if args.gate else {})}
    options = PipelineOptions(source=args.source, pipeline=args.pipeline, platform=args.platform, width=args.width,
                              height=args.height, derain=derain, detector=args.detector, overlay=not args.no_overlay,
                              sink=args.sink, queue_size=args.queue_size, leaky=args.leaky,
                              bitrate_kbps=args.bitrate, params=_parse_kv(args.param))
    if args.print_pipeline:
        print(compose(options, partial=False).gst_launch_command())
        return 0
    compose(options)  # a bad source, sink or pipeline file fails here, before any model loads
    detector = _detector(args)  # built now: a missing or broken model fails before the pipeline starts

    def setup(pipeline) -> None:
        if detector is not None:
            pipeline.get_by_name("detect").use_detector(detector)

    def progress(numbers: dict) -> None:
        stages = "  ".join(f"{key[:-7]} p50 {value:.0f} ms" for key, value in numbers.items() if key.endswith("-p50-ms"))
        print(f"\r{numbers['frames']} frames  {numbers['fps']:.1f} fps  {numbers['dropped']} dropped  {stages}   ",
              end="", file=sys.stderr, flush=True)

    result = run_pipeline(options, max_frames=args.frames, duration=args.duration, stats_path=args.stats,
                          reconnect=args.reconnect, max_retries=args.max_retries, eos_timeout=args.eos_timeout,
                          stall_timeout=args.stall_timeout or None, on_stats=None if args.quiet else progress,
                          setup=setup)
    if not args.quiet:
        print(file=sys.stderr)
    print(format_summary(result.stats))
    if args.stats:
        print(f"stats: {args.stats}")
    if result.error:
        raise RuntimeError(result.error)
    return 0


def _model_for_export(args):
    """The model to export: ``--weights`` if given, else the shipped weights of ``--model``, else a
    freshly initialised ``--model`` (useful to check that an untrained architecture exports)."""
    from .checkpoint import DEFAULT_WEIGHTS, list_shipped_weights, load_model, read_sidecar, resolve_weights
    from .models import create_model

    weights = args.weights
    if weights is None and args.model:
        shipped = sorted((name != DEFAULT_WEIGHTS, name) for name in list_shipped_weights()
                         if read_sidecar(resolve_weights(name))["model"] == args.model)
        if not shipped:
            logging.getLogger(__name__).warning("no shipped weights for %s: exporting an untrained model", args.model)
            return create_model(args.model, **_model_config(args)), args.model
        weights = shipped[0][1]
    model = load_model(weights)
    if args.model and model.model_name != args.model:
        raise ValueError(f"--model {args.model} but the weights hold {model.model_name}; pass matching --weights")
    return model, resolve_weights(weights).stem


def cmd_export(args) -> int:
    from .export import export_model

    model, _ = _model_for_export(args)
    result = export_model(model, args.out, opset=args.opset, portable=not args.no_portable)
    print(result.summary())
    return 0


def _engine_cache(args):
    from .engine import EngineCache
    from .utils import cache_dir

    return EngineCache(args.cache_dir or cache_dir("engines"))


def cmd_build(args) -> int:
    from .engine import ShapeProfile
    from .utils import cache_dir

    if bool(args.onnx) == bool(args.model):
        raise ValueError("pass exactly one of --onnx FILE (a plugin or portable graph) or --model NAME (exported first)")
    onnx_path = args.onnx
    if args.model:
        from .export import export_model

        model, stem = _model_for_export(args)
        onnx_path = export_model(model, (args.cache_dir and Path(args.cache_dir) or cache_dir("onnx")) / stem,
                                 portable=False).plugin_path
    engine = _engine_cache(args).get_or_build(onnx_path, precision=args.precision,
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
    from .engine import ShapeProfile
    from .engine.adopt import adopt_engine
    from .engine.cache import sidecar_path

    sidecar = adopt_engine(args.engine, args.onnx, precision=args.precision, plugin_library=args.plugin_lib)
    key, device = sidecar["key"], sidecar["key"]["fingerprint"]
    profile = ShapeProfile.from_dict(key["shapes"]).label
    print(f"adopted: {args.engine} (sidecar {sidecar_path(args.engine).name})")
    print(f"  {device['flavour']} {device['version']}, {device['targets'][0]} {device['gpu_name']}, {key['precision']}, "
          f"profile {profile}, {key['plugin_implementation']} plugin, {sidecar['layer_summary']['count']} layers")
    return 0


def cmd_compare(args) -> int:
    from .backends import open_backend
    from .compare import compare_backends, print_compare_report
    from .utils import atomic_write_json

    tested = open_backend(args.backend, weights=args.weights, device=args.device)
    reference = open_backend(args.reference, weights=args.weights, device=args.device)
    report = compare_backends(tested, reference, sizes=_sizes(args.sizes), batch=args.batch, seed=args.seed,
                              atol=args.atol, rtol=args.rtol)
    print_compare_report(report)
    if args.json:
        atomic_write_json(args.json, report)
    return 0 if report["passed"] else 1


def cmd_bench(args) -> int:
    from .backends import open_backend
    from .bench import print_benchmark, run_benchmark, write_benchmark

    backends = {}
    for spec in args.backend:
        name, _, target = spec.partition("=")
        backends[name] = open_backend(target or name, weights=args.weights, device=args.device)
    results = run_benchmark(backends, _sizes(args.res), batch=args.batch, warmup=args.warmup, iters=args.iters)
    print_benchmark(results)
    json_path, png_path = write_benchmark(results, args.out)
    _print_written(json_path, png_path)
    return 0


def _print_written(json_path: Path, png_path: Path | None) -> None:
    from .utils import PLOT_HINT

    print(f"wrote {json_path} and {png_path}" if png_path else f"wrote {json_path}; {PLOT_HINT}")


def _tensorrt_info(args) -> dict:
    """TensorRT flavour, CUDA devices it sees, and the engines in the cache (with their build keys)."""
    from .engine import TensorRTUnavailable, detect_tensorrt, list_devices

    try:
        flavour = detect_tensorrt()
        trt = {"flavour": flavour.name, "version": flavour.version,
               "targets": flavour.supported_targets() if flavour.supports_targets else "local GPU only"}
    except TensorRTUnavailable as exc:
        trt = {"unavailable": str(exc)}
    cache = _engine_cache(args)
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

    from . import __version__
    from .backends.auto import auto_backend
    from .checkpoint import list_shipped_weights
    from .models import list_models

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-derain", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_weights(p, backend=True):
        p.add_argument("--weights", default=None,
                       help="a .safetensors checkpoint (with its .json sidecar) or a shipped name; default: shipped")
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        if backend:
            p.add_argument("--backend", default="torch",
                           help="torch (with --weights), a portable .onnx (ONNX Runtime) or a .engine (TensorRT)")

    p = sub.add_parser("train", help="train a registered model on paired/synthetic rain data")
    p.add_argument("--model", required=True,
                   help="a registered model, or rain_autoencoder (RECA-Net's embedding target, trained first)")
    p.add_argument("--width", type=float, default=None, help="channel width multiplier (efderain)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="extra model config")
    p.add_argument("--data", default=None, help="data directory (clean_bsd/, rain800/, rain800_train/, streaks_garg06/; "
                                                "val/ for validation); packed into OUT/train_pack.npz on first use")
    p.add_argument("--pack", default=None, help="train on this pack (from 'edge-derain pack') instead of packing --data")
    p.add_argument("--pack-mib", type=float, default=64.0, help="size budget of the pack built from --data")
    p.add_argument("--out", required=True, help="output folder for checkpoints, model cards and history")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these weights (a shipped name such as efderain_w025, or a .safetensors) and "
                        "extend their training lineage")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8, help="batch size; 0 = the biggest that fits the GPU")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate at batch 16 (scaled by sqrt(batch/16))")
    p.add_argument("--betas", type=float, nargs=2, default=[0.5, 0.999],
                   help="Adam betas (EfDeRain's official 0.5 0.999; ELF/DANet use 0.9 0.999)")
    p.add_argument("--decay-start", type=float, default=0.4, help="fraction of iters before linear LR decay")
    p.add_argument("--loss", default=None, help="override the model's default loss")
    p.add_argument("--loss-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="loss options, e.g. autoencoder=ae.safetensors for recanet")
    p.add_argument("--rainmix", choices=["paper", "code"], default=None, help="RainMix variant of the data recipe")
    p.add_argument("--recipe-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="data recipe overrides (edge_derain.data.DataRecipe), e.g. dry=0.1")
    p.add_argument("--epoch-iters", type=int, default=None, help="iterations between validations")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after this much wall-clock time (or --iters, whichever comes first); "
                        "the LR schedule follows elapsed time")
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"],
                   help="mixed precision: auto = bf16 (else fp16) on a GPU, off on the CPU")
    p.add_argument("--gpu-share", type=float, default=1.0,
                   help="fraction of the GPU's memory this run sizes its batch for (runs sharing one GPU)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N pairs only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=-1, help="data loader workers; -1 = auto")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.state.pt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pack", help="pack the training data into one compact file of uint8 crops")
    p.add_argument("--data", required=True, help="data directory (../shared/data layout)")
    p.add_argument("--out", required=True, help="the pack file (.npz)")
    p.add_argument("--pack-mib", type=float, default=64.0, help="size budget (64 MiB travels to a lent GPU)")
    p.add_argument("--crop", type=int, default=128, help="crop size stored (training crops are <= this)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("presets", help="a labelled grid of the synthetic rain presets on an image (PNG)")
    p.add_argument("--image", default=None, help="clean image (default: the shipped sample)")
    p.add_argument("--out", default="rain_presets.png")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("ship", help="store trained weights as shipped FP16 weights, measured, with a model card")
    p.add_argument("weights", help="a .safetensors checkpoint from 'edge-derain train'")
    p.add_argument("--name", required=True, help="the shipped name, e.g. efderain_w025")
    p.add_argument("--data", required=True, help="data directory with the evaluation sets (val/, rain800_train/)")
    p.add_argument("--dest", default=str(Path(__file__).resolve().parent / "weights"),
                   help="folder of the shipped weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("card", help="re-render the model card of weights from their sidecar")
    p.add_argument("weights", help="a .safetensors checkpoint or a shipped name")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("import", help="convert a checkpoint of a paper's public code (.pth) into our weights format")
    p.add_argument("--model", required=True, help="efderain, elf, elf_lw, danet or danet_plus")
    p.add_argument("--from", dest="layout", required=True, choices=["official"],
                   help="official: the state dict of the paper's repository (EfficientDeRain KPN, Magic-ELF "
                        "ALformer3/ALformer_lw, DANet)")
    p.add_argument("checkpoint", metavar="CKPT.pth", help="the .pth the paper's code saved (plain or wrapped)")
    p.add_argument("--out", required=True, help="weights to write: OUT.safetensors + OUT.json sidecar")
    p.add_argument("--width", type=float, default=None,
                   help="efderain width the checkpoint must have (read from its shapes when omitted)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model config the checkpoint must have, e.g. channels=48 (read from its shapes when omitted)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("eval", help="PSNR/SSIM (Y, RGB) per image and mean on a paired folder")
    add_weights(p)
    p.add_argument("--data", required=True, help="folder with rain/ and clean/ (same file names), or with --set "
                                                 "the data directory (../shared/data layout)")
    p.add_argument("--set", default=None, choices=["val", "rain800-holdout", "light", "drizzle", "dry"],
                   help="a named evaluation set of the data directory: val/, held-out Rain800 scenes, light rain or "
                        "drizzle rendered on the val/ clean images, or dry frames (clean images as input)")
    p.add_argument("--out", default="eval_out", help="folder for eval.json and eval.csv")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--detector", default=None,
                   help="also score a detector (hog, yolo:MODEL.onnx) on the derained images against its detections "
                        "on the clean images, per precision with --precisions")
    p.add_argument("--precisions", default=None, metavar="fp32,fp16,int8",
                   help="compare precisions of one export (--onnx) with --backend ort (ONNX Runtime, CPU) or trt "
                        "(TensorRT engines, needs a GPU): PSNR/SSIM-Y and the drop vs FP32 per image and mean, "
                        "as a table, precision_report.json and a drop-vs-latency PNG in --out")
    p.add_argument("--onnx", default=None, help="with --precisions: the FP32 plugin graph (its .portable.onnx beside)")
    p.add_argument("--int8", default=None,
                   help="with --precisions: the INT8 graph of 'edge-derain calibrate' (default <onnx stem>.int8.onnx)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="explicit INT8 (Q/DQ) plugin + portable graphs from a calibration set or a "
                                         "legacy TensorRT cache; 'calibrate collect' makes calibration sets")
    p.add_argument("--onnx", default=None, help="FP32 plugin graph from 'edge-derain export' (.portable.onnx beside)")
    p.add_argument("--calib", default=None, help="calibration set folder (manifest.json), see 'calibrate collect'")
    p.add_argument("--out", default=None, help="writes OUT.onnx, OUT.portable.onnx, OUT.calibration.json "
                                               "(default: <onnx stem>.int8)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="activation range calibration (ONNX Runtime); entropy is unreliable: ORT's equals minmax at "
                        "its default bin count and cost a derain net 14.2 dB at 2048 bins")
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile: percentile of |x|")
    p.add_argument("--engine", default="ort", choices=["ort", "modelopt"],
                   help="ort: ONNX Runtime quantize_static (default). modelopt is not available: NVIDIA ModelOpt "
                        "costs >1 GB of dependencies, pins an older onnx, rewrites its input in place and cannot "
                        "calibrate graphs with custom ops ONNX Runtime cannot run")
    p.add_argument("--cache", default=None, help="import activation scales from a legacy TensorRT calibration cache "
                                                 "(TRT-<version>-<algorithm> text file) instead of calibrating")
    p.add_argument("--max-drop-db", type=float, default=None,
                   help="accuracy budget: per-layer sensitivity on the set's held-out split, the most sensitive "
                        "layers stay FP32 until the PSNR-Y drop fits; writes OUT.plan.json")
    p.add_argument("--groups", default="conv", choices=["conv", "stage"],
                   help="layer groups for --max-drop-db: each conv or each stage")
    p.set_defaults(func=cmd_calibrate)
    csub = p.add_subparsers(dest="calibrate_command")
    c = csub.add_parser("collect", help="make a calibration set: the default recipe over a data dir, or frames "
                                        "sampled from images/videos/a V4L2 camera, stratified by rain intensity")
    c.add_argument("--out", required=True, help="new folder for the set (frames/, targets/, manifest.json)")
    c.add_argument("--data", default=None,
                   help="data dir for the recipe (clean_bsd/, streaks_garg06/; never val/, real/)")
    c.add_argument("--recipe", default=None, help="recipe JSON (default: calibration/default_recipe.json)")
    c.add_argument("--from", dest="sources", nargs="+", default=None,
                   help="image/video files or folders, or a camera as /dev/videoN or camera:N")
    c.add_argument("--count", type=int, default=64, help="frames to keep from --from sources")
    c.add_argument("--crop", default=None, help="random HxW crop of each --from frame (default: whole frames)")
    c.add_argument("--multiple", type=int, default=16, help="pad frames to this multiple (the model's input_multiple)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_calibrate_collect)

    p = sub.add_parser("derain", help="derain images or videos")
    add_weights(p)
    p.add_argument("inputs", nargs="+", help="image/video files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tile", type=int, default=1024,
                   help="derain larger images and frames in overlapping tiles of this many pixels (rounded down to "
                        "the model's input multiple; bounds memory); 0: whole images")
    p.add_argument("--overlap", type=int, default=None,
                   help="pixels shared by neighbouring tiles (default: twice the model's receptive radius)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_derain)

    p = sub.add_parser("demo", help="GStreamer pipeline: rain rendered on a clip -> derain -> detect -> mp4, "
                                     "PSNR, FPS and per-stage latency")
    p.add_argument("--weights", default=None,
                   help="a .safetensors checkpoint (with its .json sidecar) or a shipped name; default: shipped")
    p.add_argument("--device", default="auto", help="PyTorch device: auto, cpu or cuda")
    p.add_argument("--backend", default="auto",
                   help="auto (TensorRT where it builds for this GPU, else ONNX Runtime on the exported portable "
                        "graph, else PyTorch; edge-derain info says which), trt, ort, torch, or a .onnx/.engine file")
    p.add_argument("--input", default=None,
                   help="clean image or video, or 'test' (videotestsrc); default: the shipped sample image")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--clip", type=int, default=48, help="frames panned across an image (0: the image alone)")
    p.add_argument("--intensity", default="medium",
                   help="rain preset: light, medium, heavy or another `edge-derain presets` shows (default: medium)")
    p.add_argument("--detector", default="hog", help="hog, yolo:MODEL.onnx or none")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run a camera pipeline: source -> derain -> detect -> sink (GStreamer)")
    p.add_argument("--source", action="append", default=None,
                   help="test, test:PATTERN, /dev/videoN, csi:N, rtsp://..., a video file or URI (default: the "
                        "pipeline's default); repeat it for several cameras batched into one derain call")
    p.add_argument("--streams", default=None, metavar="FILE.toml",
                   help="the cameras of a multi-stream run: [[stream]] tables with name and source")
    p.add_argument("--fps", type=int, default=30, help="frame rate of multi-stream outputs (and test sources)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics (per-stream FPS, stage latency, drops, gate) on this port")
    p.add_argument("--events", default=None, metavar="mqtt://HOST[:PORT]/TOPIC",
                   help="publish one JSON message per frame (detections, rain score) to an MQTT broker")
    p.add_argument("--pipeline", default=None,
                   help="a named definition in pipelines/ (webcam, jetson-csi, file, rtsp, test) or a .toml file; "
                        "default: chosen from --source")
    p.add_argument("--platform", default=None, choices=["auto", "desktop", "jetson"],
                   help="conversion/encoder fragments (default: the pipeline's)")
    p.add_argument("--width", type=int, default=None, help="scale frames to this width before deraining")
    p.add_argument("--height", type=int, default=None, help="scale frames to this height before deraining")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline parameter, e.g. rain=light or latency_ms=500")
    p.add_argument("--backend", default="auto", choices=["auto", "trt", "ort", "torch"],
                   help="auto: TensorRT where the installed flavour builds for this GPU, else ONNX Runtime, else "
                        "PyTorch (edge-derain info says which and why)")
    p.add_argument("--engine", default=None, help="TensorRT engine (edge-derain build)")
    p.add_argument("--model", default=None, help="ONNX graph (portable for ort; built into an engine for trt)")
    p.add_argument("--weights", default=None, help="checkpoint or shipped name (default: shipped)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="precision of an engine built on the fly")
    p.add_argument("--device", default="auto", help="PyTorch device: auto, cpu or cuda")
    p.add_argument("--no-derain", action="store_true", help="no derain stage (baseline)")
    p.add_argument("--tile", type=int, default=0,
                   help="derain frames larger than this in overlapping tiles of this many pixels (bounds memory, "
                        "fits large frames into an engine's profile); 0: whole frames")
    p.add_argument("--gate", action="store_true", help="skip deraining while it is not raining")
    p.add_argument("--gate-on", type=float, default=None, help="rain score that turns deraining on (3.0)")
    p.add_argument("--gate-off", type=float, default=None, help="rain score that turns deraining off (2.0)")
    p.add_argument("--gate-min-frames", type=int, default=None, help="consecutive scores needed to switch (3)")
    p.add_argument("--gate-interval", type=int, default=None, help="while off, measure rain every N frames (15)")
    p.add_argument("--detector", default="none", help="hog, yolo:MODEL.onnx or none")
    p.add_argument("--no-overlay", action="store_true", help="do not draw the detections")
    p.add_argument("--sink", default="display", help="file:OUT.mp4, display, rtsp:8554/derain or fake")
    p.add_argument("--bitrate", type=int, default=4000, help="H.264 bitrate in kbit/s (file and rtsp sinks)")
    p.add_argument("--queue-size", type=int, default=2, help="buffers per stage queue")
    leaky = p.add_mutually_exclusive_group()
    leaky.add_argument("--leaky", dest="leaky", action="store_true", default=None,
                       help="drop the oldest queued frame when a stage is busy (default for live sources)")
    leaky.add_argument("--no-leaky", dest="leaky", action="store_false", help="process every frame")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--stats", default=None, help="write the stats (FPS, latency p50/p99, drops) to this JSON file")
    p.add_argument("--reconnect", action="store_true", help="reconnect a failed live source with back-off")
    p.add_argument("--max-retries", type=int, default=5, help="consecutive reconnection attempts")
    p.add_argument("--eos-timeout", type=float, default=10.0, help="seconds to wait for EOS before stopping hard")
    p.add_argument("--stall-timeout", type=float, default=10.0,
                   help="seconds without a frame before the source counts as failed (0: never)")
    p.add_argument("--print-pipeline", action="store_true", help="print the gst-launch-1.0 command and exit")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export", help="export to ONNX: plugin graph (custom nodes) + portable graph (standard ops)")
    add_weights(p, backend=False)
    p.add_argument("--model", default=None, help="model name (default: the one named by the weights' sidecar)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="config of an untrained --model that has no shipped weights")
    p.add_argument("--out", required=True, help="output path; writes OUT.onnx and OUT.portable.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-portable", action="store_true", help="write only the plugin graph")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build", help="build (or fetch from the cache) a TensorRT engine for a device")
    p.add_argument("--onnx", default=None, help="plugin or portable ONNX graph")
    p.add_argument("--model", default=None, help="export this model (with --weights) first")
    p.add_argument("--weights", default=None, help="weights for --model (default: shipped)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="config of an untrained --model that has no shipped weights")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--shapes", default="1x3x256x256:1x3x720x1280:1x3x1088x1920",
                   help="optimisation profile min:opt:max (NxCxHxW, H and W multiples of the model's multiple)")
    p.add_argument("--target", default="auto",
                   help="auto (the local GPU; without one TensorRT-RTX builds for sm86,sm89,sm120) or targets "
                        "like sm86 / sm86,sm89 (TensorRT-RTX builds for GPUs it does not have)")
    p.add_argument("--device", dest="target", action=_DeprecatedAlias, new_flag="--target",
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

    p = sub.add_parser("compare", help="run the same random inputs through two backends and report errors")
    p.add_argument("--backend", required=True, help="backend under test: torch, a .onnx or a .engine")
    p.add_argument("--reference", default="torch", help="reference backend (default: PyTorch with --weights)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", nargs="+", default=["64x64", "61x90"], help="input sizes HxW")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--json", default=None, help="also write the report as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="latency (median, p90, p99) and FPS per backend and resolution; JSON + PNG")
    p.add_argument("--backend", nargs="+", default=["torch"],
                   help="NAME=SPEC or SPEC entries: torch, a .onnx, a .engine (e.g. torch ort=model.portable.onnx)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--res", nargs="+", default=["480x640"], help="resolutions HxW")
    p.add_argument("--batch", type=int, nargs="+", default=[1],
                   help="batch sizes, e.g. 1 2 4 8 (the streams of a multi-camera run): frames/s per batch size")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", default="bench_out")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="versions, devices, TensorRT, models, shipped weights, cached engines")
    p.add_argument("--cache-dir", default=None, help="engine cache folder to list")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        # Errors raised by the library are written to be read by a person: one line, no traceback.
        if args.verbose:
            raise
        print(f"edge-derain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-derain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
