"""MP4 files from frames in memory: the same H.264 encoder fragment as the pipelines' file sink.

:class:`Mp4Writer` pushes RGB frames through ``appsrc ! <file sink of this platform>`` (``pipelines/``:
4:2:0 H.264 at Main profile in MP4 on a desktop, ``nvv4l2h264enc`` on a Jetson), so ``derain`` on a
video writes what recordings write: a file browsers and common players open. The file grows under its
partial name (:func:`~edge_derain.gst.pipeline.partial_path`) and gets its name only when the muxer has
finished it; a writer closed after a failure (or never given a frame) leaves nothing behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import require_gst
from .pipeline import SinkSpec, element, finish_recording, sink_fragment


def even_frame(frame: np.ndarray) -> np.ndarray:
    """4:2:0 chroma needs even sizes: replicate the last row/column of an odd-sized HxWx3 frame."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class Mp4Writer:
    """Write HxWx3 uint8 RGB frames (one size) to ``path`` (.mp4, .mov or .mkv) at ``fps``.

    Use as a context manager: leaving the block normally finishes the file, an exception discards it.
    """

    def __init__(self, path: str | os.PathLike, fps: float, bitrate_kbps: int = 8000, platform: str = "auto",
                 eos_timeout: float = 60.0):
        if not fps > 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        self.path, self.fps, self.eos_timeout = Path(path), float(fps), eos_timeout
        self.sink = SinkSpec("file", str(self.path))
        self._fragment = sink_fragment(self.sink, platform, bitrate_kbps=bitrate_kbps)[0]  # checks the suffix
        self.frames = 0
        self._pipeline = self._appsrc = None
        self._size: tuple[int, int] | None = None

    def _open(self, height: int, width: int) -> None:
        Gst = require_gst()
        num, den = Gst.util_double_to_fraction(self.fps)
        caps = f"video/x-raw,format=RGB,width={width},height={height},framerate={num}/{den}"
        # videoconvert first: a Jetson's nvvidconv takes RGBA/BGRx, not the packed RGB pushed here
        description = element("appsrc", "frames", format="time", caps=caps, block=True,
                              max_bytes=4 * 3 * width * height) + " ! videoconvert ! " + self._fragment
        self._pipeline = Gst.parse_launch(description)
        self._appsrc = self._pipeline.get_by_name("frames")
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._fail_from_bus(f"cannot start the encoder for {self.path}")

    def write(self, frame: np.ndarray) -> None:
        from .elements import frame_to_buffer

        Gst = require_gst()
        frame = even_frame(np.ascontiguousarray(frame))
        if self._pipeline is None:
            self._size = frame.shape[:2]
            self._open(*self._size)
        elif frame.shape[:2] != self._size:
            raise ValueError(f"{self.path}: frame {frame.shape[1]}x{frame.shape[0]} differs from the first frame's "
                             f"{self._size[1]}x{self._size[0]}; one video holds one frame size")
        buffer = frame_to_buffer(frame)
        buffer.pts = round(self.frames * Gst.SECOND / self.fps)
        buffer.duration = round(Gst.SECOND / self.fps)
        if self._appsrc.emit("push-buffer", buffer) != Gst.FlowReturn.OK:
            self._fail_from_bus(f"the encoder for {self.path} stopped")
        self.frames += 1

    def _fail_from_bus(self, what: str) -> None:
        from .pipeline import describe_error

        Gst = require_gst()
        message = self._pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        raise RuntimeError(what + (f": {describe_error(message)}" if message is not None else ""))

    def close(self, keep: bool = True) -> Path | None:
        """Finish the file (``keep``) or discard it; return the path written, None when nothing was.
        A file the encoder could not finish is removed (the input is still there to derain again)."""
        from .pipeline import describe_error

        Gst = require_gst()
        finalised, problem = False, None
        if self._pipeline is not None:
            if keep and self.frames:
                self._appsrc.emit("end-of-stream")
                message = self._pipeline.get_bus().timed_pop_filtered(
                    int(self.eos_timeout * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR)
                finalised = message is not None and message.type == Gst.MessageType.EOS
                if not finalised:
                    problem = (describe_error(message) if message is not None
                               else f"not finished within {self.eos_timeout:g} s")
            self._pipeline.set_state(Gst.State.NULL)
            self._pipeline = self._appsrc = None
        finish_recording(self.sink, self.frames if finalised else 0, finalised)
        if problem:
            raise RuntimeError(f"cannot finish {self.path}: {problem}")
        return self.path if finalised else None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close(keep=kind is None)
