"""Video files in (OpenCV): RGB float32 frames in [0, 1], one-line errors for bad files. Videos are written
by :class:`edge_derain.gst.writer.Mp4Writer` (H.264 4:2:0 MP4, the pipelines' encoder)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
_REENCODE_HINT = "re-encode it to H.264 MP4, e.g. ffmpeg -i in -c:v libx264 -pix_fmt yuv420p out.mp4"


def _open(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"cannot open video {path}: unreadable file or unsupported codec ({_REENCODE_HINT})")
    return cap


def video_info(path: Path, default_fps: float = 25.0) -> tuple[float, int]:
    """(frames per second, frame count) as the container states them; ``default_fps`` and 0 when it does not."""
    import cv2

    cap = _open(path)
    try:
        fps, count = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else default_fps
    return fps, int(count) if math.isfinite(count) and count > 0 else 0


def read_video(path: Path, max_frames: int | None = None):
    """Yield RGB float32 frames of a video; a one-line error if OpenCV cannot decode it."""
    import cv2

    cap = _open(path)
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    finally:
        cap.release()
    if count == 0:
        raise ValueError(f"video {path} has no decodable frames; check the file or {_REENCODE_HINT}")
