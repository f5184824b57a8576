"""Derain files: images to images, videos to videos, through any backend.

Large images and frames run in overlapping tiles (:mod:`edge_derain.backends.tiling`), so memory stays
bounded whatever the input size. A batch of inputs goes on past a bad one: every failure is reported with
its one-line reason and the caller decides the exit code. Videos are written as H.264 4:2:0 MP4 at the
source's frame rate (:class:`~edge_derain.gst.writer.Mp4Writer`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .backends import Backend
from .backends.tiling import DEFAULT_TILE, run_tiled
from .data import IMAGE_SUFFIXES, read_image, write_image
from .video import VIDEO_SUFFIXES, read_video, video_info

#: What a bad input raises (unreadable file, wrong format, a codec GStreamer lacks): reported, then skipped.
ITEM_ERRORS = (ValueError, OSError, RuntimeError)


@dataclass(frozen=True)
class DerainItem:
    source: Path
    output: Path | None = None   # None: failed
    error: str | None = None     # the one-line reason


def derain_array(backend: Backend, image: np.ndarray, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                 progress: bool = False) -> np.ndarray:
    """HxWx3 float RGB in [0, 1] -> derained HxWx3, clipped to [0, 1]; in tiles of ``tile`` px when larger
    (None: whole)."""
    batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
    out = backend.run(batch) if tile is None else run_tiled(backend, batch, tile, overlap, progress)
    return np.clip(out[0].transpose(1, 2, 0), 0.0, 1.0)


def expand_inputs(inputs: list[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Every image/video named by ``inputs`` (folders expanded, sorted): (path, None), or (path, why not)."""
    for item in map(Path, inputs):
        if not item.exists():
            yield item, f"{item} does not exist"
        elif item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
            if not found:
                yield item, f"no images or videos in folder {item}"
            yield from ((path, None) for path in found)
        else:
            yield item, None


def derain_video(backend: Backend, src: Path, dst: Path, tile: int | None = DEFAULT_TILE,
                 overlap: int | None = None, progress: bool = False) -> Path:
    """Derain every frame of ``src`` into ``dst`` (MP4, the source's frame rate), a bar over the frames."""
    from tqdm import tqdm

    from .gst.writer import Mp4Writer

    fps, count = video_info(src)
    with Mp4Writer(dst, fps=fps) as writer, tqdm(total=count or None, desc=src.name, unit="frame",
                                                 disable=not progress, leave=False) as bar:
        for frame in read_video(src):
            out = derain_array(backend, frame, tile, overlap)
            writer.write((out * np.float32(255.0) + np.float32(0.5)).astype(np.uint8))
            bar.update()
    return dst


def derain_paths(backend: Backend, inputs: list[str | Path], out_dir: str | Path, tile: int | None = DEFAULT_TILE,
                 overlap: int | None = None, progress: bool = False) -> Iterator[DerainItem]:
    """Derain every image/video in ``inputs`` (folders are expanded) into ``out_dir``; one
    :class:`DerainItem` per input, in order, failures included (the rest still run)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, problem in expand_inputs(inputs):
        if problem:
            yield DerainItem(src, error=problem)
            continue
        try:
            if src.suffix.lower() in VIDEO_SUFFIXES:
                dst = derain_video(backend, src, out_dir / f"{src.stem}_derained.mp4", tile, overlap, progress)
            else:
                dst = write_image(out_dir / f"{src.stem}_derained.png",
                                  derain_array(backend, read_image(src), tile, overlap, progress))
        except ITEM_ERRORS as exc:
            yield DerainItem(src, error=str(exc))
            continue
        yield DerainItem(src, dst)
