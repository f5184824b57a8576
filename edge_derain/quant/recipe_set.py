"""The default calibration set: clean images of a data directory with synthetic rain (``RainRenderer`` presets)
and RainMix (real Garg–Nayar streaks), stratified by rain intensity as a recipe says
(``calibration/default_recipe.json``). Validation and evaluation folders (``val/``, ``real/``) are refused:
calibrating on them would leak the images the model is judged on."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..resources import resource_dir
from .calibration_set import CalibrationSet
from .set_writer import SetWriter, parse_size, random_crop, to_uint8

log = logging.getLogger(__name__)

#: Data-directory folders that hold validation/evaluation images: never calibration material.
EVALUATION_FOLDERS = ("val", "real")
#: The repository's default recipe (calibration/, in the checkout or carried by a wheel).
DEFAULT_RECIPE_PATH = resource_dir("calibration") / "default_recipe.json"
_RECIPE_KEYS = {"name", "description", "seed", "clean_dir", "streak_dir", "crop", "strata"}
_STRATUM_KEYS = {"name", "rain", "rainmix", "count", "holdout"}


def load_recipe(recipe: dict | str | os.PathLike | None = None) -> dict:
    """A recipe dict, a JSON file, or None for the repository's ``calibration/default_recipe.json``."""
    if isinstance(recipe, dict):
        return recipe
    path = Path(recipe) if recipe is not None else DEFAULT_RECIPE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"calibration recipe {path} not found" + (
            "; the default recipe lives in the repository's calibration/ folder: reinstall edge_derain or pass "
            "--recipe FILE"
            if recipe is None else ""))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"calibration recipe {path} is not valid JSON ({exc})") from None


def _check_recipe(recipe: dict) -> list[dict]:
    unknown = sorted(set(recipe) - _RECIPE_KEYS)
    if unknown:
        raise ValueError(f"unknown recipe key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_RECIPE_KEYS))}")
    strata = recipe.get("strata")
    if not isinstance(strata, list) or not strata:
        raise ValueError("the recipe needs a non-empty 'strata' list (see calibration/default_recipe.json)")
    from ..data import PRESETS

    names = set()
    for stratum in strata:
        unknown = sorted(set(stratum) - _STRATUM_KEYS)
        if unknown:
            raise ValueError(f"unknown stratum key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(_STRATUM_KEYS))}")
        name = stratum.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"every stratum needs a unique non-empty 'name', got {name!r}")
        names.add(name)
        if stratum.get("rain") is not None and stratum["rain"] not in PRESETS:
            raise ValueError(f"stratum {name!r}: rain must be null or one of {', '.join(PRESETS)}, "
                             f"got {stratum['rain']!r}")
        if stratum.get("rainmix") not in (None, "paper", "code"):
            raise ValueError(f"stratum {name!r}: rainmix must be null, 'paper' or 'code', got {stratum['rainmix']!r}")
        for key in ("count", "holdout"):
            value = stratum.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"stratum {name!r}: {key} must be a non-negative int, got {value!r}")
    if not sum(s.get("count", 0) for s in strata):
        raise ValueError("the recipe's strata ask for 0 calibration frames; give at least one stratum a count")
    return strata


def check_not_evaluation_folder(folder: Path, data_dir: Path) -> None:
    """Refuse ``val/`` and ``real/`` (and anything inside them) of a data directory."""
    try:
        parts = folder.resolve().relative_to(data_dir.resolve()).parts
    except ValueError:
        parts = folder.resolve().parts
    hit = [p for p in parts if p in EVALUATION_FOLDERS]
    if hit:
        raise ValueError(f"{folder} is an evaluation folder ({hit[0]}/): calibration must never see validation or "
                         "evaluation images; use clean images such as clean_bsd/")


def collect_from_recipe(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                        recipe: dict | str | os.PathLike | None = None, input_multiple: int = 16) -> CalibrationSet:
    """Generate a calibration set from ``data_dir`` as ``recipe`` says (default: the repository's recipe).

    Each stratum renders its rain preset (or none) on distinct clean backgrounds, optionally adds
    RainMix streaks, crops as the recipe says, rounds to 8 bits and stores ``count`` calibration and
    ``holdout`` held-out frames with their clean targets. Everything is drawn from
    ``default_rng(recipe["seed"])``, so a recipe reproduces the same set.
    """
    from ..data import RainMix, RainRenderer, list_images, read_image

    data_dir = Path(data_dir)
    recipe = load_recipe(recipe)
    strata = _check_recipe(recipe)
    crop = parse_size(recipe.get("crop"), "recipe crop")
    clean_dir = data_dir / recipe.get("clean_dir", "clean_bsd")
    check_not_evaluation_folder(clean_dir, data_dir)
    streak_dir = data_dir / recipe.get("streak_dir", "streaks_garg06")
    if any(s.get("rainmix") for s in strata):
        check_not_evaluation_folder(streak_dir, data_dir)
    images = list_images(clean_dir)
    rng = np.random.default_rng(int(recipe.get("seed", 0)))
    order = rng.permutation(len(images))
    writer = SetWriter(out_dir, input_multiple)
    rainmix: dict[str, RainMix] = {}
    drawn = 0
    unreadable: dict[str, str] = {}  # backgrounds that could not be read: skipped, reported in the origin

    def next_background() -> tuple[Path, np.ndarray]:
        nonlocal drawn
        while len(unreadable) < len(images):
            # Backgrounds cycle only when the recipe asks for more frames than there are images.
            path = images[order[drawn % len(images)]]
            drawn += 1
            if str(path) in unreadable:
                continue
            try:
                return path, random_crop(read_image(path), crop, rng, str(path))
            except (ValueError, OSError) as exc:
                log.warning("skipping %s: %s", path, exc)
                unreadable[str(path)] = str(exc)
        raise ValueError(f"no clean image in {clean_dir} could be read; the first problem: "
                         f"{next(iter(unreadable.values()))}")

    for stratum in strata:
        renderer = RainRenderer.preset(stratum["rain"]) if stratum.get("rain") else None
        variant = stratum.get("rainmix")
        if variant and variant not in rainmix:
            rainmix[variant] = RainMix(streak_dir, variant=variant)
        holdout = stratum.get("holdout", 0)
        for k in range(holdout + stratum.get("count", 0)):
            path, clean = next_background()
            rainy = renderer.render(clean, rng)[0] if renderer is not None else clean
            if variant:
                rainy = rainmix[variant].apply(rainy, clean, rng)
            writer.add(to_uint8(rainy), "holdout" if k < holdout else "calib", stratum["name"],
                       str(path.relative_to(data_dir)), target=to_uint8(clean))
    return writer.finish({"kind": "recipe", "recipe": recipe, "data_dir": str(data_dir),
                          "skipped": [{"source": path, "error": error} for path, error in unreadable.items()]})
