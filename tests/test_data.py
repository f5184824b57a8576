"""edge_derain.data: image I/O, crops/flips, paired + synthetic datasets, rain renderer, RainMix."""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from edge_derain.data import (PRESETS, DataRecipe, PackedTrainingSet, PackError, PairedFolderDataset, RainMix,
                              RainRenderer, SyntheticRainDataset, build_pack, code_blend_weights, fit_to_size,
                              list_images, load_pack, open_eval_set, random_crop_flip, read_image, reflect_pad_to,
                              scene_split, split_side_by_side, streak_kernel, to_image, to_tensor, write_image)
from edge_derain.metrics import psnr
from edge_derain.data.rainmix import OPERATIONS, sample_operation, warp_float, warp_pil_uint8


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random image on the 8-bit grid, so a PNG round trip is exact."""
    return (rng.integers(0, 256, (h, w, 3)) / 255.0).astype(np.float32)


def coordinate_image(h: int, w: int, blue: float) -> np.ndarray:
    """R = column / 255, G = row / 255: every crop/flip is recoverable from the pixel values."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs / 255.0, ys / 255.0, np.full((h, w), blue)], axis=2).astype(np.float32)


def make_pairs(root: Path, images: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    for name, (rain, clean) in images.items():
        write_image(root / "rain" / name, rain)
        write_image(root / "clean" / name, clean)
    return root


@pytest.fixture
def pair_dir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return make_pairs(tmp_path / "pairs", {f"p{i}.png": (random_image(rng, 30, 40), random_image(rng, 30, 40))
                                           for i in range(3)})


@pytest.fixture
def fake_data_dir(tmp_path) -> Path:
    """A miniature data directory with every folder of the real layout (distinct file names per folder)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for i in range(3):
        write_image(root / "clean_bsd" / f"bsd{i}.jpg", random_image(rng, 40, 48))
        write_image(root / "real" / f"real{i}.jpg", random_image(rng, 40, 48))
        streak = np.zeros((36, 60, 3), np.float32)
        streak[rng.integers(0, 36, 80), rng.integers(0, 60, 80)] = 1.0
        write_image(root / "streaks" / f"{i + 1}-4.png", streak)
        write_image(root / "streaks_garg06" / f"{i + 1}-4.png", streak)
    make_pairs(root / "rain800", {f"r800_{i}.png": (random_image(rng, 44, 50), random_image(rng, 44, 50))
                                  for i in range(2)})
    val = {f"val_{i}.png": (random_image(rng, 40, 48), smooth_image(rng, 40, 48)) for i in range(2)}
    make_pairs(root / "val", val)
    # rain800_train: clean | rainy side by side; scenes s0..s11 with two rainy versions each, and one
    # scene that is also a validation image (it must be in neither the training nor the held-out part).
    scenes = [smooth_image(rng, 40, 48) for _ in range(12)] + [val["val_0.png"][1]]
    for k, clean in enumerate(scenes):
        for version in range(2):
            rainy = np.clip(clean + random_image(rng, 40, 48) * 0.3, 0, 1)
            write_image(root / "rain800_train" / f"{k:02d}_{version}.png", np.concatenate([clean, rainy], 1))
    return root


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random smooth image (a scene: its thumbnail survives the rain noise added to it)."""
    coarse = rng.random((4, 4, 3)).astype(np.float32)
    return np.round(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255) / np.float32(255)


def items_equal(a: dict, b: dict) -> bool:
    return a["name"] == b["name"] and torch.equal(a["rain"], b["rain"]) and torch.equal(a["clean"], b["clean"])


# ---------------------------------------------------------------------------------------------- io


def test_png_round_trip_is_exact_and_jpeg_close(tmp_path):
    image = random_image(np.random.default_rng(2), 17, 23)
    write_image(tmp_path / "a.png", image)
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.float32 and back.shape == (17, 23, 3)
    np.testing.assert_array_equal(back, image)
    smooth = cv2.GaussianBlur(image, (0, 0), 2)
    for name in ("b.jpg", "c.JPEG"):
        write_image(tmp_path / name, smooth)
        assert np.abs(read_image(tmp_path / name) - smooth).mean() < 0.02


def test_write_clips_and_rounds(tmp_path):
    image = np.array([[[-0.5, 0.5 / 255 + 1e-4, 2.0]]], np.float32)
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0, 0] * 255, [0, 1, 255])


