"""Data: image I/O, paired and synthetic deraining datasets, the rain renderer and RainMix.

Images in memory are float32 H x W x 3 RGB in [0, 1]; dataset items are
``{"rain": (3, H, W) float32, "clean": (3, H, W) float32, "name": str}``. All randomness comes from
``np.random.default_rng([seed, epoch, index])`` per item (call ``set_epoch`` each epoch).

Data directory layout (``build_training_set`` / ``build_validation_set``): ``clean_bsd/`` (clean
backgrounds for synthetic rain), ``rain800/{rain,clean}/`` (real training pairs), ``streaks_garg06/``
(RainMix streak maps), ``val/{rain,clean}/`` (validation only) and ``real/`` (demos only).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from .io import IMAGE_SUFFIXES, list_images, read_image, read_image_uint8, to_image, to_tensor, write_image
from .paired import PairedFolderDataset, SeededPairDataset
from .rainmix import RainMix, code_blend_weights
from .synthetic import PRESETS, RainRenderer, SyntheticRainDataset, streak_kernel
from .transforms import fit_to_size, random_crop_box, random_crop_flip, reflect_pad_to

__all__ = [
    "IMAGE_SUFFIXES", "PRESETS", "PairedFolderDataset", "RainMix", "RainRenderer", "SeededPairDataset",
    "ShuffledConcatDataset", "SyntheticRainDataset", "build_training_set", "build_validation_set",
    "code_blend_weights", "fit_to_size", "list_images", "random_crop_box", "random_crop_flip", "read_image",
    "read_image_uint8", "reflect_pad_to", "streak_kernel", "to_image", "to_tensor", "write_image",
]

# The synthetic set outweighs Rain800 (whose clean images often differ in tone from the rainy ones,
# which would teach colour shifts): 209 backgrounds x 4 fresh renderings vs 60 real pairs per epoch.
DEFAULT_SYNTHETIC_REPEAT = 4


class ShuffledConcatDataset(ConcatDataset):
    """Concatenated seeded datasets, visited in a fresh permutation per epoch.

    The permutation comes from ``default_rng([seed, epoch])``, so a DataLoader with ``shuffle=False``
    still mixes the sources within batches, deterministically and independent of worker count;
    ``set_epoch`` forwards to every part.
    """

    def __init__(self, datasets: list[Dataset], seed: int = 0):
        super().__init__(datasets)
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # visible to persistent workers
        self._order: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)
        self._epoch.fill_(int(epoch))

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        epoch = int(self._epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self)))
        return super().__getitem__(int(self._order[1][index]))


def _resolve_rainmix(data_dir: Path, rainmix: str | RainMix | None) -> RainMix | None:
    if rainmix is None or isinstance(rainmix, RainMix):
        return rainmix
    if rainmix in ("paper", "code"):
        return RainMix(data_dir / "streaks_garg06", variant=rainmix)
    raise ValueError(f"rainmix must be None, 'paper', 'code' or a RainMix, got {rainmix!r}")


def build_training_set(data_dir: str | os.PathLike, crop: int, seed: int = 0,
                       rainmix: str | RainMix | None = None, synthetic_repeat: int = DEFAULT_SYNTHETIC_REPEAT,
                       include_rain800: bool = True, renderer: RainRenderer | None = None) -> ShuffledConcatDataset:
    """Training pairs: synthetic rain on ``clean_bsd/`` (+ ``rain800/``), random crops and flips.

    Never reads ``val/`` or ``real/``. ``rainmix`` ("paper" / "code" use ``streaks_garg06/``)
    is applied to every item of both parts.
    """
    data_dir = Path(data_dir)
    rainmix = _resolve_rainmix(data_dir, rainmix)
    parts: list[Dataset] = [SyntheticRainDataset(data_dir / "clean_bsd", renderer=renderer, rainmix=rainmix,
                                                 crop=crop, flip=True, seed=seed, repeat=synthetic_repeat)]
    if include_rain800:
        parts.append(PairedFolderDataset(data_dir / "rain800", crop=crop, flip=True, seed=seed, rainmix=rainmix))
    return ShuffledConcatDataset(parts, seed=seed)


def build_validation_set(data_dir: str | os.PathLike) -> PairedFolderDataset:
    """The full-size validation pairs of ``data_dir/val`` (no crop, no flip)."""
    return PairedFolderDataset(Path(data_dir) / "val")
