"""Checkpoints: weights as safetensors + a JSON sidecar that says how to rebuild the model.

``<name>.safetensors`` holds only tensors (safe to load from anywhere); ``<name>.json`` holds the model
name and config for ``create_model``, plus provenance (data, command, metrics, git commit). Resumable
training state (optimizer, step) lives in a separate ``.state.pt`` loaded with ``weights_only=True``.
Shipped weights live in ``edge_derain/weights/`` and are addressed by their stem (e.g.
``efderain_w025``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .models import create_model
from .utils import atomic_path, atomic_write_json

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = "elf_lw"


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def _aliases(model: torch.nn.Module) -> set[str]:
    """State-dict names that are a second name of a tensor listed earlier (e.g. one PReLU shared by
    every block of a sub-network, spec §0.5). safetensors refuses shared storage, so only the first
    name is stored; loading it fills every alias, since they are one Parameter."""
    seen, aliases = set(), set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.add(name)
        seen.add(id(tensor))
    return aliases


def save_checkpoint(path: str | Path, model: torch.nn.Module, storage_dtype: torch.dtype = torch.float32,
                    **metadata) -> Path:
    """Write ``path`` (.safetensors) and its JSON sidecar atomically; return the weights path.

    ``storage_dtype=torch.float16`` halves the file (shipped weights); floating tensors are rounded to it
    and load back into FP32 parameters. The sidecar records the storage type and the parameter count.
    """
    path = Path(path).with_suffix(".safetensors")
    aliases = _aliases(model)
    state = {k: v.detach().to("cpu", storage_dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items() if k not in aliases}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    sidecar = {"model": model.model_name, "config": model.model_config, **metadata,
               "storage": str(storage_dtype).replace("torch.", ""),
               "parameters": sum(p.numel() for p in model.parameters())}
    atomic_write_json(sidecar_path(path), sidecar)
    return path


def list_shipped_weights() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.safetensors"))


def resolve_weights(spec: str | Path | None) -> Path:
    """A file path, or the stem of shipped weights; None means the project's default weights."""
    spec = DEFAULT_WEIGHTS if spec is None else spec
    path = Path(spec)
    if path.suffix == "" and not path.exists():
        path = SHIPPED_DIR / f"{spec}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"weights {str(spec)!r} not found; pass a .safetensors file written by "
                                f"'edge-derain train' or one of the shipped names: {', '.join(list_shipped_weights())}")
    return path


def read_sidecar(weights: str | Path) -> dict:
    path = sidecar_path(Path(weights))
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: weights need the JSON sidecar written beside them by "
                                f"'edge-derain train' (it names the model and its config)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it from the training output") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise ValueError(f"{path} has no 'model' name; it is not an edge_derain checkpoint sidecar")
    if not isinstance(meta.get("config", {}), dict):
        raise ValueError(f"{path}: 'config' must be an object of model settings, got {type(meta['config']).__name__}")
    return meta


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header (nothing is loaded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as safetensors ({exc}); re-download or re-train it") from None


def load_model(weights: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model named by the sidecar and load its weights (eval mode); a damaged sidecar or a
    file that does not fit its model fails in one line."""
    path = resolve_weights(weights)
    meta = read_sidecar(path)
    try:
        model = create_model(meta["model"], **meta.get("config", {}))
    except (TypeError, ValueError, KeyError, ZeroDivisionError, RuntimeError, MemoryError) as exc:
        # a hand-edited or damaged config the constructor rejects (or cannot allocate)
        raise ValueError(f"{sidecar_path(path)} does not describe a buildable model ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); restore it from the training output") from None
    stored = _stored_shapes(path)
    aliases = _aliases(model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in aliases}
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    resized = [k for k in expected if k in stored and stored[k] != expected[k]]
    if missing or unexpected or resized:
        example = (missing or unexpected or resized)[0]
        raise ValueError(f"{path} does not fit model {meta['model']} {meta.get('config', {})}: "
                         f"{len(missing)} missing, {len(unexpected)} unexpected, {len(resized)} resized tensors "
                         f"(e.g. {example}); check the sidecar's config")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read {path} as safetensors ({exc}); re-download or re-train it") from None
    model.load_state_dict(state, strict=False)  # strict=False only for the aliases; checked above
    return model.to(device).eval()


def save_training_state(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | Path) -> dict:
    # weights_only=True: the state is plain tensors/dicts/numbers, so no pickle code can run on load.
    return torch.load(path, map_location="cpu", weights_only=True)
