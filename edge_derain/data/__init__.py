"""Data: image I/O, paired and synthetic deraining datasets, the rain renderer and RainMix.

Images in memory are float32 H x W x 3 RGB in [0, 1]; dataset items are
``{"rain": (3, H, W) float32, "clean": (3, H, W) float32, "name": str}``. All randomness comes from
``np.random.default_rng([seed, epoch, index])`` per item (call ``set_epoch`` each epoch).

Data directory layout (``build_pack`` / ``open_eval_set``): ``clean_bsd/`` (clean backgrounds for synthetic
rain), ``rain800/{rain,clean}/`` and ``rain800_train/`` (real training pairs, the latter side by side, with
held-out scenes), ``streaks_garg06/`` (RainMix streak maps), ``val/{rain,clean}/`` (validation only) and
``real/`` (demos only). Training reads a pack (``edge_derain.data.pack``), never the folders directly.
"""
from __future__ import annotations

from .io import IMAGE_SUFFIXES, list_images, read_image, read_image_uint8, to_image, to_tensor, write_image
from .pack import (DEFAULT_BUDGET_MIB, DataRecipe, PackedTrainingSet, PackError, TrainingPack, build_pack,
                   data_fingerprint, load_pack)
from .paired import DryDataset, PairedFolderDataset, SeededPairDataset, SideBySidePairDataset, split_side_by_side
from .rainmix import RainMix, code_blend_weights
from .sets import EVAL_SETS, HOLDOUT_EVERY, open_eval_set, rain800_split, scene_split
from .synthetic import NO_RAIN, PRESETS, RainRenderer, SyntheticRainDataset, streak_kernel
from .transforms import fit_to_size, random_crop_box, random_crop_flip, reflect_pad_to

__all__ = [
    "DEFAULT_BUDGET_MIB", "DataRecipe", "DryDataset", "EVAL_SETS", "HOLDOUT_EVERY", "IMAGE_SUFFIXES", "NO_RAIN",
    "PRESETS", "PackError", "PackedTrainingSet", "PairedFolderDataset", "RainMix", "RainRenderer", "SeededPairDataset",
    "SideBySidePairDataset", "SyntheticRainDataset", "TrainingPack", "build_pack", "data_fingerprint",
    "load_pack", "open_eval_set", "rain800_split", "scene_split", "split_side_by_side",
    "code_blend_weights", "fit_to_size", "list_images", "random_crop_box", "random_crop_flip", "read_image",
    "read_image_uint8", "reflect_pad_to", "streak_kernel", "to_image", "to_tensor", "write_image",
]
