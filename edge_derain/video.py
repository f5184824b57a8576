"""Video files in and out (OpenCV): RGB float32 frames in [0, 1], one-line errors for bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def read_video(path: Path, max_frames: int | None = None):
    """Yield RGB float32 frames of a video; a one-line error if OpenCV cannot decode it."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: unreadable file or unsupported codec "
                         f"(re-encode it to H.264 MP4, e.g. ffmpeg -i in -c:v libx264 out.mp4)")
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
        raise ValueError(f"video {path} has no decodable frames; check the file or re-encode it")


class VideoWriter:
    """MP4 writer (OpenCV 'mp4v'); frames are RGB float in [0, 1]."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self._writer = path, fps, None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {self.path}; pick a .mp4 path in a writable folder")
        bgr = cv2.cvtColor((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
        self._writer.write(bgr)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
