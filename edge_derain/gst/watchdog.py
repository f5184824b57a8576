"""The time limits of a pipeline run and the reconnection of a failed live source.

:class:`Watchdog` answers, on every tick of the run, whether EOS is overdue (a pipeline that does not
finish within ``eos_timeout`` of EOS is stopped), whether ``duration`` is over, and whether the run
stalled (no frame for ``stall_timeout`` seconds while no stage is loading its model).
:class:`Reconnection` decides whether a failed live source is tried again and after what delay.
"""
from __future__ import annotations

# Seconds of frames after which a reconnected source counts as healthy again (its retry count resets), so a
# camera that drops out now and then over days is not given up after max_retries outages in total.
RETRY_RESET_S = 30.0


class Watchdog:
    """The clock of one run: when the current segment started, the last frame, the EOS deadline."""

    def __init__(self, eos_timeout: float, stall_timeout: float | None, duration: float | None):
        self.eos_timeout, self.stall_timeout, self.duration = eos_timeout, stall_timeout, duration
        self.started = self.last_frame = self.eos_deadline = 0.0

    def start_segment(self, now: float) -> None:
        self.started = self.last_frame = now

    def frame(self, now: float) -> None:
        self.last_frame = now

    def eos_requested(self, now: float) -> None:
        self.eos_deadline = now + self.eos_timeout

    def eos_overdue(self, now: float) -> bool:
        return now > self.eos_deadline

    def duration_over(self, now: float) -> bool:
        return self.duration is not None and now - self.started >= self.duration

    def stalled(self, now: float, last_out: float | None, loading: bool) -> bool:
        """No frame in or out for ``stall_timeout`` seconds, while no stage is loading a model."""
        if self.stall_timeout is None or loading:
            return False
        return now - max(self.last_frame, last_out or 0.0) > self.stall_timeout


class Reconnection:
    """Reconnection of a failed live source (when ``enabled``): up to ``max_retries`` consecutive attempts, the
    delay doubling from ``backoff[0]`` to at most ``backoff[1]`` seconds; ``reset_after_s`` seconds of frames
    reset the count."""

    def __init__(self, enabled: bool, max_retries: int, backoff: tuple[float, float],
                 reset_after_s: float = RETRY_RESET_S):
        self.enabled, self.max_retries, self.backoff, self.reset_after_s = enabled, max_retries, backoff, reset_after_s
        self.retries = 0

    def try_again(self) -> bool:
        """Whether another attempt is allowed; counts it."""
        if not self.enabled or self.retries >= self.max_retries:
            return False
        self.retries += 1
        return True

    def delay(self) -> float:
        return min(self.backoff[1], self.backoff[0] * 2 ** (self.retries - 1))

    def announcement(self) -> str:
        """The log line of the attempt just counted by :meth:`try_again`."""
        return f"reconnecting in {self.delay():.0f} s (attempt {self.retries} of {self.max_retries})"

    def note_progress(self, now: float, segment_started: float, segment_frames: int) -> None:
        if self.retries and now - segment_started > self.reset_after_s and segment_frames:
            self.retries = 0
