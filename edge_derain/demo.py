"""``edge-derain demo``: render rain on a clean image or video, derain it, show and measure the result.

Writes a side-by-side (rainy | derained | clean) PNG for an image, or an MP4 for a video (or for a
short clip panned across an image with ``--clip N``), and reports PSNR(rainy) -> PSNR(derained) on the
Y channel and the frames per second of the backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import Backend
from .data import RainRenderer, read_image, write_image
from .inference import derain_array
from .metrics import psnr
from .video import VIDEO_SUFFIXES, VideoWriter, read_video

SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "sample.jpg"


@dataclass
class DemoResult:
    output: Path
    frames: int
    psnr_rainy: float
    psnr_derained: float
    fps: float

    def summary(self) -> str:
        return (f"PSNR-Y {self.psnr_rainy:.2f} dB (rainy) -> {self.psnr_derained:.2f} dB (derained), "
                f"{self.psnr_derained - self.psnr_rainy:+.2f} dB over {self.frames} frame(s); "
                f"{self.fps:.1f} frames/s; wrote {self.output}")


def pan_clip(image: np.ndarray, frames: int, crop_frac: float = 0.85):
    """A slow left-to-right pan across ``image``: a video from a still, for the camera-like demo."""
    h, w = image.shape[:2]
    ch, cw = int(h * crop_frac) // 2 * 2, int(w * crop_frac) // 2 * 2
    for i in range(frames):
        x = round((w - cw) * i / max(1, frames - 1))
        y = (h - ch) // 2
        yield image[y:y + ch, x:x + cw]


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    h = images[0].shape[0]
    spacer = np.ones((h, gap, 3), np.float32)
    parts = []
    for img in images:
        parts += [np.clip(img, 0, 1), spacer]
    return np.concatenate(parts[:-1], axis=1)


def run_demo(backend: Backend, out_dir: str | Path, source: str | Path | None = None, clip: int = 0,
             intensity: str = "heavy", seed: int = 0, max_frames: int | None = None) -> DemoResult:
    """Render rain on ``source`` (default: the shipped sample), derain with ``backend``, write outputs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(source) if source else SAMPLE_IMAGE
    if not source.exists():
        raise FileNotFoundError(f"demo input {source} does not exist; pass an image or video path, or omit it "
                                f"to use the shipped sample")
    renderer = RainRenderer.preset(intensity)
    rng = np.random.default_rng(seed)
    is_video = source.suffix.lower() in VIDEO_SUFFIXES
    if is_video:
        frames = read_video(source, max_frames)
    elif clip > 0:
        frames = pan_clip(read_image(source), clip)
    else:
        frames = iter([read_image(source)])

    writer = VideoWriter(out_dir / "demo_side_by_side.mp4", fps=24.0) if (is_video or clip > 0) else None
    psnr_in, psnr_out, infer_s, last = [], [], 0.0, None
    for clean in frames:
        rainy, _ = renderer.render(clean, rng)
        start = time.perf_counter()
        derained = derain_array(backend, rainy)
        infer_s += time.perf_counter() - start
        psnr_in.append(psnr(rainy, clean, "y"))
        psnr_out.append(psnr(derained, clean, "y"))
        last = side_by_side(rainy, derained, clean)
        if writer:
            writer.write(last)
    if writer:
        writer.close()
        output = writer.path
        write_image(out_dir / "demo_last_frame.png", last)
    else:
        output = out_dir / "demo_side_by_side.png"
        write_image(output, last)
    return DemoResult(output, len(psnr_in), float(np.mean(psnr_in)), float(np.mean(psnr_out)),
                      len(psnr_in) / max(infer_s, 1e-9))
