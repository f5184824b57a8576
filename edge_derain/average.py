"""``edge-derain average``: the uniform average of checkpoints of one model (a "model soup").

Checkpoints of one network fine-tuned from the same start lie in one basin of the loss, and their mean
is usually at least as good as each and less noisy than any single validation pick (Wortsman et al.,
2022, "Model soups"). The average is uniform on purpose: a mixing ratio chosen by validation score would
fit the validation set.

The sidecar is written by the tool, like every sidecar: the parents' training runs (each counted once,
so a run two parents share, or two checkpoints of one run, is not counted twice), one lineage record for
the averaging itself, and ``averaged_from`` naming every parent with its step and SHA-256. The first
checkpoint's data recipe and training config stand for the soup (a card shows one recipe); list the
checkpoint whose recipe is newest first.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .checkpoint import load_model, read_sidecar, resolve_weights, save_checkpoint
from .model_card import lineage_of, write_model_card
from .utils import file_sha256, git_commit


def _run_identity(run: dict) -> str:
    """What names one training run across its checkpoints: its start time and machine (a run's record grows
    with every checkpoint it writes); records without a start time are told apart by their whole content."""
    if run.get("started"):
        return f"{run['started']}|{run.get('device_name')}|{run.get('init')}"
    return json.dumps(run, sort_keys=True, default=str)


def merged_lineage(metas: list[dict]) -> list[dict]:
    """Every training run behind any of the checkpoints, once each, in the order first seen; checkpoints of
    one run at different steps (the usual soup) contribute that run once, as far as the furthest got."""
    runs: dict[str, dict] = {}
    for meta in metas:
        for run in lineage_of(meta):
            key = _run_identity(run)
            if key not in runs or run.get("step", 0) > runs[key].get("step", 0):
                runs[key] = run   # replacing a key keeps its first-seen position
    return list(runs.values())


def average_weights(weights: list[str | Path], out: str | Path) -> Path:
    """Write ``out`` (.safetensors + sidecar + model card): the element-wise mean of ``weights``."""
    if len(weights) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(weights)}; pass two or more weights")
    start = time.perf_counter()
    paths = [resolve_weights(w) for w in weights]
    metas = [read_sidecar(p) for p in paths]
    first = metas[0]
    for path, meta in zip(paths[1:], metas[1:]):
        if meta["model"] != first["model"] or meta.get("config", {}) != first.get("config", {}):
            raise ValueError(f"{path} holds {meta['model']} {meta.get('config', {})}, not {first['model']} "
                             f"{first.get('config', {})}; only checkpoints of one model and config can be averaged")
    models = [load_model(p) for p in paths]
    soup = models[0]
    with torch.no_grad():
        states = [m.state_dict() for m in models]
        for name, tensor in soup.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.stack([s[name] for s in states]).mean(dim=0))
            elif any(not torch.equal(tensor, s[name]) for s in states[1:]):
                raise ValueError(f"{paths[0]} and the other checkpoints differ in the integer tensor {name}; "
                                 f"they cannot be averaged")
    parents = [{"path": str(p), "sha256": file_sha256(p), "step": m.get("step")} for p, m in zip(paths, metas)]
    record = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": "cpu",
              "device_name": f"uniform average of {len(paths)} checkpoints (edge-derain average)",
              "averaged": [p.name for p in paths], "iters": 0, "step": max(int(m.get("step", 0)) for m in metas),
              "wall_s": round(time.perf_counter() - start, 1)}
    kept = {k: first[k] for k in ("data", "train_config") if k in first}
    path = save_checkpoint(out, soup, **kept, git_commit=git_commit(), step=record["step"],
                           lineage=merged_lineage(metas) + [record], averaged_from=parents,
                           selected=f"parents {', '.join(p.name for p in paths)}")
    write_model_card(path)
    return path
