"""Named splits of a data directory (the layout in ``docs/data.md``): what trains, what evaluates.

Evaluation sets (``edge-derain eval --set NAME``):

* ``val`` — ``val/{rain,clean}`` (SIRR/JORDER samples): validation and model cards, never trained on.
* ``rain800-holdout`` — pairs of ``rain800_train/`` held out of every training set, so Rain800-style rain
  has a test that the model never saw (see :func:`rain800_split`).
* ``light`` — the ``val/`` clean images with seeded ``light`` rain (about 29–36 dB PSNR-Y, like the light
  synthetic benchmarks): light rain that a model must improve, never worsen.
* ``drizzle`` — the same with ``drizzle`` (about 35–50 dB: faint streaks on a nearly dry frame), where
  anything but near-identity loses.
* ``dry`` — the ``val/`` clean images given as input: a model should return them unchanged.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..utils import atomic_write_json, cache_dir
from .io import list_images, read_image_uint8
from .paired import DryDataset, PairedFolderDataset, SideBySidePairDataset, split_side_by_side
from .synthetic import RainRenderer, SyntheticRainDataset

HOLDOUT_EVERY = 10
EVAL_SETS = ("val", "rain800-holdout", "light", "drizzle", "dry")
_RENDERED_SEEDS = {"light": 2025, "drizzle": 2024}  # fixed: the same images with the same rain in every report
_SAME_SCENE_CORRELATION = 0.98  # thumbnails of one scene's clean image under different rain


def _signature(image: np.ndarray) -> np.ndarray:
    """Content signature: the 32x32 grey thumbnail, normalised (equal for rainy versions of one scene's
    clean image, independent of JPEG noise)."""
    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), (32, 32),
                      interpolation=cv2.INTER_AREA).ravel()
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def _same_scene(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T) / a.shape[1] > _SAME_SCENE_CORRELATION


def _split_files(data_dir: Path) -> dict[str, list[str]]:
    folder = data_dir / "rain800_train"
    files = list_images(folder)
    signatures = np.stack([_signature(split_side_by_side(read_image_uint8(f), f.name)[1]) for f in files])
    # Scenes: Rain800 renders several rainy versions of one clean image, so pairs are grouped by the
    # clean image and whole groups are held out (a held-out scene never appears in training).
    scene = list(range(len(files)))
    same = _same_scene(signatures, signatures)
    for i in range(len(files)):
        for j in np.flatnonzero(same[i, :i]):
            scene[i] = scene[int(j)]
            break
    val_clean = _folder_images(data_dir / "val" / "clean")
    reserved = set()
    if val_clean:
        val_signatures = np.stack([_signature(read_image_uint8(f)) for f in val_clean])
        reserved = {scene[i] for i in np.flatnonzero(_same_scene(signatures, val_signatures).any(axis=1))}
    heads = sorted({scene[i] for i in range(len(files))} - reserved)
    held = set(heads[::HOLDOUT_EVERY])
    split = {"train": [f.name for i, f in enumerate(files) if scene[i] not in held | reserved],
             "holdout": [f.name for i, f in enumerate(files) if scene[i] in held],
             "val_scenes": [f.name for i, f in enumerate(files) if scene[i] in reserved]}
    # The other training sources can show the same scenes (Rain800 and BSD share source photos).
    excluded = signatures[[i for i in range(len(files)) if scene[i] in held | reserved]]
    if val_clean:
        excluded = np.concatenate([excluded, val_signatures])
    for key, sub in (("excluded_rain800", "rain800/clean"), ("excluded_clean_bsd", "clean_bsd")):
        images = _folder_images(data_dir / sub)
        split[key] = [f.name for f in images
                      if len(excluded) and _same_scene(_signature(read_image_uint8(f))[None], excluded).any()]
    return split


def _folder_images(folder: Path) -> list[Path]:
    return list_images(folder) if folder.is_dir() else []


@functools.lru_cache(maxsize=8)
def _cached_split(data_dir: Path, key: str) -> dict[str, list[str]]:
    cache = cache_dir("splits", f"rain800-{key}.json")
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        split = _split_files(data_dir)
        atomic_write_json(cache, split)
        return split


def scene_split(data_dir: str | os.PathLike) -> dict[str, list[str]]:
    """File names by role: ``train`` / ``holdout`` / ``val_scenes`` of ``rain800_train/``, and the
    ``rain800/`` and ``clean_bsd/`` images to leave out of training because they show a held-out or
    validation scene. Cached under the user cache folder, keyed by the files' names and sizes."""
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "rain800_train").is_dir():
        return {"train": [], "holdout": [], "val_scenes": [], "excluded_rain800": [], "excluded_clean_bsd": []}
    listed = [f for sub in ("rain800_train", "val/clean", "rain800/clean", "clean_bsd")
              for f in _folder_images(data_dir / sub)]
    key = hashlib.sha256("".join(f"{f.parent.name}/{f.name}:{f.stat().st_size};" for f in listed).encode())
    return _cached_split(data_dir, key.hexdigest()[:16])


def rain800_split(data_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """``(train, holdout)`` files of ``data_dir/rain800_train`` (side-by-side pairs); empty when absent.

    Pairs are grouped by scene (their clean image), and every ``HOLDOUT_EVERY``-th scene is held out.
    Scenes that are also in ``val/`` (Rain800 shares source photos with the SIRR/JORDER samples there)
    are in neither list, so validation never scores a scene the model trained on.
    """
    folder = Path(data_dir) / "rain800_train"
    split = scene_split(data_dir)
    return [folder / name for name in split["train"]], [folder / name for name in split["holdout"]]


def open_eval_set(data_dir: str | os.PathLike, name: str) -> Dataset:
    """The evaluation set ``name`` (see ``EVAL_SETS``) of ``data_dir``, full-size images, deterministic."""
    data_dir = Path(data_dir)
    if name == "val":
        return PairedFolderDataset(data_dir / "val")
    if name == "rain800-holdout":
        _, holdout = rain800_split(data_dir)
        if not holdout:
            raise FileNotFoundError(f"{data_dir}/rain800_train does not exist; the rain800-holdout set needs the "
                                    f"Rain800 side-by-side training pairs there")
        return SideBySidePairDataset(data_dir / "rain800_train", files=holdout)
    clean = list_images(data_dir / "val" / "clean") if (data_dir / "val" / "clean").is_dir() else []
    if name in ("light", "drizzle", "dry") and not clean:
        raise FileNotFoundError(f"{data_dir}/val/clean does not exist; the {name} set is built from its images")
    if name in _RENDERED_SEEDS:
        return SyntheticRainDataset(clean, renderer=RainRenderer.preset(name), crop=None, flip=False,
                                    seed=_RENDERED_SEEDS[name])
    if name == "dry":
        return DryDataset(clean)
    raise ValueError(f"unknown evaluation set {name!r}; choose from {', '.join(EVAL_SETS)}")
