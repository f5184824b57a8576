"""Tiled inference (edge_derain.backends.tiling): the layout, seams against whole-image inference on real
backends, and the receptive radius the default overlap is sized from."""
from __future__ import annotations

import numpy as np
import pytest

from edge_derain.backends import TorchBackend
from edge_derain.backends.tiling import check_tile, default_overlap, run_tiled, tile_starts, tiles
from edge_derain.checkpoint import load_model
from edge_derain.data import read_image
from edge_derain.demo import SAMPLE_IMAGE


# The tiling mechanics are checked on the fully convolutional shipped model: its output pixel depends on a
# bounded neighbourhood, so tiled and whole-image outputs must agree to a fraction of a grey level. The
# default model (ELF-LW) has transposed attention, whose channel statistics span the whole frame (or tile):
# its own test below bounds the difference instead.
LOCAL_MODEL = "efderain_w025"


@pytest.fixture(scope="module")
def torch_backend():
    return TorchBackend(load_model(LOCAL_MODEL))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo of a mid size, not a multiple of 16 (the bottom/right padding is exercised too)."""
    image = read_image(SAMPLE_IMAGE)
    return np.ascontiguousarray(image[:image.shape[0] - 5, :image.shape[1] - 9].transpose(2, 0, 1)[None])


class _Recording:
    """A real backend that remembers the input shapes it was given (for the layout and memory checks)."""

    def __init__(self, backend):
        self.backend, self.shapes = backend, []
        self.input_multiple, self.receptive_radius = backend.input_multiple, backend.receptive_radius

    def run(self, batch):
        self.shapes.append(batch.shape)
        return self.backend.run(batch)


def test_tile_layout_respects_the_input_multiple_and_the_overlap():
    for size, tile, overlap in [(1000, 256, 64), (1024, 256, 64), (256, 256, 64), (300, 512, 64), (4000, 1024, 64)]:
        starts = tile_starts(size, tile, overlap)
        assert starts[0] == 0 and min(size, starts[-1] + tile) == size
        assert all(s % 16 == 0 for s in starts[:-1])
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap
    # Weights: zero-ish at inner borders, full at the frame's borders, positive everywhere when summed.
    total = np.zeros((400, 700))
    for rows, cols, weights in tiles(400, 700, 256, 64):
        assert weights.shape == (rows.stop - rows.start, cols.stop - cols.start)
        total[rows, cols] += weights
    assert total.min() > 0.5
    assert check_tile(200, 64, 16) == 192  # rounded down to the input multiple
    with pytest.raises(ValueError, match="leaves nothing between overlaps"):
        check_tile(64, 64, 16)
    with pytest.raises(ValueError, match="positive number of pixels"):
        check_tile(0, 64, 16)


def test_tiled_matches_whole_image_on_a_real_photo(torch_backend, photo):
    whole = np.clip(torch_backend.run(photo), 0, 1)
    recording = _Recording(torch_backend)
    tiled = np.clip(run_tiled(recording, photo, tile=192), 0, 1)
    overlap = default_overlap(torch_backend)
    assert overlap == 128  # twice efderain's receptive radius
    padded = [-(-side // 16) * 16 for side in photo.shape[-2:]]
    assert len(recording.shapes) == len(tile_starts(padded[0], 192, overlap)) * len(tile_starts(padded[1], 192, overlap)) > 4
    assert {s[-2:] for s in recording.shapes} == {(192, 192)}  # full, aligned tiles: one engine shape
    diff = np.abs(tiled - whole)
    assert diff.mean() < 0.1 / 255 and diff.max() < 4 / 255, (diff.mean() * 255, diff.max() * 255)
    # Without overlap the seams show: the overlap is what makes them invisible.
    seams = np.abs(np.clip(run_tiled(torch_backend, photo, tile=192, overlap=0), 0, 1) - whole)
    assert seams.max() > 10 * diff.max()


def test_every_backend_tiles_onnxruntime(tmp_path, photo):
    """The same tiling through ONNX Runtime on the exported graph (TensorRT: same code path, GPU only)."""
    from edge_derain.backends import open_backend
    from edge_derain.export import export_model

    model = load_model(LOCAL_MODEL)
    portable = export_model(model, tmp_path / "efderain").portable_path
    backend = open_backend(str(portable))
    assert backend.receptive_radius == model.receptive_radius == 64  # carried by the graph's metadata
    crop = np.ascontiguousarray(photo[..., :256, :320])
    whole = np.clip(backend.run(crop), 0, 1)
    tiled = np.clip(run_tiled(backend, crop, tile=192), 0, 1)
    diff = np.abs(tiled - whole)
    assert diff.mean() < 0.2 / 255 and diff.max() < 6 / 255, (diff.mean() * 255, diff.max() * 255)


def test_receptive_radius_covers_the_local_model():
    """The default overlap is twice ``receptive_radius``: beyond it an output pixel hardly depends on its input
    (gradient of one output pixel of the shipped weights on a random image, never zeros)."""
    import torch

    model = load_model(LOCAL_MODEL)
    radius, size = model.receptive_radius, 4 * model.receptive_radius + 32
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=generator, requires_grad=True)
    model.core(x)[0][0, :, size // 2, size // 2].sum().backward()
    grad = x.grad[0].abs().sum(0).numpy()
    yy, xx = np.mgrid[:size, :size]
    distance = np.maximum(abs(yy - size // 2), abs(xx - size // 2))
    assert grad[distance > 2 * radius].sum() / grad.sum() < 1e-3


@pytest.mark.slow
def test_tiling_the_default_attention_model_stays_close_to_the_whole_image(photo):
    """ELF-LW's transposed attention pools over the whole input, so a tile sees only its own statistics:
    tiled output is not bit-close to whole-image output, but within 50 dB PSNR of it (measured 54.6 dB at
    256 px tiles on this photo), far below what deraining changes."""
    from edge_derain.checkpoint import DEFAULT_WEIGHTS

    backend = TorchBackend(load_model(DEFAULT_WEIGHTS))
    whole = np.clip(backend.run(photo), 0, 1)
    tiled = np.clip(run_tiled(backend, photo, tile=256), 0, 1)
    psnr = 10 * np.log10(1.0 / np.mean((tiled - whole) ** 2))
    assert psnr > 50, psnr
    assert np.abs(np.clip(run_tiled(backend, photo, tile=256, overlap=0), 0, 1) - whole).max() > np.abs(tiled - whole).max()
