"""The ``edge-derain`` command. Thin: each sub-command parses arguments and calls one library function."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _parse_kv(items: list[str]) -> dict:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, lists, booleans)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model-arg {item!r} must look like key=value, e.g. width=0.25")
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


def _torch_backend(weights, device="cpu"):
    from .backends import TorchBackend
    from .checkpoint import load_model

    return TorchBackend(load_model(weights, device=device), device=device)


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(model=args.model, data=args.data, out=args.out, model_config=_model_config(args),
                      iters=args.iters, batch=args.batch, crop=args.crop, lr=args.lr,
                      decay_start=args.decay_start, loss=args.loss, rainmix=args.rainmix,
                      epoch_iters=args.epoch_iters, seed=args.seed, workers=args.workers,
                      device=args.device, resume=args.resume, val_limit=args.val_limit)
    result = train(cfg, progress=not args.quiet)
    print(json.dumps({"out": args.out, "best": result["best"], "val": result["val"]}, indent=2))
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate, print_report, write_report

    report = evaluate(_torch_backend(args.weights, args.device), args.data, limit=args.limit,
                      progress=not args.quiet)
    report["weights"] = str(args.weights or "default")
    json_path, csv_path = write_report(report, args.out)
    print_report(report)
    print(f"wrote {json_path} and {csv_path}")
    return 0


def cmd_derain(args) -> int:
    from .inference import derain_paths

    for src, dst in derain_paths(_torch_backend(args.weights, args.device), args.inputs, args.out):
        print(f"{src} -> {dst}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    result = run_demo(_torch_backend(args.weights, args.device), args.out, source=args.input, clip=args.clip,
                      intensity=args.intensity, seed=args.seed, max_frames=args.max_frames)
    print(result.summary())
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__
    from .checkpoint import list_shipped_weights
    from .models import list_models

    info = {"edge_derain": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "models": {m.name: m.description for m in list_models()},
            "shipped_weights": list_shipped_weights()}
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-derain", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_weights(p):
        p.add_argument("--weights", default=None,
                       help="a .safetensors checkpoint (with its .json sidecar) or a shipped name; default: shipped")
        p.add_argument("--device", default="cpu", help="cpu or cuda")

    p = sub.add_parser("train", help="train a registered model on paired/synthetic rain data")
    p.add_argument("--model", required=True)
    p.add_argument("--width", type=float, default=None, help="channel width multiplier (efderain)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="extra model config")
    p.add_argument("--data", required=True, help="data directory (clean_bsd/, rain800/, val/, streaks_garg06/)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and history")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--decay-start", type=float, default=0.4, help="fraction of iters before linear LR decay")
    p.add_argument("--loss", default=None, help="override the model's default loss")
    p.add_argument("--rainmix", choices=["paper", "code"], default=None, help="RainMix augmentation variant")
    p.add_argument("--epoch-iters", type=int, default=None, help="iterations between validations")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N pairs only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.state.pt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="PSNR/SSIM (Y, RGB) per image and mean on a paired folder")
    add_weights(p)
    p.add_argument("--data", required=True, help="folder with rain/ and clean/ (same file names)")
    p.add_argument("--out", default="eval_out", help="folder for eval.json and eval.csv")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("derain", help="derain images or videos")
    add_weights(p)
    p.add_argument("inputs", nargs="+", help="image/video files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_derain)

    p = sub.add_parser("demo", help="render rain on a clean image/video, derain it, report PSNR and FPS")
    add_weights(p)
    p.add_argument("--input", default=None, help="clean image or video (default: shipped sample image)")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--clip", type=int, default=0, help="also make an N-frame panning clip from an image")
    p.add_argument("--intensity", default="heavy", choices=["light", "medium", "heavy"])
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, devices, registered models and shipped weights")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as exc:
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