def test_read_converts_grey_rgba_palette_and_16bit(tmp_path):
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    expected_grey = np.repeat(grey[:, :, None], 3, axis=2) / np.float32(255)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), expected_grey)

    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png") * 255, rgba[:, :, :3])

    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "pal.png")
    expected = np.asarray(Image.open(tmp_path / "pal.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png") * 255, expected)

    deep = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])  # cv2 writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png") * 255, np.round(deep / 257.0))
    cv2.imwrite(str(tmp_path / "deep_grey.png"), deep[:, :, 0])
    np.testing.assert_array_equal(read_image(tmp_path / "deep_grey.png")[:, :, 2] * 255,
                                  np.round(deep[:, :, 0] / 257.0))


def test_read_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6   # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "phone.jpg").shape == (20, 10, 3)


def test_read_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    first = random_image(np.random.default_rng(4), 8, 9)
    write_image(target, first)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left behind

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        write_image(target, 1.0 - first)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(target), first)  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_rejects_bad_input(tmp_path):
    good = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "a.gif", good)
    with pytest.raises(ValueError, match="to_image"):
        write_image(tmp_path / "a.png", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "a.png", np.full((4, 4, 3), np.nan, np.float32))
    assert not list(tmp_path.iterdir())


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")


def test_tensor_conversions():
    image = random_image(np.random.default_rng(5), 5, 6)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 5, 6) and tensor.dtype == torch.float32 and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor[1].numpy(), image[:, :, 1])
    np.testing.assert_array_equal(to_image(tensor.double()), image)
    with pytest.raises(ValueError, match="HxWx3"):
        to_tensor(image.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="255"):
        to_tensor((image * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="batch"):
        to_image(tensor[None])


# -------------------------------------------------------------------------------------- transforms


def test_random_crop_flip_is_one_window_for_all_images():
    base = coordinate_image(30, 40, 0.0)
    other = coordinate_image(30, 40, 1.0)
    flips = set()
    for seed in range(12):
        a, b = random_crop_flip([base, other], 16, True, np.random.default_rng(seed))
        np.testing.assert_array_equal(a[:, :, :2], b[:, :, :2])
        cols, rows = np.round(a[:, :, 0] * 255).astype(int), np.round(a[:, :, 1] * 255).astype(int)
        step = np.diff(cols[0])
        assert np.all(step == step[0]) and abs(step[0]) == 1   # a contiguous window, maybe mirrored
        flips.add(int(step[0]))
        assert np.all(np.diff(rows[:, 0]) == 1) and np.all(cols == cols[0]) and np.all(rows.T == rows[:, 0])
        assert 0 <= cols.min() and cols.max() < 40 and 0 <= rows.min() and rows.max() < 30
    assert flips == {1, -1}


def test_small_images_are_reflect_padded():
    image = random_image(np.random.default_rng(6), 10, 12)
    padded = reflect_pad_to(image, 16, 16)
    # rows: 3 above, 3 below; columns: 2 left, 2 right, mirrored without repeating the edge
    np.testing.assert_array_equal(padded[3:13, 2:14], image)
    np.testing.assert_array_equal(padded[2], image[1, :].take(np.r_[2, 1, 0:12, 10, 9], axis=0))
    np.testing.assert_array_equal(padded[:, 1], image[:, 1].take(np.r_[3, 2, 1, 0:10, 8, 7, 6], axis=0))
    (out,) = random_crop_flip([image], 16, False, np.random.default_rng(0))
    np.testing.assert_array_equal(out, padded)
    tiny = random_image(np.random.default_rng(7), 3, 2)   # pad larger than the image: repeated reflection
    assert reflect_pad_to(tiny, 16, 16).shape == (16, 16, 3)


def test_fit_to_size_crops_or_upscales():
    layer = np.random.default_rng(8).random((20, 30), dtype=np.float32)
    window = fit_to_size(layer, 8, 10, np.random.default_rng(0))
    hits = [(t, l) for t in range(13) for l in range(21) if np.array_equal(layer[t:t + 8, l:l + 10], window)]
    assert len(hits) == 1
    assert fit_to_size(layer, 40, 35, np.random.default_rng(0)).shape == (40, 35)
    assert fit_to_size(np.dstack([layer] * 3), 25, 64, np.random.default_rng(0)).shape == (25, 64, 3)


# ----------------------------------------------------------------------------------- paired folders


def test_paired_dataset_items(pair_dir):
    ds = PairedFolderDataset(pair_dir)
    assert len(ds) == 3 and [p[0].name for p in ds.pairs] == ["p0.png", "p1.png", "p2.png"]
    item = ds[1]
    assert item["name"] == "p1.png" and item["rain"].shape == (3, 30, 40) and item["rain"].dtype == torch.float32
    np.testing.assert_array_equal(to_image(item["clean"]), read_image(pair_dir / "clean" / "p1.png"))
    np.testing.assert_array_equal(to_image(item["rain"]), read_image(pair_dir / "rain" / "p1.png"))
    with pytest.raises(IndexError):
        ds[3]


def test_paired_crop_flip_keep_pairs_aligned(tmp_path):
    root = make_pairs(tmp_path, {"a.png": (coordinate_image(30, 40, 0.2), coordinate_image(30, 40, 0.8))})
    ds = PairedFolderDataset(root, crop=16, flip=True, repeat=16)
    corners = set()
    for i in range(len(ds)):
        rain, clean = to_image(ds[i]["rain"]), to_image(ds[i]["clean"])
        assert rain.shape == (16, 16, 3)
        np.testing.assert_array_equal(rain[:, :, :2], clean[:, :, :2])   # the same window in both
        assert np.allclose(rain[:, :, 2], 0.2, atol=1e-6) and np.allclose(clean[:, :, 2], 0.8, atol=1e-6)
        corners.add((round(rain[0, 0, 1] * 255), round(rain[0, 0, 0] * 255)))
    assert len(corners) > 8   # repeats are fresh random crops, not copies


def test_paired_small_images_padded_in_both(tmp_path):
    rng = np.random.default_rng(9)
    rain, clean = random_image(rng, 10, 12), random_image(rng, 10, 12)
    ds = PairedFolderDataset(make_pairs(tmp_path, {"s.png": (rain, clean)}), crop=16)
    item = ds[0]
    np.testing.assert_array_equal(to_image(item["rain"]), reflect_pad_to(rain, 16, 16))
    np.testing.assert_array_equal(to_image(item["clean"]), reflect_pad_to(clean, 16, 16))


def test_paired_mismatched_names(tmp_path):
    rng = np.random.default_rng(10)
    make_pairs(tmp_path, {"a.png": (random_image(rng, 4, 4), random_image(rng, 4, 4))})
    write_image(tmp_path / "rain" / "only_rain.png", random_image(rng, 4, 4))
    write_image(tmp_path / "clean" / "only_clean1.png", random_image(rng, 4, 4))
    write_image(tmp_path / "clean" / "only_clean2.png", random_image(rng, 4, 4))
    with pytest.raises(ValueError, match=r"1 rain image\(s\) have no clean partner and 2 clean.*only_rain.png"):
        PairedFolderDataset(tmp_path)


def test_paired_folder_errors(tmp_path):
    (tmp_path / "rain").mkdir()
    with pytest.raises(FileNotFoundError, match="clean/"):
        PairedFolderDataset(tmp_path)
    rng = np.random.default_rng(11)
    root = make_pairs(tmp_path / "sizes", {"x.png": (random_image(rng, 4, 5), random_image(rng, 4, 6))})
    with pytest.raises(ValueError, match="x.png.*differs in size"):
        PairedFolderDataset(root)[0]
    for bad in (dict(crop=0), dict(seed=-1), dict(repeat=0), dict(rainmix_prob=2.0)):
        with pytest.raises(ValueError):
            PairedFolderDataset(root, **bad)


# ------------------------------------------------------------------------------------- determinism


def test_items_are_determined_by_seed_epoch_index(pair_dir):
    a = SyntheticRainDataset(pair_dir / "clean", crop=16, seed=3, repeat=2)
    b = SyntheticRainDataset(pair_dir / "clean", crop=16, seed=3, repeat=2)
    assert items_equal(a[4], b[4]) and items_equal(a[1], a[1])
    other_seed = SyntheticRainDataset(pair_dir / "clean", crop=16, seed=4, repeat=2)
    assert not items_equal(a[4], other_seed[4])
    assert not items_equal(a[1], a[4])                     # repeat: same source, fresh draw
    first = a[4]
    a.set_epoch(1)
    assert not items_equal(first, a[4])
    a.set_epoch(0)
    assert items_equal(first, a[4])
    with pytest.raises(ValueError, match="epoch"):
        a.set_epoch(-1)


def _epochs(dataset, workers: int) -> list[dict]:
    loader = DataLoader(dataset, batch_size=2, shuffle=False, num_workers=workers,
                        persistent_workers=workers > 0)
    batches = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        batches += list(loader)
    return batches


def test_worker_count_does_not_change_the_data(fake_data_dir, tmp_path):
    # Persistent workers keep their own dataset copy; the shared epoch must still reach them.
    pack = build_pack(fake_data_dir, tmp_path / "p.npz", budget_mib=2, crop=32, progress=False)
    sets = [PackedTrainingSet(pack, crop=16, seed=5, epoch_size=8) for _ in range(2)]
    serial, parallel = _epochs(sets[0], 0), _epochs(sets[1], 2)
    assert len(serial) == len(parallel) == 8
    for x, y in zip(serial, parallel):
        assert x["name"] == y["name"] and torch.equal(x["rain"], y["rain"]) and torch.equal(x["clean"], y["clean"])
    assert not torch.equal(serial[0]["rain"], serial[4]["rain"])   # epoch 1 differs from epoch 0


# ---------------------------------------------------------------------------------------- renderer


def test_render_range_shape_and_determinism():
    clean = random_image(np.random.default_rng(12), 48, 64)
    renderer = RainRenderer()
    rainy, layer = renderer.render(clean, np.random.default_rng(0))
    assert rainy.shape == layer.shape == clean.shape and rainy.dtype == layer.dtype == np.float32
    assert 0 <= rainy.min() and rainy.max() <= 1 and 0 <= layer.min() and layer.max() <= 1
    assert layer.max() > 0.2
    again, _ = renderer.render(clean, np.random.default_rng(0))
    other, _ = renderer.render(clean, np.random.default_rng(1))
    np.testing.assert_array_equal(rainy, again)
    assert not np.array_equal(rainy, other)


@pytest.mark.parametrize("blend", ["screen", "additive"])
def test_rain_only_brightens_without_haze(blend):
    clean = random_image(np.random.default_rng(13), 48, 64)
    renderer = RainRenderer.preset("heavy", haze=(0.0, 0.0), blend=blend)
    for seed in range(3):
        rainy, layer = renderer.render(clean, np.random.default_rng(seed))
        assert np.all(rainy >= clean - 1e-6)
        expected = 1 - (1 - clean) * (1 - layer) if blend == "screen" else np.clip(clean + layer, 0, 1)
        np.testing.assert_allclose(rainy, expected, atol=1e-6)
        assert (rainy - clean).mean() > 0.01


def test_haze_veils_towards_the_atmospheric_light():
    clean = random_image(np.random.default_rng(14), 32, 32)
    renderer = RainRenderer(haze=(0.4, 0.4), haze_variation=(0.0, 0.0), atmospheric_light=(0.9, 0.9),
                            brightness=(0.0, 0.0))
    rainy, layer = renderer.render(clean, np.random.default_rng(0))
    assert layer.max() == 0
    np.testing.assert_allclose(rainy, 0.6 * clean + 0.4 * 0.9, atol=1e-6)


def test_heavier_presets_add_more_rain():
    clean = random_image(np.random.default_rng(15), 96, 128) * 0.5
    energy = {}
    for name in ("light", "medium", "heavy"):
        renderer = RainRenderer.preset(name)
        layers = [renderer.render(clean, np.random.default_rng(s)) for s in range(4)]
        energy[name] = (np.mean([np.mean(layer ** 2) for _, layer in layers]),
                        np.mean([np.mean((rainy - clean) ** 2) for rainy, _ in layers]))
    assert energy["light"][0] < energy["medium"][0] < energy["heavy"][0]
    assert energy["light"][1] < energy["medium"][1] < energy["heavy"][1]
    assert set(PRESETS) == {"drizzle", "light", "medium", "heavy", "storm", "dense", "mist"}


def test_streak_kernel_geometry():
    vertical = streak_kernel(0.0, 21.0, 1.0, 0.0)
    assert vertical.max() == pytest.approx(1.0)
    ys, xs = np.nonzero(vertical > 0.1)
    assert np.ptp(xs) <= 2 and 17 <= np.ptp(ys) <= 21                 # a thin vertical line ~21 px long
    tilted = streak_kernel(30.0, 41.0, 1.5, 0.5)
    ys, xs = np.nonzero(tilted > 0.1)
    cov = np.cov(xs, ys)
    angle = math.degrees(math.atan2(2 * cov[0, 1], cov[1, 1] - cov[0, 0]) / 2)  # principal axis from vertical
    assert angle == pytest.approx(30.0, abs=2.0)   # positive: top-left to bottom-right (drops moving right)


def test_renderer_validation():
    with pytest.raises(ValueError, match="length"):
        RainRenderer(length=(30.0, 10.0))
    with pytest.raises(ValueError, match="blend"):
        RainRenderer(blend="multiply")
    with pytest.raises(ValueError, match="depth_layers"):
        RainRenderer(depth_layers=(0, 2))
    with pytest.raises(ValueError, match="directions"):
        RainRenderer(directions=(1, 1.5))
    with pytest.raises(ValueError, match="density"):
        RainRenderer(density=(0.0, 0.5))
    with pytest.raises(ValueError, match="drizzle, light, medium, heavy"):
        RainRenderer.preset("torrential")
    with pytest.raises(ValueError, match="HxWx3"):
        RainRenderer().render(np.zeros((4, 4), np.float32), np.random.default_rng(0))


def test_synthetic_dataset_items(pair_dir):
    ds = SyntheticRainDataset(sorted((pair_dir / "clean").iterdir()), crop=24, flip=False, seed=1)
    item = ds[2]
    assert item["name"] == "p2.png" and item["rain"].shape == item["clean"].shape == (3, 24, 24)
    clean_full = read_image(pair_dir / "clean" / "p2.png")
    crop = to_image(item["clean"])
    assert any(np.array_equal(clean_full[t:t + 24, l:l + 24], crop) for t in range(7) for l in range(17))
    assert (item["rain"] - item["clean"]).abs().mean() > 0.005
    with pytest.raises(ValueError, match="empty"):
        SyntheticRainDataset([])


# ------------------------------------------------------------------------------------------ RainMix


def test_code_blend_weights():
    assert code_blend_weights(np.array([0.2, 0.5, 0.3]), 0.1) == pytest.approx((0.9, 1.0))
    assert code_blend_weights(np.array([0.2, 0.5, 0.3]), 0.8) == pytest.approx((0.7, 1.0))
    assert code_blend_weights(np.array([0.9, 0.05, 0.05]), 0.8) == pytest.approx((0.7, 0.8))
    assert code_blend_weights(np.array([0.9, 0.05, 0.05]), 0.2) == pytest.approx((0.8, 0.5 / 0.9))


def test_rotation_matches_pil_rotate():
    image = np.random.default_rng(17).integers(0, 256, (30, 44), dtype=np.uint8)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        matrix = sample_operation("rotate", rng, 44, 30)
        rng = np.random.default_rng(seed)   # replay the draws: u, then the sign
        degrees = int(rng.uniform(0.1, 3.0) * 3) * (-1 if rng.random() > 0.5 else 1)
        reference = np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(warp_pil_uint8(image, matrix), reference)


@pytest.mark.parametrize("name", OPERATIONS)
def test_float_warp_matches_pil_geometry(name):
    # The paper variant resamples with cv2 in float; it must place pixels where PIL does.
    noise = np.random.default_rng(18).random((60, 80)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3)
    smooth = np.round((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    ys, xs = np.mgrid[0:60, 0:80] + 0.5
    for seed in range(3):
        matrix = sample_operation(name, np.random.default_rng(seed), 80, 60)
        src_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
        src_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
        inside = (src_x > 1.5) & (src_x < 78.5) & (src_y > 1.5) & (src_y < 58.5)   # away from fill borders
        assert inside.mean() > 0.2
        diff = np.abs(warp_pil_uint8(smooth, matrix) - warp_float(smooth.astype(np.float32), matrix))[inside]
        assert diff.max() <= 1.01   # PIL rounds to 8 bits
    with pytest.raises(ValueError, match="unknown RainMix operation"):
        sample_operation("flip", np.random.default_rng(0), 8, 8)


def _replay_apply(rainmix: RainMix, rain: np.ndarray, clean: np.ndarray, seed: int) -> np.ndarray:
    """What ``apply`` must return, rebuilt from its documented draws (base, streak layer, window)."""
    rng = np.random.default_rng(seed)
    base = rain if rng.random() < rainmix.rainy_base_prob else clean
    layer = fit_to_size(rainmix.sample_streak_layer(rng), *rain.shape[:2], rng)
    layer = layer[:, :, None] if layer.ndim == 2 else layer
    return np.clip(base + layer, 0, 1) if rainmix.variant == "paper" else base + layer - base * layer


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_rainmix_on_real_streaks(data_dir, variant):
    rainmix = RainMix(data_dir / "streaks_garg06", variant=variant)
    assert len(rainmix.files) == 825
    rng = np.random.default_rng(19)
    clean = random_image(rng, 200, 256) * 0.6
    rain = np.clip(clean + 0.1, 0, 1)
    peaks = []
    for seed in range(4):
        out = rainmix.apply(rain, clean, np.random.default_rng(seed))
        assert out.shape == rain.shape and out.dtype == np.float32
        assert np.abs(out - rain).mean() > 0.003 and np.abs(out - clean).mean() > 0.003
        assert out.min() >= 0.0
        np.testing.assert_allclose(out, _replay_apply(rainmix, rain, clean, seed), atol=1e-6)
        peaks.append(out.max())
    layers = [rainmix.sample_streak_layer(np.random.default_rng(seed)) for seed in range(4)]
    assert all(layer.shape[0] == 320 and layer.min() >= 0 for layer in layers)
    if variant == "paper":   # a convex blend of [0, 1] maps, and the sum clipped
        assert max(layer.max() for layer in layers) <= 1.0 and max(peaks) <= 1.0
    else:                    # non-convex weights; the replay above shows the blend is left unclipped
        assert max(layer.max() for layer in layers) > 1.0


def test_rainmix_fits_streaks_to_any_image_size(fake_data_dir):
    for variant in ("paper", "code"):
        rainmix = RainMix(fake_data_dir / "streaks", variant=variant, cache_size=2)
        for h, w in ((16, 16), (50, 90)):          # smaller and larger than the 36x60 streak maps
            image = np.full((h, w, 3), 0.25, np.float32)
            out = rainmix.apply(image, image, np.random.default_rng(h))
            assert out.shape == (h, w, 3) and out.min() >= 0.25 - 1e-6
        assert len(rainmix._cache) <= 2


def test_rainmix_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RainMix(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        RainMix(tmp_path)
    write_image(tmp_path / "1-4.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="'paper' or 'code'"):
        RainMix(tmp_path, variant="augmix")
    rainmix = RainMix(tmp_path)
    with pytest.raises(ValueError, match="one size"):
        rainmix.apply(np.zeros((4, 4, 3), np.float32), np.zeros((4, 5, 3), np.float32), np.random.default_rng(0))


def test_datasets_apply_rainmix(fake_data_dir):
    rainmix = RainMix(fake_data_dir / "streaks", variant="paper")
    plain = PairedFolderDataset(fake_data_dir / "rain800", crop=16, seed=2)
    mixed = PairedFolderDataset(fake_data_dir / "rain800", crop=16, seed=2, rainmix=rainmix)
    never = PairedFolderDataset(fake_data_dir / "rain800", crop=16, seed=2, rainmix=rainmix, rainmix_prob=0.0)
    assert torch.equal(plain[0]["clean"], mixed[0]["clean"])        # crop draws come first: same window
    assert not torch.equal(plain[0]["rain"], mixed[0]["rain"])
    assert items_equal(plain[0], never[0])


# -------------------------------------------------------------------------------- training sets


def test_presets_span_drizzle_to_storm():
    clean = random_image(np.random.default_rng(20), 96, 128) * 0.5 + 0.2
    mean_psnr = {name: np.mean([psnr(RainRenderer.preset(name).render(clean, np.random.default_rng(s))[0], clean)
                                for s in range(4)]) for name in PRESETS}
    assert mean_psnr["drizzle"] > 33          # barely changes the image
    assert mean_psnr["drizzle"] > mean_psnr["light"] > mean_psnr["medium"] > mean_psnr["heavy"] > mean_psnr["storm"]
    assert mean_psnr["storm"] < 20 and mean_psnr["dense"] < 30


def test_mist_is_a_strong_uneven_veil_under_faint_streaks():
    """The one preset whose veil does not follow its streaks: streaks fainter than light rain's, yet the
    image loses far more (PSNR), and the veil is not one uniform lift."""
    clean = cv2.GaussianBlur(random_image(np.random.default_rng(21), 128, 128) * 0.5 + 0.2, (0, 0), 2)
    stats = {}
    for name in ("light", "mist"):
        runs = []
        for s in range(4):
            rainy, streaks = RainRenderer.preset(name).render(clean, np.random.default_rng(s))
            lift = cv2.GaussianBlur((rainy - clean).mean(axis=2), (0, 0), 8)
            runs.append((psnr(rainy, clean), streaks.mean(), lift.std()))
        stats[name] = np.mean(runs, axis=0)
    (light_psnr, light_streaks, light_unevenness), (mist_psnr, mist_streaks, mist_unevenness) = stats.values()
    assert mist_streaks < light_streaks and mist_psnr < light_psnr - 5
    assert mist_unevenness > 2 * light_unevenness


def _orientation_histogram(layer: np.ndarray) -> np.ndarray:
    """Gradient-energy histogram over 18 orientations (10-degree bins) of a grey streak layer."""
    gx, gy = cv2.Sobel(layer, cv2.CV_32F, 1, 0), cv2.Sobel(layer, cv2.CV_32F, 0, 1)
    angle = (np.degrees(np.arctan2(gy, gx)) % 180).ravel()
    return np.histogram(angle, bins=18, range=(0, 180), weights=(gx * gx + gy * gy).ravel())[0]


def test_several_directions_and_depth_planes():
    clean = np.zeros((160, 160, 3), np.float32)
    base = dict(angle=(0.0, 0.0), length=(40.0, 40.0), width=(1.0, 1.0), density=(0.003, 0.003), blur=(0.0, 0.0),
                brightness=(0.3, 0.3), haze=(0.0, 0.0), direction_spread=(40.0, 40.0))
    one = RainRenderer(**base, directions=(1, 1), depth_layers=(1, 1)).render(clean, np.random.default_rng(1))[1]
    two = RainRenderer(**base, directions=(2, 2), depth_layers=(1, 1)).render(clean, np.random.default_rng(1))[1]
    peaks = lambda hist: int((hist > 0.3 * hist.max()).sum())
    assert peaks(_orientation_histogram(two[..., 0])) > peaks(_orientation_histogram(one[..., 0]))
    # A far plane adds many short, dim streaks: more lit pixels, lower mean brightness of a lit pixel.
    deep = RainRenderer(**base, depth_layers=(3, 3)).render(clean, np.random.default_rng(1))[1]
    assert (deep > 0.01).mean() > (one > 0.01).mean()


def test_haze_grows_with_depth():
    clean = np.zeros((120, 90, 3), np.float32)
    renderer = RainRenderer(brightness=(0.0, 0.0), haze=(0.3, 0.3), haze_variation=(1.0, 1.0),
                            atmospheric_light=(1.0, 1.0))
    hazy = renderer.render(clean, np.random.default_rng(0))[0]
    assert hazy[:30].mean() > hazy[-30:].mean() + 0.05        # the top of the frame is further away
    assert hazy.mean() == pytest.approx(0.3, abs=0.03)        # the mean veil is the sampled haze


def test_renderer_describe_is_json():
    import json

    described = RainRenderer.preset("storm").describe()
    assert json.loads(json.dumps(described))["directions"] == [2, 3]


def test_side_by_side_halves():
    image = np.concatenate([np.zeros((4, 5, 3)), np.ones((4, 5, 3)), np.full((4, 1, 3), 0.5)], 1)
    rain, clean = split_side_by_side(image)
    assert rain.shape == clean.shape == (4, 5, 3) and clean.max() == 0 and rain.min() == 1
    with pytest.raises(ValueError, match="side-by-side"):
        split_side_by_side(np.zeros((4, 1, 3)))


def test_scene_split_holds_out_whole_scenes_and_reserves_val(fake_data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_DERAIN_CACHE", str(tmp_path / "cache"))
    split = scene_split(fake_data_dir)
    scene = lambda name: name.split("_")[0]
    train, holdout, reserved = ({scene(n) for n in split[k]} for k in ("train", "holdout", "val_scenes"))
    assert holdout and train and reserved == {"12"}           # scene 12 is the clean image of val_0.png
    assert not train & holdout and not (train | holdout) & reserved
    assert len(split["train"]) + len(split["holdout"]) + len(split["val_scenes"]) == 26
    assert list((tmp_path / "cache" / "splits").glob("*.json"))   # cached
    assert scene_split(fake_data_dir) == split


def test_pack_round_trip_within_budget_and_never_val(fake_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_DERAIN_CACHE", str(tmp_path / "cache"))
    pack = build_pack(fake_data_dir, tmp_path / "p.npz", budget_mib=1, crop=16, progress=False)
    assert (tmp_path / "p.npz").stat().st_size <= 2 ** 20
    loaded = load_pack(tmp_path / "p.npz")
    assert loaded.summary() == pack.summary() and loaded.crop == 16
    assert len(loaded.pairs) and len(loaded.backgrounds) and len(loaded.streaks)
    np.testing.assert_array_equal(loaded.pairs, pack.pairs)
    # No crop comes from val/ or from a held-out scene (all of them are random or distinct smooth images).
    forbidden = [read_image(f) for f in list_images(fake_data_dir / "val" / "clean")]
    forbidden += [split_side_by_side(read_image(fake_data_dir / "rain800_train" / n))[1]
                  for n in scene_split(fake_data_dir)["holdout"]]
    for crop in list(loaded.backgrounds) + [p[1] for p in loaded.pairs]:
        crop = crop.astype(np.float32) / 255
        for image in forbidden:
            windows = np.lib.stride_tricks.sliding_window_view(image, (16, 16, 3))[..., 0, :, :, :]
            assert np.abs(windows - crop).max(axis=(-1, -2, -3)).min() > 1e-3


def test_pack_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="edge-derain pack"):
        load_pack(tmp_path / "missing.npz")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PackError, match="rebuild") as info:
        load_pack(tmp_path / "trunc.npz")
    assert "\n" not in str(info.value)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(PackError, match="not an edge_derain training pack"):
        load_pack(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no training data"):
        build_pack(tmp_path, tmp_path / "x.npz", progress=False)


def test_packed_training_set_draws_every_kind_deterministically(fake_data_dir, tmp_path):
    pack = build_pack(fake_data_dir, tmp_path / "p.npz", budget_mib=2, crop=32, progress=False)
    ds = PackedTrainingSet(pack, crop=24, seed=1, epoch_size=64)
    again = PackedTrainingSet(pack, crop=24, seed=1, epoch_size=64)
    items = [ds[i] for i in range(64)]
    assert all(items_equal(a, again[i]) for i, a in enumerate(items))
    kinds = {item["name"].split(":")[0].rstrip("0123456789") for item in items}
    assert kinds == {"pair", "dry", "synthetic", "rainmix"}
    for item in items:
        assert item["rain"].shape == item["clean"].shape == (3, 24, 24)
        assert torch.equal(item["rain"], item["clean"]) == item["name"].startswith("dry")
    only_dry = PackedTrainingSet(pack, crop=24, recipe=DataRecipe(pair=0, dry=1, synthetic=0, rainmix=0))
    assert all(torch.equal(only_dry[i]["rain"], only_dry[i]["clean"]) for i in range(5))
    with pytest.raises(ValueError, match="larger than the pack"):
        PackedTrainingSet(pack, crop=48)
    with pytest.raises(ValueError, match="presets"):
        DataRecipe(presets={"hail": 1.0})


def test_real_data_splits_eval_sets_and_pack(data_dir, tmp_path):
    split = scene_split(data_dir)
    assert len(split["holdout"]) >= 40 and len(split["train"]) >= 400
    assert not set(split["train"]) & set(split["holdout"])
    assert split["val_scenes"], "Rain800 shares scenes with val/: they must be reserved"
    sizes = {name: len(open_eval_set(data_dir, name)) for name in ("val", "rain800-holdout", "light", "drizzle", "dry")}
    assert sizes == {"val": 15, "rain800-holdout": len(split["holdout"]), "light": 15, "drizzle": 15, "dry": 15}
    light, drizzle = open_eval_set(data_dir, "light")[3], open_eval_set(data_dir, "drizzle")[3]
    assert 25 < psnr(to_image(light["rain"]), to_image(light["clean"])) < psnr(to_image(drizzle["rain"]),
                                                                                 to_image(drizzle["clean"]))
    pack = build_pack(data_dir, tmp_path / "p.npz", budget_mib=6, progress=False)
    assert pack.meta["counts"]["pairs"] > 20 and pack.meta["counts"]["backgrounds"] > 20
    assert pack.meta["bytes"] <= 6 * 2 ** 20 and pack.meta["excluded"]["holdout"] == len(split["holdout"])
    with pytest.raises(ValueError, match="unknown evaluation set"):
        open_eval_set(data_dir, "rain100h")


def test_rain800_varied_sizes_crop_to_one_size(data_dir):
    ds = PairedFolderDataset(data_dir / "rain800", crop=256, flip=True)
    sizes = {tuple(read_image(rain).shape) for rain, _ in ds.pairs[::6]}
    assert len(sizes) > 1
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["rain"].shape == (8, 3, 256, 256)


def test_presets_grid_cli(tmp_path, capsys):
    from edge_derain.cli import main

    image = random_image(np.random.default_rng(21), 40, 60)
    write_image(tmp_path / "in.png", image)
    assert main(["presets", "--image", str(tmp_path / "in.png"), "--out", str(tmp_path / "grid.png")]) == 0
    grid = read_image(tmp_path / "grid.png")
    assert grid.shape == (80, 240, 3)                                  # 7 tiles + 1 blank, 4 per row
    np.testing.assert_allclose(grid[30:40, :60], image[30:40], atol=1 / 255)   # the clean tile, below its label
    assert not np.allclose(grid[30:40, 60:120], image[30:40], atol=2 / 255)    # drizzle changed something


def test_sample_look_fixes_one_shower():
    renderer = RainRenderer.preset("storm")
    look = renderer.sample_look(np.random.default_rng(3))
    for name, value in look.describe().items():
        if isinstance(value, list):
            assert value[0] == value[1], name
            low, high = renderer.describe()[name]
            assert low <= value[0] <= high, name
    assert look.directions[0] in (2, 3) and isinstance(look.directions[0], int)
    clean = random_image(np.random.default_rng(4), 64, 64) * 0.5
    frames = [look.render(clean, np.random.default_rng(s))[1] for s in range(3)]
    means = [f.mean() for f in frames]
    assert not np.array_equal(frames[0], frames[1])              # new drops every frame
    assert max(means) < 1.6 * min(means)                          # the same amount of rain
