"""Deterministic paired datasets: the shared base class and folder pairs (``rain/`` + ``clean/``)."""
from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import list_images, read_image, to_tensor
from .rainmix import RainMix
from .transforms import random_crop_flip


class SeededPairDataset(Dataset, abc.ABC):
    """Base of the (rain, clean) datasets: ``len = sources * repeat``, fully seeded randomness.

    Item ``i`` in epoch ``e`` draws everything (crop, flip, synthetic rain, RainMix) from
    ``np.random.default_rng([seed, e, i])``, so it does not depend on DataLoader worker count or
    order, and re-running an epoch reproduces it exactly. Item ``i`` shows source ``i % sources``;
    ``repeat > 1`` lets a small set fill an epoch with fresh random crops of the same images.

    Subclasses implement ``num_sources`` and ``load_pair(source, rng) -> (rain, clean, name)``,
    returning float32 H x W x 3 images already cropped/flipped.
    """

    def __init__(self, *, crop: int | None, flip: bool, seed: int, repeat: int,
                 rainmix: RainMix | None, rainmix_prob: float):
        if crop is not None and (not isinstance(crop, (int, np.integer)) or crop < 1):
            raise ValueError(f"crop must be a positive int or None (full images), got {crop!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not isinstance(repeat, (int, np.integer)) or repeat < 1:
            raise ValueError(f"repeat must be a positive int, got {repeat!r}")
        if not 0.0 <= rainmix_prob <= 1.0:
            raise ValueError(f"rainmix_prob must be in [0, 1], got {rainmix_prob}")
        self.crop, self.flip, self.seed, self.repeat = crop, flip, int(seed), int(repeat)
        self.rainmix, self.rainmix_prob = rainmix, rainmix_prob
        # The epoch lives in shared memory so that persistent DataLoader workers (which keep their own
        # copy of the dataset between epochs) see set_epoch() calls made in the main process.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    @abc.abstractmethod
    def num_sources(self) -> int:
        """How many distinct source images (or pairs) the dataset draws from."""

    @abc.abstractmethod
    def load_pair(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        """Source ``source`` as ``(rain, clean, name)``, cropped/flipped with draws from ``rng``."""

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.num_sources * self.repeat

    def item_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        rng = self.item_rng(index)
        rain, clean, name = self.load_pair(index % self.num_sources, rng)
        if self.rainmix is not None and rng.random() < self.rainmix_prob:
            rain = self.rainmix.apply(rain, clean, rng)
        return {"rain": to_tensor(rain), "clean": to_tensor(clean), "name": name}


class PairedFolderDataset(SeededPairDataset):
    """Pairs ``root/rain/<name>`` + ``root/clean/<name>`` (same file name = pair), e.g. ``rain800/``, ``val/``.

    ``crop=None`` yields full-size images; sizes may differ between pairs (Rain800 ranges from
    400x268 to 1024x768), so batch those with ``batch_size=1`` or set ``crop``. With ``crop``, images
    smaller than the crop are reflect-padded. ``rainmix`` (applied with probability ``rainmix_prob``;
    1.0 = every item, as the official code does when RainMix is on) adds real streaks to the crop.
    """

    def __init__(self, root: str | os.PathLike, crop: int | None = None, flip: bool = False, seed: int = 0,
                 repeat: int = 1, rainmix: RainMix | None = None, rainmix_prob: float = 1.0):
        super().__init__(crop=crop, flip=flip, seed=seed, repeat=repeat, rainmix=rainmix,
                         rainmix_prob=rainmix_prob)
        self.root = Path(root)
        missing = [sub for sub in ("rain", "clean") if not (self.root / sub).is_dir()]
        if missing:
            raise FileNotFoundError(f"paired folder {self.root} has no {' or '.join(s + '/' for s in missing)}; "
                                    f"expected {self.root}/rain and {self.root}/clean with matching file names")
        rain = {p.name: p for p in list_images(self.root / "rain")}
        clean = {p.name: p for p in list_images(self.root / "clean")}
        only_rain, only_clean = sorted(rain.keys() - clean.keys()), sorted(clean.keys() - rain.keys())
        if only_rain or only_clean:
            example = f"rain/{only_rain[0]}" if only_rain else f"clean/{only_clean[0]}"
            raise ValueError(f"{self.root}: {len(only_rain)} rain image(s) have no clean partner and "
                             f"{len(only_clean)} clean image(s) have no rain partner (e.g. {example}); "
                             f"pairs must share the file name")
        self.pairs = [(rain[name], clean[name]) for name in sorted(rain)]

    @property
    def num_sources(self) -> int:
        return len(self.pairs)

    @property
    def files(self) -> list[Path]:
        """Every file this dataset reads."""
        return [path for pair in self.pairs for path in pair]

    def load_pair(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        rain_path, clean_path = self.pairs[source]
        rain, clean = read_image(rain_path), read_image(clean_path)
        if rain.shape != clean.shape:
            raise ValueError(f"pair {rain_path.name} in {self.root} differs in size: rain {rain.shape[1]}x"
                             f"{rain.shape[0]}, clean {clean.shape[1]}x{clean.shape[0]}; fix or remove the pair")
        rain, clean = random_crop_flip([rain, clean], self.crop, self.flip, rng)
        return rain, clean, rain_path.name


def split_side_by_side(image: np.ndarray, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """``(rain, clean)`` from one side-by-side image: clean on the left half, rainy on the right (split at
    ``width // 2``), the original form of the Rain800 (ID-CGAN) training set."""
    half = image.shape[1] // 2
    if half < 1:
        raise ValueError(f"{name} is {image.shape[1]} px wide: a side-by-side pair needs clean | rainy halves")
    return image[:, half:2 * half], image[:, :half]


class SideBySidePairDataset(SeededPairDataset):
    """Pairs stored one per file, clean on the left half and rainy on the right (``rain800_train/``).

    ``files`` selects a subset (e.g. the training or held-out part of :func:`rain800_split`); by default
    every image of ``root``.
    """

    def __init__(self, root: str | os.PathLike, files: list[Path] | None = None, crop: int | None = None,
                 flip: bool = False, seed: int = 0, repeat: int = 1, rainmix: RainMix | None = None,
                 rainmix_prob: float = 1.0):
        super().__init__(crop=crop, flip=flip, seed=seed, repeat=repeat, rainmix=rainmix,
                         rainmix_prob=rainmix_prob)
        self.root = Path(root)
        self.files = list(files) if files is not None else list_images(self.root)
        if not self.files:
            raise ValueError(f"no side-by-side pairs selected in {self.root}; pass a folder of clean|rainy images")

    @property
    def num_sources(self) -> int:
        return len(self.files)

    def load_pair(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        path = self.files[source]
        rain, clean = split_side_by_side(read_image(path), path.name)
        rain, clean = random_crop_flip([rain, clean], self.crop, self.flip, rng)
        return rain, clean, path.name


class DryDataset(SeededPairDataset):
    """Clean images as both input and target: how much a model changes a frame with no rain in it."""

    def __init__(self, files: list[Path]):
        super().__init__(crop=None, flip=False, seed=0, repeat=1, rainmix=None, rainmix_prob=1.0)
        self.files = list(files)
        if not self.files:
            raise ValueError("DryDataset got no clean images")

    @property
    def num_sources(self) -> int:
        return len(self.files)

    def load_pair(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        image = read_image(self.files[source])
        return image, image, self.files[source].name
