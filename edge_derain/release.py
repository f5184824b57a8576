"""``edge-derain ship``: turn a training checkpoint into shipped weights, measured as they ship.

The weights are rounded to FP16 storage first (half the size; the model still computes in FP32), then
evaluated on every evaluation set of the data directory, so the sidecar's numbers and the generated
model card describe exactly the tensors in the package. The training lineage is kept.

Shipping refuses weights that break the ship rule (:func:`ship_rule_violations`): a deraining network must
leave a dry frame nearly as it is and must not make any light-rain image worse than its input, the two
failures a validation-PSNR record alone does not catch (one of our own val-best checkpoints once scored
32.6 dB on dry frames). ``allow_regressions`` ships them anyway and records what was waived.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .backends import TorchBackend
from .checkpoint import SHIPPED_DIR, load_model, read_sidecar, resolve_weights, save_checkpoint
from .data import EVAL_SETS
from .evaluate import evaluate_sets
from .model_card import lineage_of, write_model_card

_KEEP = ("data", "train_config", "git_commit", "step", "averaged_from")
# Output against a clean input, PSNR-Y. A checkpoint that visibly retouched dry frames scored 32.6 dB; the
# shipped weights measure about 46 dB (each card's "Dry frames" line). 40 dB sits between, with room for
# JPEG-level differences.
MIN_DRY_PSNR_Y = 40.0
# The evaluation sets ship_rule_violations reads (names from edge_derain.data.EVAL_SETS).
DRY_SET, LIGHT_SET = "dry", "light"
RULE_SETS = (DRY_SET, LIGHT_SET)


def ship_rule_violations(results: dict, min_dry_psnr_y: float = MIN_DRY_PSNR_Y) -> list[str]:
    """What in ``results`` (:func:`~edge_derain.evaluate.evaluate_sets`) breaks the ship rule, as phrases."""
    problems = []
    dry, light = results.get(DRY_SET), results.get(LIGHT_SET)
    if dry is not None and dry["psnr_y"] < min_dry_psnr_y:
        problems.append(f"dry frames come out at {dry['psnr_y']:.1f} dB PSNR-Y from the clean input "
                        f"(the rule asks >= {min_dry_psnr_y:g} dB)")
    if light is not None and light["losses"]:
        problems.append(f"{light['losses']} of {light['count']} light-rain images come out worse than their input")
    return problems


def ship_weights(weights: str | Path, name: str, data_dir: str | Path, dest: str | Path = SHIPPED_DIR,
                 device: str = "cpu", progress: bool = True, allow_regressions: bool = False) -> Path:
    """Write ``dest/name.{safetensors,json,md}`` from ``weights``; return the new weights path.

    Raises ValueError (nothing written) when the weights break the ship rule, unless ``allow_regressions``."""
    source = resolve_weights(weights)
    meta = read_sidecar(source)
    model = load_model(source, device)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())   # measure what FP16 storage will hold
    if not (Path(data_dir) / "val").is_dir():
        raise FileNotFoundError(f"{data_dir}/val does not exist; shipping measures the weights on the evaluation "
                                f"sets of the data directory (layout: docs/data.md)")
    backend = TorchBackend(model, device)
    # The sets the rule reads come first, so a refusal costs a minute rather than the whole evaluation.
    results = evaluate_sets(backend, data_dir, progress=progress, names=RULE_SETS)
    problems = ship_rule_violations(results)
    if problems and not allow_regressions:
        gains = ", ".join(f"{k} {v['gain_psnr_y']:+.2f} dB" for k, v in results.items() if "gain_psnr_y" in v)
        raise ValueError(f"not shipping {source} ({gains}): {'; '.join(problems)}. Train on (or select) a "
                         f"checkpoint that passes, or pass --allow-regressions to ship it anyway")
    results.update(evaluate_sets(backend, data_dir, progress=progress,
                                 names=tuple(n for n in EVAL_SETS if n not in RULE_SETS)))
    results = {name: results[name] for name in EVAL_SETS if name in results}
    kept = {k: meta[k] for k in _KEEP if k in meta}
    waived = {"ship_rule_waived": problems} if problems else {}
    path = save_checkpoint(Path(dest) / name, model, storage_dtype=torch.float16, **kept, lineage=lineage_of(meta),
                           metrics=results["val"], eval=results, selected=f"shipped from {source.name}", **waived)
    write_model_card(path)
    return path
