"""Sub-commands that make weights: ``train``, ``pack``, ``presets``, ``average``, ``ship``, ``card``, ``import``."""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_device, add_model_arg, add_quiet, add_seed, model_config, parse_kv


def cmd_train(args) -> int:
    from ..train import TrainConfig, train

    if args.model == "rain_autoencoder":
        from ..train import train_rain_autoencoder

        path = train_rain_autoencoder(args.data, Path(args.out) / "rain_autoencoder", iters=args.iters,
                                      batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                                      device=args.device, progress=not args.quiet)
        print(f"wrote {path}; train RECA-Net with --loss-arg autoencoder={path}")
        return 0
    cfg = TrainConfig(model=args.model, data=args.data, out=args.out, model_config=model_config(args),
                      iters=args.iters, batch=args.batch, crop=args.crop, lr=args.lr, betas=tuple(args.betas),
                      decay_start=args.decay_start, ema=args.ema, loss=args.loss, loss_config=parse_kv(args.loss_arg),
                      rainmix=args.rainmix, recipe=parse_kv(args.recipe_arg), pack=args.pack,
                      pack_mib=args.pack_mib, init=args.init, time_limit_min=args.time_limit,
                      epoch_iters=args.epoch_iters, amp=args.amp, gpu_share=args.gpu_share, seed=args.seed,
                      workers=args.workers,
                      device=args.device, resume=args.resume, val_limit=args.val_limit)
    result = train(cfg, progress=not args.quiet)
    print(json.dumps({"out": args.out, "best": result["best"], "last": result["last"], "val": result["val"],
                      "eval": result["eval"]}, indent=2))
    return 0


def cmd_pack(args) -> int:
    from ..data import build_pack

    pack = build_pack(args.data, args.out, budget_mib=args.pack_mib, crop=args.crop, seed=args.seed,
                      progress=not args.quiet)
    print(f"wrote {args.out} ({pack.meta['bytes'] / 2 ** 20:.1f} MiB): {pack.summary()}")
    return 0


def cmd_presets(args) -> int:
    from ..data import read_image, write_image
    from ..data.preview import preset_grid
    from ..demo import SAMPLE_IMAGE

    write_image(args.out, preset_grid(read_image(args.image or SAMPLE_IMAGE), seed=args.seed))
    print(f"wrote {args.out}")
    return 0


def cmd_average(args) -> int:
    from ..average import average_weights

    path = average_weights(args.weights, args.out)
    print(f"wrote {path} ({len(args.weights)} checkpoints averaged); measure and ship it with "
          f"'edge-derain ship {path} --name NAME --data DIR'")
    return 0


def cmd_ship(args) -> int:
    from ..release import ship_weights

    path = ship_weights(args.weights, args.name, args.data, dest=args.dest, device=args.device,
                        progress=not args.quiet, allow_regressions=args.allow_regressions)
    print(f"wrote {path}, {path.with_suffix('.json').name} and {path.with_suffix('.md').name}")
    return 0


def cmd_card(args) -> int:
    from ..checkpoint import resolve_weights
    from ..model_card import write_model_card

    print(f"wrote {write_model_card(resolve_weights(args.weights))}")
    return 0


def cmd_import(args) -> int:
    from ..checkpoint import read_sidecar
    from ..convert import import_official

    path = import_official(args.model, args.checkpoint, args.out, model_config(args))
    meta = read_sidecar(path)
    config = ", ".join(f"{k}={v!r}" for k, v in meta["config"].items())
    print(f"wrote {path} and {path.with_suffix('.json').name}: {meta['model']}({config}), "
          f"{meta['parameters']:,} parameters, from {meta['imported_from']['layout']}")
    print(f"next: edge-derain eval --weights {path} --data DIR; edge-derain export --weights {path} --out DIR")
    return 0


