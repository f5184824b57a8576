"""SIGINT/SIGTERM turned into a graceful stop while a pipeline runs."""
from __future__ import annotations

import signal
import threading
from typing import Callable


class StopOnSignals:
    """While the context runs, SIGINT/SIGTERM call ``on_signal`` (main thread only, and only when ``enabled``);
    the previous handlers come back on exit. PyGObject's MainLoop.run wakes up for Python signal handlers, so
    they run promptly."""

    def __init__(self, on_signal: Callable[[], None], enabled: bool = True):
        self.on_signal, self.enabled = on_signal, enabled
        self.previous: dict = {}

    def __enter__(self) -> "StopOnSignals":
        self.previous = {}
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.on_signal()

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
