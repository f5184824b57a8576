"""Training packs: the whole training set as one compact file of uint8 crops, and the recipe that samples it.

A pack is what ``edge-derain train`` trains on. It is built once from a data directory (the layout in
``docs/data.md``) and is small enough (``DEFAULT_BUDGET_MIB``, the transfer limit to a lent GPU
machine) to travel with the code, so a GPU run needs neither the data folder nor image decoding.
One compressed ``.npz`` (no pickles) holds:

* ``pairs``        uint8 (P, 2, S, S, 3): real (rainy, clean) crops from ``rain800/`` and the training
  part of ``rain800_train/`` (never the held-out pairs of :func:`~edge_derain.data.sets.rain800_split`);
* ``backgrounds``  uint8 (B, S, S, 3): clean crops, half from ``clean_bsd/`` and half from the clean
  halves of the Rain800 training pairs, on which rain is rendered on the fly;
* ``streaks``      uint8 (K, T, T): grey crops of the Garg–Nayar streak maps (RainMix);
* ``meta``         JSON: format version, crop sizes, counts, budget, and a fingerprint of the sources.

``val/`` and ``real/`` are never read. How many crops of each kind fit is decided by the budget: the
compressed size per crop is measured on a sample first, and the pack is rebuilt smaller if it still
overshoots.

:class:`PackedTrainingSet` turns a pack into endless training pairs by the :class:`DataRecipe`: real pairs,
synthetic rain of every preset (``RainRenderer``), RainMix streaks at any opacity, and dry frames.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils import atomic_write_bytes
from .io import list_images, read_image_uint8, to_tensor
from .paired import split_side_by_side
from .rainmix import RainMix
from .sets import rain800_split, scene_split
from .synthetic import NO_RAIN, PRESETS, RainRenderer
from .transforms import random_crop_flip, reflect_pad_to

PACK_VERSION = 1
DEFAULT_BUDGET_MIB = 64.0   # the most that travels with the code to a lent GPU machine
DEFAULT_PACK_CROP = 128
STREAK_CROP = 160
_PAIR_SHARE = 0.62          # of the budget left after the streak maps: real pairs are the scarcest data
_ARRAYS = ("pairs", "backgrounds", "streaks")


class PackError(ValueError):
    """A pack file that cannot be used; the message says why and how to rebuild it."""


@dataclass
class TrainingPack:
    pairs: np.ndarray
    backgrounds: np.ndarray
    streaks: np.ndarray
    meta: dict

    @property
    def crop(self) -> int:
        return int(self.backgrounds.shape[1])

    def summary(self) -> str:
        return (f"{len(self.pairs)} real pair crops, {len(self.backgrounds)} clean background crops "
                f"({self.crop}x{self.crop}), {len(self.streaks)} streak maps")


def _source_files(data_dir: Path) -> dict[str, list]:
    """What a pack is made of: (kind, path) lists, without held-out or validation scenes (``scene_split``)."""
    split = scene_split(data_dir)
    train_pairs, _ = rain800_split(data_dir)
    folder_pairs = []
    if (data_dir / "rain800" / "rain").is_dir():
        clean_dir = data_dir / "rain800" / "clean"
        folder_pairs = [(p, clean_dir / p.name) for p in list_images(data_dir / "rain800" / "rain")
                        if (clean_dir / p.name).is_file() and p.name not in split["excluded_rain800"]]
    bsd = [p for p in (list_images(data_dir / "clean_bsd") if (data_dir / "clean_bsd").is_dir() else [])
           if p.name not in split["excluded_clean_bsd"]]
    streaks = list_images(data_dir / "streaks_garg06") if (data_dir / "streaks_garg06").is_dir() else []
    if not bsd and not train_pairs and not folder_pairs:
        raise FileNotFoundError(f"{data_dir} holds no training data (clean_bsd/, rain800/, rain800_train/); "
                                f"pass a data directory laid out as docs/data.md describes, or a prebuilt --pack")
    return {"side_by_side": train_pairs, "folder_pairs": folder_pairs, "bsd": bsd, "streaks": streaks}


def data_fingerprint(data_dir: str | os.PathLike) -> str:
    """A hash of every source file's name and size: a pack is rebuilt when its sources change."""
    digest = hashlib.sha256()
    for kind, items in sorted(_source_files(Path(data_dir)).items()):
        for item in items:
            for path in (item if isinstance(item, tuple) else (item,)):
                digest.update(f"{kind}/{path.parent.name}/{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _read_pair(item) -> tuple[np.ndarray, np.ndarray]:
    """(rain, clean) uint8 of a side-by-side file or a (rain, clean) path tuple."""
    if isinstance(item, tuple):
        rain, clean = read_image_uint8(item[0]), read_image_uint8(item[1])
        if rain.shape != clean.shape:
            raise ValueError(f"pair {item[0].name} differs in size between rain/ and clean/; fix or remove it")
        return rain, clean
    return split_side_by_side(read_image_uint8(item), item.name)


def _crops(image_list: list, count: int, size: int, reader, rng: np.random.Generator, progress) -> list:
    """``count`` random ``size`` crops, cycling over the sources in a shuffled order (one decode each)."""
    if count <= 0 or not image_list:
        return []
    order = rng.permutation(len(image_list))
    per_source = np.full(len(image_list), count // len(image_list))
    per_source[order[:count % len(image_list)]] += 1
    out = []
    for index in order:
        if per_source[index] == 0:
            continue
        images = reader(image_list[index])
        for _ in range(per_source[index]):
            out.append(np.stack(random_crop_flip(list(images), size, False, rng)))
        progress.update(int(per_source[index]))
    return out


def _compressed_bytes(sample: np.ndarray) -> float:
    """Compressed bytes per item of ``sample`` (as np.savez_compressed stores it)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, a=sample)
    return buffer.tell() / max(1, len(sample))


def _grey(path: Path) -> tuple[np.ndarray]:
    return (read_image_uint8(path)[..., 0],)


def _whole(path: Path) -> tuple[np.ndarray]:
    return (read_image_uint8(path),)


def _clean_half(path: Path) -> tuple[np.ndarray]:
    return (split_side_by_side(read_image_uint8(path), path.name)[1],)


def _plan_counts(sources: dict, budget: float, crop: int, rng: np.random.Generator) -> dict[str, int]:
    """How many crops of each kind fit ``budget`` bytes, from the compressed size of a few sampled crops.

    Streak maps take at most 15 % (they compress well and RainMix needs variety, not many); of the rest
    real pairs get ``_PAIR_SHARE`` (the scarcest data) and clean backgrounds the remainder.
    """
    from tqdm import tqdm

    pair_items = sources["folder_pairs"] + sources["side_by_side"]
    with tqdm(total=0, disable=True) as quiet:
        pairs = np.stack(_crops(pair_items[:6], 6, crop, _read_pair, rng, quiet)) if pair_items else None
        backgrounds = (np.stack(_crops(sources["bsd"][:6], 6, crop, _whole, rng, quiet))[:, 0] if sources["bsd"]
                       else pairs[:, 1])
        streaks = (np.stack(_crops(sources["streaks"][:6], 6, STREAK_CROP, _grey, rng, quiet))[:, 0]
                   if sources["streaks"] else None)
    streak_cost = _compressed_bytes(streaks) if streaks is not None else 1.0
    n_streaks = min(len(sources["streaks"]), int(0.15 * budget / streak_cost))
    left = budget - n_streaks * streak_cost
    pair_cost = _compressed_bytes(pairs) if pairs is not None else 0.0
    n_pairs = int(_PAIR_SHARE * left / pair_cost) if pair_items else 0
    return {"pairs": n_pairs, "backgrounds": int((left - n_pairs * pair_cost) / _compressed_bytes(backgrounds)),
            "streaks": n_streaks}


def _gather(sources: dict, counts: dict[str, int], crop: int, rng: np.random.Generator, progress) -> dict:
    """The crops themselves: uint8 arrays named as in the pack."""
    pairs = _crops(sources["folder_pairs"] + sources["side_by_side"], counts["pairs"], crop, _read_pair, rng, progress)
    n_bg = counts["backgrounds"]
    backgrounds = _crops(sources["bsd"], n_bg if not sources["side_by_side"] else n_bg // 2, crop, _whole, rng,
                         progress)
    backgrounds += _crops(sources["side_by_side"], n_bg - len(backgrounds), crop, _clean_half, rng, progress)
    streaks = _crops(sources["streaks"], counts["streaks"], STREAK_CROP, _grey, rng, progress)
    return {
        "pairs": np.stack(pairs) if pairs else np.zeros((0, 2, crop, crop, 3), np.uint8),
        "backgrounds": np.stack(backgrounds)[:, 0] if backgrounds else np.zeros((0, crop, crop, 3), np.uint8),
        "streaks": np.stack(streaks)[:, 0] if streaks else np.zeros((0, STREAK_CROP, STREAK_CROP), np.uint8),
    }


def build_pack(data_dir: str | os.PathLike, out: str | os.PathLike, budget_mib: float = DEFAULT_BUDGET_MIB,
               crop: int = DEFAULT_PACK_CROP, seed: int = 0, progress: bool = True) -> TrainingPack:
    """Pack the training data of ``data_dir`` into ``out`` (.npz, atomic) within ``budget_mib``; return it."""
    from tqdm import tqdm

    if budget_mib < 1:
        raise ValueError(f"pack budget {budget_mib} MiB is too small; give at least a few MiB")
    data_dir, out = Path(data_dir), Path(out)
    sources = _source_files(data_dir)
    rng = np.random.default_rng([seed, PACK_VERSION])
    limit = budget_mib * 2 ** 20
    counts = _plan_counts(sources, 0.97 * limit, crop, rng)   # headroom for the zip directory and meta
    for attempt in range(4):
        with tqdm(total=sum(counts.values()), disable=not progress, desc=f"pack {data_dir.name}", unit="crop") as bar:
            arrays = _gather(sources, counts, crop, rng, bar)
        meta = {"version": PACK_VERSION, "crop": crop, "streak_crop": STREAK_CROP, "budget_mib": budget_mib,
                "seed": seed, "data": str(data_dir), "fingerprint": data_fingerprint(data_dir),
                "counts": {name: int(len(a)) for name, a in arrays.items()},
                "sources": {"rain800_pairs": len(sources["folder_pairs"]),
                            "rain800_train_pairs": len(sources["side_by_side"]),
                            "clean_bsd": len(sources["bsd"]), "streak_maps": len(sources["streaks"])},
                "never_read": ["val/", "real/", "held-out and validation scenes (edge_derain.data.scene_split)"],
                "excluded": {k: len(v) for k, v in scene_split(data_dir).items() if k != "train"}}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        if buffer.tell() > limit:
            # The sample underestimated: shrink every part by the overshoot and gather again.
            counts = {k: int(n * 0.97 * limit / buffer.tell()) for k, n in counts.items()}
            continue
        atomic_write_bytes(out, buffer.getvalue())
        meta["bytes"] = buffer.tell()
        return TrainingPack(arrays["pairs"], arrays["backgrounds"], arrays["streaks"], meta)
    raise PackError(f"could not fit the training data into {budget_mib} MiB; raise --pack-mib")


def load_pack(path: str | os.PathLike) -> TrainingPack:
    """Read a pack written by :func:`build_pack`; one-line :class:`PackError` when it is not usable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training pack {path} does not exist; build it with 'edge-derain pack --data DIR --out {path}'")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in (*_ARRAYS, "meta") if name not in npz.files]
            if missing:
                raise PackError(f"{path} is not an edge_derain training pack (no {', '.join(missing)}); "
                                f"rebuild it with 'edge-derain pack'")
            meta = json.loads(npz["meta"].tobytes().decode())
            arrays = {name: npz[name] for name in _ARRAYS}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, PackError):
            raise
        raise PackError(f"cannot read training pack {path} ({type(exc).__name__}: {exc}); it is truncated or "
                        f"not a pack: rebuild it with 'edge-derain pack'") from None
    if meta.get("version") != PACK_VERSION:
        raise PackError(f"{path} is pack format {meta.get('version')}, this edge_derain reads {PACK_VERSION}; "
                        f"rebuild it with 'edge-derain pack'")
    shapes_ok = (arrays["pairs"].ndim == 5 and arrays["backgrounds"].ndim == 4 and arrays["streaks"].ndim == 3
                 and all(a.dtype == np.uint8 for a in arrays.values()))
    if not shapes_ok or not len(arrays["pairs"]) + len(arrays["backgrounds"]):
        raise PackError(f"{path} holds no usable crops (shapes {[a.shape for a in arrays.values()]}); rebuild it")
    meta["bytes"] = path.stat().st_size
    return TrainingPack(arrays["pairs"], arrays["backgrounds"], arrays["streaks"], meta)


@dataclass(frozen=True)
class DataRecipe:
    """How a training item is drawn from a pack (probabilities of the four kinds, and rain looks).

    ``pair``: a real Rain800 crop pair. ``dry``: a clean crop given as its own target (a model must leave
    dry frames untouched). ``synthetic``: rain rendered on a clean crop with a preset drawn by
    ``presets`` weights, plus RainMix streaks on top with ``rainmix_on_synthetic``. ``rainmix``: RainMix
    streaks alone on a clean crop, at an opacity drawn from ``rainmix_opacity`` (light to full).
    """

    pair: float = 0.33
    dry: float = 0.1
    synthetic: float = 0.43
    rainmix: float = 0.14
    presets: dict = field(default_factory=lambda: {"drizzle": 1.5, "light": 2.0, "medium": 2.0, "heavy": 2.0,
                                                   "storm": 1.5, "dense": 1.5, "mist": 2.0})
    rainmix_on_synthetic: float = 0.15
    rainmix_variant: str = "paper"
    rainmix_opacity: tuple[float, float] = (0.25, 1.0)

    def __post_init__(self):
        weights = (self.pair, self.dry, self.synthetic, self.rainmix)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"DataRecipe kind probabilities must be >= 0 with a positive sum, got {weights}")
        unknown = [name for name in self.presets if name not in PRESETS and name != NO_RAIN]
        if unknown or not self.presets or min(self.presets.values()) < 0:
            raise ValueError(f"DataRecipe presets must map names from {', '.join(PRESETS)} to weights >= 0, "
                             f"got {self.presets}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rainmix_opacity"] = list(self.rainmix_opacity)
        out["renderers"] = {name: RainRenderer.preset(name).describe() for name in self.presets if name in PRESETS}
        return out


