"""Model cards written by the tool, from the checkpoint sidecar alone (nothing in a card is typed by hand).

``write_model_card(weights)`` renders ``<weights>.md`` from ``<weights>.json``: what the model is, how
much training it has had on which machines (the ``lineage`` that ``edge-derain train --init`` carries
from run to run), the data recipe, and the measured quality on every evaluation set in the sidecar's
``eval`` (``edge_derain.data.EVAL_SETS``), with the cases where it does worse than its input spelled out.
``edge-derain ship`` and ``edge-derain train`` call it; ``edge-derain card WEIGHTS`` re-renders one.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import read_sidecar, sidecar_path
from .utils import atomic_write_bytes

EVAL_SET_TITLES = {
    "val": "`val/` (15 SIRR/JORDER synthetic pairs, never trained on)",
    "rain800-holdout": "Rain800 held-out scenes (`rain800-holdout`, never trained on)",
    "light": "light rain (`light`: the light preset on the `val/` clean images)",
    "drizzle": "drizzle (`drizzle`: faint streaks on the `val/` clean images, nearly dry)",
    "dry": "dry frames (`dry`: the `val/` clean images as input)",
}


def lineage_of(meta: dict) -> list[dict]:
    """The training runs behind a checkpoint (its sidecar's ``lineage``).

    Sidecars written before lineages existed record one run: its config, last step and machine.
    """
    if "lineage" in meta:
        return list(meta["lineage"])
    then = meta.get("train_config")
    if not then:
        return []
    return [{"started": None, "device": "cuda" if str(then.get("device", "")).startswith("cuda") else "cpu",
             "device_name": meta.get("trained_on", "unrecorded"), "batch": then.get("batch"),
             "crop": then.get("crop"), "lr": then.get("lr", 0.0), "amp": "off", "init": None,
             "iters": int(meta.get("step", 0)), "wall_s": 60.0 * float(then.get("time_limit_min") or 0.0),
             "step": int(meta.get("step", 0))}]


def lineage_totals(lineage: list[dict]) -> dict:
    """Iterations, GPU minutes and CPU hours summed over a checkpoint's training runs."""
    gpu_s = sum(run.get("wall_s", 0.0) for run in lineage if run.get("device") == "cuda")
    cpu_s = sum(run.get("wall_s", 0.0) for run in lineage if run.get("device") != "cuda")
    return {"runs": len(lineage), "iters": sum(run.get("iters", 0) for run in lineage),
            "gpu_minutes": gpu_s / 60.0, "cpu_hours": cpu_s / 3600.0}


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _lineage_rows(lineage: list[dict]) -> list[str]:
    rows = ["| # | started (UTC) | device | iterations | wall time | batch x crop | peak LR | precision | started from |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(lineage, 1):
        wall = run.get("wall_s", 0.0)
        wall_text = f"{wall / 60:.1f} min" if wall < 5400 else f"{wall / 3600:.2f} h"
        if run.get("averaged"):   # `edge-derain average`: no training, a mean of the checkpoints named
            rows.append(f"| {i} | {run.get('started')} | {run['device_name']} | 0 | {wall_text} | — | — | — | "
                        f"{', '.join(run['averaged'])} |")
            continue
        rows.append(f"| {i} | {run.get('started') or 'not recorded'} | {run.get('device_name', run.get('device', '?'))} | "
                    f"{run.get('iters', 0):,} | {wall_text} | {run.get('batch', '?')} x {run.get('crop', '?')}² | "
                    f"{run.get('lr', 0):.2e} | {run.get('amp', 'off')} | {run.get('init') or 'random init'} |")
    return rows


def _eval_rows(results: dict) -> list[str]:
    rows = ["| set | pairs | input PSNR-Y | output PSNR-Y | gain | SSIM-Y in → out | images worse than input |",
            "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        if name == "dry":
            continue
        rows.append(f"| {EVAL_SET_TITLES.get(name, name)} | {m['count']} | {_fmt(m['input_psnr_y'])} | "
                    f"{_fmt(m['psnr_y'])} | **{m['gain_psnr_y']:+.2f} dB** | {_fmt(m['input_ssim_y'], 4)} → "
                    f"{_fmt(m['ssim_y'], 4)} | {m.get('losses', '—')} |")
    return rows


def _recipe_lines(data: dict | str) -> list[str]:
    if isinstance(data, str):   # sidecars written before training packs describe their data in words
        return [f"- {data}"]
    pack, recipe = data.get("pack") or {}, data.get("recipe") or {}
    counts = pack.get("counts", {})
    lines = []
    if counts:
        lines.append(f"- training pack ({pack.get('bytes', 0) / 2 ** 20:.1f} MiB, `edge-derain pack`): "
                     f"{counts.get('pairs', 0)} real Rain800 crop pairs, {counts.get('backgrounds', 0)} clean "
                     f"background crops, {counts.get('streaks', 0)} Garg–Nayar streak maps, {pack.get('crop')}x"
                     f"{pack.get('crop')} crops; never read: {', '.join(pack.get('never_read', []))}")
    if recipe:
        presets = ", ".join(f"{k} {v:g}" for k, v in recipe.get("presets", {}).items())
        lines.append(f"- items: real pairs {recipe.get('pair', 0):.0%}, synthetic rain {recipe.get('synthetic', 0):.0%} "
                     f"(preset weights: {presets}; RainMix on top {recipe.get('rainmix_on_synthetic', 0):.0%}), "
                     f"RainMix alone {recipe.get('rainmix', 0):.0%} (opacity {recipe.get('rainmix_opacity')}), "
                     f"dry frames {recipe.get('dry', 0):.0%}")
    return lines


def _limits(results: dict) -> list[str]:
    lines = []
    for name, m in results.items():
        if name == "dry":
            lines.append(f"- Dry frames: given a clean image, the output is {m['psnr_y']:.2f} dB PSNR-Y from it "
                         f"(SSIM-Y {m['ssim_y']:.4f}); gate deraining on rain in pipelines (`--gate`) to leave dry "
                         f"frames exactly untouched.")
        elif m.get("losses"):
            lines.append(f"- On {EVAL_SET_TITLES.get(name, name)} it does worse than its input on {m['losses']} of "
                         f"{m['count']} images.")
    lines.append("- The evaluation sets here are small and partly synthetic; no standard benchmark (Rain100H/L, "
                 "Rain1400, SPA) is in the development data.")
    return lines


def _checkpoint_row(meta: dict) -> str:
    parents = meta.get("averaged_from")
    if parents:   # `edge-derain average`: no single step to name
        steps = ", ".join(str(p.get("step", "?")) for p in parents)
        return (f"| checkpoint | uniform average of {len(parents)} checkpoints (steps {steps}; SHA-256 in the "
                f"sidecar's `averaged_from`), {meta.get('selected', 'as averaged')} |")
    return f"| checkpoint | step {meta.get('step', '?')} of the last run, {meta.get('selected', 'the last one')} |"


def render_model_card(meta: dict, name: str) -> str:
    """The Markdown model card of a checkpoint whose sidecar is ``meta``."""
    from .models import get_entry

    entry = get_entry(meta["model"])
    totals = lineage_totals(lineage_of(meta))
    cfg = meta.get("train_config", {})
    results = meta.get("eval") or {}
    lines = [f"# Model card: `{name}`", "",
             f"Generated by `edge-derain card` from `{name}.json`; do not edit by hand (re-run the tool).", "",
             "| | |", "|---|---|",
             f"| architecture | {entry.description}: `create_model("
             f"{', '.join([repr(meta['model'])] + [f'{k}={v!r}' for k, v in meta.get('config', {}).items()])})` |",
             f"| size | {meta.get('parameters', '?'):,} parameters, stored as {meta.get('storage', 'float32')} |"
             if isinstance(meta.get("parameters"), int) else
             f"| size | stored as {meta.get('storage', 'float32')} |",
             "| input / output | RGB in [0, 1], NCHW, any size (padded to the model's multiple and cropped back) |",
             f"| training so far | {totals['iters']:,} iterations in {totals['runs']} run(s): "
             f"{totals['gpu_minutes']:.1f} GPU minutes, {totals['cpu_hours']:.2f} CPU hours |",
             f"| loss, optimiser | `{cfg.get('loss') or entry.default_loss}` loss; Adam betas {cfg.get('betas')}, "
             f"constant LR then linear decay to 0 from {cfg.get('decay_start', 0):.0%} of each run |",
             _checkpoint_row(meta),
             "", "## Quality", ""]
    if results:
        lines += _eval_rows(results)
        lines += ["", "PSNR/SSIM on BT.601 luma (Y, 0..255), as deraining papers report. "
                      "`edge-derain eval --weights " + name + " --data DATA --set SET` reproduces each row."]
    else:
        lines.append("Not evaluated yet: run `edge-derain ship` or `edge-derain train` with `--data`.")
    lines += ["", "## Training runs", ""] + _lineage_rows(lineage_of(meta))
    lines += ["", "## Data", ""] + (_recipe_lines(meta.get("data") or {}) or ["- not recorded"])
    lines += ["", "## Limits", ""] + _limits(results)
    if meta.get("ship_rule_waived"):
        lines.append("- Shipped with `--allow-regressions`, against the ship rule of `edge_derain.release`: "
                     + "; ".join(meta["ship_rule_waived"]) + ".")
    return "\n".join(lines) + "\n"


def write_model_card(weights: str | Path, name: str | None = None) -> Path:
    """Render the card of ``weights`` (a .safetensors with its sidecar) to ``<weights>.md``, atomically."""
    weights = Path(weights)
    meta = read_sidecar(weights)
    path = sidecar_path(weights).with_suffix(".md")
    atomic_write_bytes(path, render_model_card(meta, name or weights.stem).encode())
    return path
