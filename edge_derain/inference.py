"""Derain files: images to images, videos to videos, through any backend."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .backends import Backend
from .data import list_images, read_image, write_image
from .video import VIDEO_SUFFIXES, VideoWriter, read_video


def derain_array(backend: Backend, image: np.ndarray) -> np.ndarray:
    """HxWx3 float RGB in [0, 1] -> derained HxWx3, clipped to [0, 1]."""
    return np.clip(backend.run(image.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0), 0.0, 1.0)


def derain_paths(backend: Backend, inputs: list[str | Path], out_dir: str | Path) -> Iterator[tuple[Path, Path]]:
    """Derain every image/video in ``inputs`` (folders are expanded); yield (source, output) pairs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in map(Path, inputs):
        if not item.exists():
            raise FileNotFoundError(f"input {item} does not exist")
        for src in (list_images(item) if item.is_dir() else [item]):
            if src.suffix.lower() in VIDEO_SUFFIXES:
                dst = out_dir / f"{src.stem}_derained.mp4"
                writer = VideoWriter(dst, fps=24.0)
                for frame in read_video(src):
                    writer.write(derain_array(backend, frame))
                writer.close()
            else:
                dst = out_dir / f"{src.stem}_derained.png"
                write_image(dst, derain_array(backend, read_image(src)))
            yield src, dst
