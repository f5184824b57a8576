"""Tiled inference: a frame larger than a tile runs as overlapping tiles, blended into one output.

Memory then grows with the tile, not the frame (a 12-megapixel photo through a U-Net would otherwise
hold gigabytes of activations), and a TensorRT engine serves frames beyond its profile. The frame is
padded to the backend's ``input_multiple`` once (as a whole frame would be), then cut into tiles whose
side, overlap and offsets are multiples of it, with at least ``overlap`` pixels shared between neighbours
(the last tile of a row or column ends at the edge). Each tile's output is weighted by a ramp that is zero at the tile's inner borders, where the
network saw zero padding instead of the neighbouring pixels, and rises to one over the overlap; frame
borders keep full weight. The overlap must cover the model's receptive radius, see
:func:`default_overlap`. Models with transposed (channel) attention (ELF, DDSA) pool statistics over
their whole input, so a tile sees only its own: their tiled output is close to, not equal to, the
whole-image output (54.6 dB PSNR apart for ``elf_lw`` at 256 px tiles, ``tests/test_tiling.py``).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .base import pad_to_multiple_np

#: Tile side used by ``derain`` when none is given: 1024 px keeps a U-Net's activations in a few hundred MB.
DEFAULT_TILE = 1024


def default_overlap(backend) -> int:
    """Twice the model's receptive radius (so a pixel blended from a tile is one radius away from that
    tile's border), rounded up to the input multiple."""
    multiple = backend.input_multiple
    radius = getattr(backend, "receptive_radius", None) or 2 * multiple
    return -(-2 * radius // multiple) * multiple


def check_tile(tile: int, overlap: int, multiple: int) -> int:
    """The tile side to use (rounded down to ``multiple``), or a one-line ValueError."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile size must be a positive number of pixels, got {tile!r}")
    side = int(tile) // multiple * multiple
    if side <= overlap:
        raise ValueError(f"tile {tile} px leaves nothing between overlaps of {overlap} px (tiles are multiples of "
                         f"{multiple}); use --tile {(overlap // multiple + 2) * multiple} or more")
    return side


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of ``tile`` px covering ``size`` px with at least ``overlap`` px shared (the last
    tile ends at the edge). With ``size``, ``tile`` and ``overlap`` multiples of the model's input multiple,
    every offset is one too, so each tile sees the down-sampling grid the whole frame would."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _ramp(length: int, overlap: int, inner_start: bool, inner_end: bool) -> np.ndarray:
    """1-D blending weights: linear from ~0 to 1 over ``overlap`` px at each inner end, 1 elsewhere."""
    weights = np.ones(length, np.float32)
    if overlap <= 0:
        return weights
    rise = (np.arange(min(overlap, length), dtype=np.float32) + 0.5) / overlap
    if inner_start:
        weights[:rise.size] = np.minimum(weights[:rise.size], rise)
    if inner_end:
        weights[-rise.size:] = np.minimum(weights[-rise.size:], rise[::-1])
    return weights


def tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """(rows, columns, blending weights) of every tile of a ``height`` x ``width`` frame."""
    th, tw = min(tile, height), min(tile, width)
    for y in tile_starts(height, tile, overlap):
        wy = _ramp(th, overlap, y > 0, y + th < height)
        for x in tile_starts(width, tile, overlap):
            wx = _ramp(tw, overlap, x > 0, x + tw < width)
            yield slice(y, y + th), slice(x, x + tw), wy[:, None] * wx[None, :]


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def run_tiled(backend, batch: np.ndarray, tile: int = DEFAULT_TILE, overlap: int | None = None,
              progress: bool = False) -> np.ndarray:
    """``backend.run(batch)`` for an (N, 3, H, W) batch, in overlapping tiles when H or W exceeds ``tile``.

    ``overlap`` defaults to :func:`default_overlap`; ``progress`` shows a bar over the tiles.
    """
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        return backend.run(batch)  # the backend's own one-line error
    multiple = backend.input_multiple
    overlap = default_overlap(backend) if overlap is None else int(overlap)
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0 pixels, got {overlap}")
    overlap = -(-overlap // multiple) * multiple  # keeps every tile offset on the model's grid
    side = check_tile(tile, overlap, multiple)
    height, width = batch.shape[-2:]
    if height <= side and width <= side:
        return backend.run(batch)
    from tqdm import tqdm

    # Padded once, as Backend.run pads a whole frame: every tile is then a full, aligned tile (one engine
    # shape) and the frame's bottom/right edge sees the same padding as without tiles.
    padded = pad_to_multiple_np(np.ascontiguousarray(batch, dtype=np.float32), multiple)
    out = np.zeros(padded.shape, np.float32)
    total = np.zeros(padded.shape[-2:], np.float32)
    bar = tqdm(total=count_tiles(*padded.shape[-2:], side, overlap), desc=f"tiles of {side}px", unit="tile",
               disable=not progress, leave=False)
    for rows, cols, weights in tiles(*padded.shape[-2:], side, overlap):
        out[:, :, rows, cols] += backend.run(np.ascontiguousarray(padded[:, :, rows, cols])) * weights
        total[rows, cols] += weights
        bar.update()
    bar.close()
    out /= total
    return out[:, :, :height, :width]