def _add_train_data_args(p) -> None:
    p.add_argument("--model", required=True,
                   help="a registered model, or rain_autoencoder (RECA-Net's embedding target, trained first)")
    p.add_argument("--width", type=float, default=None, help="channel width multiplier (efderain)")
    add_model_arg(p, help="extra model config")
    p.add_argument("--data", default=None, help="data directory (clean_bsd/, rain800/, rain800_train/, streaks_garg06/; "
                                                "val/ for validation); packed into OUT/train_pack.npz on first use")
    p.add_argument("--pack", default=None, help="train on this pack (from 'edge-derain pack') instead of packing --data")
    p.add_argument("--pack-mib", type=float, default=64.0, help="size budget of the pack built from --data")
    p.add_argument("--out", required=True, help="output folder for checkpoints, model cards and history")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these weights (a shipped name such as efderain_w025, or a .safetensors) and "
                        "extend their training lineage")


def _add_train_recipe_args(p) -> None:
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8, help="batch size; 0 = the biggest that fits the GPU")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate at batch 16 (scaled by sqrt(batch/16))")
    p.add_argument("--betas", type=float, nargs=2, default=[0.5, 0.999],
                   help="Adam betas (EfDeRain's official 0.5 0.999; ELF/DANet use 0.9 0.999)")
    p.add_argument("--decay-start", type=float, default=0.4, help="fraction of iters before linear LR decay")
    p.add_argument("--ema", type=float, default=0.999,
                   help="decay of the moving average of the weights that is validated and saved; 0 = raw weights")
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


def _add_train_run_args(p) -> None:
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"],
                   help="mixed precision: auto = bf16 (else fp16) on a GPU, off on the CPU")
    p.add_argument("--gpu-share", type=float, default=1.0,
                   help="fraction of the GPU's memory this run sizes its batch for (runs sharing one GPU)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N pairs only")
    add_seed(p)
    p.add_argument("--workers", type=int, default=-1, help="data loader workers; -1 = auto")
    add_device(p, default="auto")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.state.pt")
    add_quiet(p)


def _register_train(sub) -> None:
    p = sub.add_parser("train", help="train a registered model on paired/synthetic rain data")
    _add_train_data_args(p)
    _add_train_recipe_args(p)
    _add_train_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pack", help="pack the training data into one compact file of uint8 crops")
    p.add_argument("--data", required=True, help="data directory (layout: docs/data.md)")
    p.add_argument("--out", required=True, help="the pack file (.npz)")
    p.add_argument("--pack-mib", type=float, default=64.0, help="size budget (64 MiB travels to a lent GPU)")
    p.add_argument("--crop", type=int, default=128, help="crop size stored (training crops are <= this)")
    add_seed(p)
    add_quiet(p)
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("presets", help="a labelled grid of the synthetic rain presets on an image (PNG)")
    p.add_argument("--image", default=None, help="clean image (default: the shipped sample)")
    p.add_argument("--out", default="rain_presets.png")
    add_seed(p)
    p.set_defaults(func=cmd_presets)


def _register_release(sub) -> None:
    p = sub.add_parser("average", help="the uniform average of checkpoints of one model (a model soup), "
                                       "with the lineage of every parent")
    p.add_argument("weights", nargs="+", help="two or more .safetensors checkpoints (or shipped names) of one model")
    p.add_argument("--out", required=True, help="weights to write: OUT.safetensors + OUT.json sidecar + OUT.md card")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("ship", help="store trained weights as shipped FP16 weights, measured, with a model card")
    p.add_argument("weights", help="a .safetensors checkpoint from 'edge-derain train'")
    p.add_argument("--name", required=True, help="the shipped name, e.g. efderain_w025")
    p.add_argument("--data", required=True, help="data directory with the evaluation sets (val/, rain800_train/)")
    p.add_argument("--dest", default=str(Path(__file__).resolve().parent.parent / "weights"),
                   help="folder of the shipped weights")
    p.add_argument("--allow-regressions", action="store_true",
                   help="ship even if dry frames come out altered (< 40 dB PSNR-Y) or a light-rain image gets "
                        "worse; the sidecar and card record what was waived")
    add_device(p)
    add_quiet(p)
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
    add_model_arg(p, help="model config the checkpoint must have, e.g. channels=48 (read from its shapes when omitted)")
    p.set_defaults(func=cmd_import)


def register(sub) -> None:
    _register_train(sub)
    _register_release(sub)