KINDS = ("pair", "dry", "synthetic", "rainmix")


class PackedTrainingSet(Dataset):
    """Endless training pairs from a :class:`TrainingPack` by a :class:`DataRecipe`.

    ``len`` is one nominal epoch (``epoch_size`` items); item ``i`` of epoch ``e`` draws everything from
    ``default_rng([seed, e, i])``, so it does not depend on DataLoader workers or order. Crops are
    ``crop`` x ``crop`` windows of the pack's crops, flipped left-right at random (never up-down or
    rotated: rain falls down).
    """

    def __init__(self, pack: TrainingPack, crop: int, recipe: DataRecipe | None = None, seed: int = 0,
                 epoch_size: int | None = None):
        if crop > pack.crop:
            raise ValueError(f"--crop {crop} is larger than the pack's {pack.crop}x{pack.crop} crops; use a "
                             f"crop <= {pack.crop} or rebuild the pack with --pack-crop {crop}")
        self.pack, self.crop, self.seed = pack, int(crop), int(seed)
        self.recipe = recipe or DataRecipe()
        probs = np.array([self.recipe.pair if len(pack.pairs) else 0.0,
                          self.recipe.dry if len(pack.backgrounds) else 0.0,
                          self.recipe.synthetic if len(pack.backgrounds) else 0.0,
                          self.recipe.rainmix if len(pack.backgrounds) and len(pack.streaks) else 0.0])
        if probs.sum() <= 0:
            raise ValueError("the recipe draws nothing this pack holds; check the pack's counts")
        self.kind_probs = probs / probs.sum()
        names = list(self.recipe.presets)
        weights = np.array([self.recipe.presets[n] for n in names], np.float64)
        self.preset_names, self.preset_probs = names, weights / weights.sum()
        self.renderers = {name: RainRenderer.preset(name) for name in names if name in PRESETS}
        self.rainmix = (RainMix(list(pack.streaks), variant=self.recipe.rainmix_variant,
                                opacity=self.recipe.rainmix_opacity) if len(pack.streaks) else None)
        self.epoch_size = int(epoch_size or len(pack.pairs) + len(pack.backgrounds))
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()   # seen by persistent workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.epoch_size

    def _window(self, images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        images = [reflect_pad_to(img, self.crop, self.crop) for img in images]
        return random_crop_flip(images, self.crop, True, rng)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for an epoch of {len(self)} items")
        rng = np.random.default_rng([self.seed, int(self._epoch), index])
        kind = KINDS[int(rng.choice(len(KINDS), p=self.kind_probs))]
        if kind == "pair":
            source = int(rng.integers(len(self.pack.pairs)))
            rain, clean = (img.astype(np.float32) / 255.0 for img in self._window(list(self.pack.pairs[source]), rng))
            return {"rain": to_tensor(rain), "clean": to_tensor(clean), "name": f"pair{source}"}
        source = int(rng.integers(len(self.pack.backgrounds)))
        (clean,) = self._window([self.pack.backgrounds[source]], rng)
        clean = clean.astype(np.float32) / 255.0
        rain, look = clean, NO_RAIN
        if kind == "synthetic":
            look = self.preset_names[int(rng.choice(len(self.preset_names), p=self.preset_probs))]
            if look != NO_RAIN:
                rain, _ = self.renderers[look].render(clean, rng)
            if self.rainmix is not None and rng.random() < self.recipe.rainmix_on_synthetic:
                rain = self.rainmix.apply(rain, clean, rng)
                look += "+rainmix"
        elif kind == "rainmix":
            rain, look = self.rainmix.apply(clean, clean, rng), "rainmix"
        return {"rain": to_tensor(rain), "clean": to_tensor(clean), "name": f"{kind}:{look}:{source}"}
