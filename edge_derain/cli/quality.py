"""Sub-commands that measure and quantise: ``eval`` (one backend, or precisions of one export) and ``calibrate``
(INT8 Q/DQ graphs; ``calibrate collect`` makes calibration sets)."""
from __future__ import annotations

import json

from .common import (add_quiet, add_seed, add_weights, detector, open_args_backend, print_written, report_failures,
                     sizes)


def cmd_eval(args) -> int:
    from ..evaluate import evaluate, print_report, write_report

    if args.precisions:
        return _eval_precisions(args)
    data = args.data
    if args.set:
        from ..data import open_eval_set

        data = open_eval_set(args.data, args.set)
    report = evaluate(open_args_backend(args), data, limit=args.limit, progress=not args.quiet,
                      detector=detector(args), label=f"{args.set} of {args.data}" if args.set else None)
    report["weights"] = str(args.weights or "default")
    json_path, csv_path = write_report(report, args.out)
    print_report(report)
    print(f"wrote {json_path} and {csv_path}")
    return report_failures([(f["name"], f["error"]) for f in report["failed"]], "image")


def _eval_precisions(args) -> int:
    from ..quant import precision_report, print_precision_report, write_precision_report

    if not args.onnx:
        raise ValueError("--precisions compares exported graphs: pass --onnx <plugin graph> (edge-derain export)")
    # Precisions are properties of exported graphs, so PyTorch (the plain eval default) means ONNX Runtime here.
    backend = "ort" if args.backend == "torch" else args.backend
    report = precision_report(args.onnx, args.data, args.precisions, backend=backend, int8_path=args.int8,
                              limit=args.limit, progress=not args.quiet, detector=detector(args))
    json_path, png_path = write_precision_report(report, args.out)
    print_precision_report(report)
    print_written(json_path, png_path)
    return report_failures([(f"{f['name']} ({f['precision']})", f["error"]) for f in report["failed"]], "image")


def cmd_calibrate(args) -> int:
    from ..quant import calibrate
    from ..quant.report import default_int8_path

    if not args.onnx:
        raise ValueError("pass --onnx <FP32 plugin graph> (edge-derain export), or use 'calibrate collect' to make "
                         "a calibration set")
    result = calibrate(args.onnx, args.out or default_int8_path(args.onnx), calib_dir=args.calib, method=args.method,
                       percentile=args.percentile, engine=args.engine, cache=args.cache,
                       max_drop_db=args.max_drop_db, groups=args.groups)
    print(result.summary())
    return 0


def cmd_calibrate_collect(args) -> int:
    from ..quant import collect_from_media, collect_from_recipe

    if bool(args.data) == bool(args.sources):
        raise ValueError("pass --data DIR (the default set: clean images + synthetic rain + RainMix) or --from "
                         "images/videos/cameras, not both")
    if args.data:
        calib_set = collect_from_recipe(args.data, args.out, recipe=args.recipe, input_multiple=args.multiple)
    else:
        calib_set = collect_from_media(args.sources, args.out, count=args.count, input_multiple=args.multiple,
                                       crop=sizes([args.crop])[0] if args.crop else None, seed=args.seed)
    print(json.dumps(calib_set.describe(), indent=2))
    skipped = calib_set.manifest["origin"].get("skipped", [])
    return report_failures([(item["source"], item["error"]) for item in skipped], "source")


def _register_eval(sub) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM (Y, RGB) per image and mean on a paired folder")
    add_weights(p)
    p.add_argument("--data", required=True, help="folder with rain/ and clean/ (same file names), or with --set "
                                                 "the data directory (layout: docs/data.md)")
    p.add_argument("--set", default=None, choices=["val", "rain800-holdout", "light", "drizzle", "dry"],
                   help="a named evaluation set of the data directory: val/, held-out Rain800 scenes, light rain or "
                        "drizzle rendered on the val/ clean images, or dry frames (clean images as input)")
    p.add_argument("--out", default="eval_out", help="folder for eval.json and eval.csv")
    p.add_argument("--limit", type=int, default=None)
    add_quiet(p)
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


def _register_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="explicit INT8 (Q/DQ) plugin + portable graphs from a calibration set or a "
                                         "legacy TensorRT cache; 'calibrate collect' makes calibration sets")
    p.add_argument("--onnx", default=None, help="FP32 plugin graph from 'edge-derain export' (.portable.onnx beside)")
    p.add_argument("--calib", default=None, help="calibration set folder (manifest.json), see 'calibrate collect'")
    p.add_argument("--out", default=None, help="writes OUT.onnx, OUT.portable.onnx, OUT.calibration.json "
                                               "(default: <onnx stem>.int8)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="activation range calibration (ONNX Runtime); entropy is unreliable: ORT's equals minmax at "
                        "its default bin count and cost a derain net 8.7 dB at 2048 bins")
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
    _register_collect(p.add_subparsers(dest="calibrate_command"))


def _register_collect(csub) -> None:
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
    add_seed(c)
    c.set_defaults(func=cmd_calibrate_collect)


def register(sub) -> None:
    _register_eval(sub)
    _register_calibrate(sub)
