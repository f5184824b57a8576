"""Model registry: ``create_model(name, **config)`` builds any registered architecture (timm style).

Each architecture file registers a factory with the loss it is trained with by default; the training
loop, the exporter and the pipeline only ever go through this registry, so a new model is one file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    default_loss: str
    description: str
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, default_loss: str, description: str, **defaults):
    """Class/function decorator adding an architecture to the registry under ``name``."""
    def decorator(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice; pick another name")
        _REGISTRY[name] = ModelEntry(name, factory, default_loss, description, dict(defaults))
        return factory
    return decorator


def list_models() -> list[ModelEntry]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, **config) -> nn.Module:
    """Instantiate ``name`` with ``config`` (merged over the entry's defaults).

    The resolved name and config are stored on the module (``model_name``, ``model_config``) so a
    checkpoint sidecar can rebuild exactly this model.
    """
    entry = get_entry(name)
    merged = {**entry.defaults, **config}
    try:
        model = entry.factory(**merged)
    except TypeError as exc:
        raise ValueError(f"bad config for model {name!r}: {exc}") from None
    model.model_name = name
    model.model_config = merged
    return model
