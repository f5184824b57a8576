"""``edge-derain ship``: turn a training checkpoint into shipped weights, measured as they ship.

The weights are rounded to FP16 storage first (half the size; the model still computes in FP32), then
evaluated on every evaluation set of the data directory, so the sidecar's numbers and the generated
model card describe exactly the tensors in the package. The training lineage is kept.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .backends import TorchBackend
from .checkpoint import SHIPPED_DIR, load_model, read_sidecar, resolve_weights, save_checkpoint
from .evaluate import evaluate_sets
from .model_card import lineage_of, write_model_card

_KEEP = ("data", "train_config", "git_commit", "step")


def ship_weights(weights: str | Path, name: str, data_dir: str | Path, dest: str | Path = SHIPPED_DIR,
                 device: str = "cpu", progress: bool = True) -> Path:
    """Write ``dest/name.{safetensors,json,md}`` from ``weights``; return the new weights path."""
    source = resolve_weights(weights)
    meta = read_sidecar(source)
    model = load_model(source, device)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())   # measure what FP16 storage will hold
    results = evaluate_sets(TorchBackend(model, device), data_dir, progress=progress)
    if "val" not in results:
        raise FileNotFoundError(f"{data_dir}/val does not exist; shipping measures the weights on the evaluation "
                                f"sets of the data directory (layout: docs/data.md)")
    kept = {k: meta[k] for k in _KEEP if k in meta}
    path = save_checkpoint(Path(dest) / name, model, storage_dtype=torch.float16, **kept, lineage=lineage_of(meta),
                           metrics=results["val"],
                           eval=results, selected=f"shipped from {source.name}")
    write_model_card(path)
    return path
