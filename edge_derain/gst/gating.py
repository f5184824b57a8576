"""Rain-aware gating: skip the deraining network while it is not raining.

The score of a frame is measured on what the network removed from it, ``residual = Y(input) -
Y(derained)``: its high-frequency band (the residual minus a Gaussian blur of it, sigma 2 px) keeps thin
streaks and drops the tone and colour changes every restoration network makes; rain streaks in one frame
share one orientation (they fall in one direction), while the texture a network smooths away points
every way, so the mean absolute high-pass residual (in 8-bit grey levels) is weighted by the
*coherence* of its structure tensor (0: isotropic, 1: one orientation).

The scores depend on the network: one that leaves dry frames almost untouched scores them near 0
(``elf_lw``: median 0.2 dry, 1.6 light rain, 8.5 heavy), one that retouches every frame scores textured
dry scenes close to light rain (``efderain_w025``: 0.8 dry, 1.5 light). So each shipped weight has its own thresholds (``CALIBRATED_THRESHOLDS``), set by one rule
(:func:`calibrate_thresholds`: on at the 90th percentile of its scores on dry frames, off at on / 1.5)
from ``benchmarks/rain_gate.py`` (``benchmarks/results/rain_gate.json``, table in BENCHMARKS.md: 35
development backgrounds, dry and with each rain preset); a test pins them to that JSON and fails while a
shipped weight has no entry there or its file's SHA-256 differs from the one measured (rerun the
benchmark whenever you ship). :class:`RainGate` given no thresholds takes
those of its weights (a shipped name, or the default model for an engine, an ONNX file or weights of
your own). For your own weights or footage, score a few seconds of your dry scenes with
:func:`rain_score` and pass :func:`calibrate_thresholds` of those scores as ``gate-on``/``gate-off``
(or run ``benchmarks/rain_gate.py --weights W``). The gate errs towards deraining: it starts on, and a
dry scene that scores above the off-threshold keeps it on (the only cost is the compute it would have
saved). With the default ``elf_lw`` this turns deraining on for 89% of the light-rain images, 97% of
the medium ones, all heavy, storm and dense ones, 60% of the ``mist`` ones (faint streaks under a veil), and
6% of the dry ones.

The network must run for a score to exist, so while the gate is off it still runs on one frame in
``probe_interval`` (a probe); a probe above the on-threshold makes the gate probe every frame until
``min_frames`` consecutive scores confirm rain (or one score below it rejects it), so rain is picked
up within ``probe_interval + min_frames`` frames. While on, every frame is derained and scored for
free; ``min_frames`` consecutive scores at or below the off-threshold turn it off. The hysteresis
(on > off, and the confirmation runs) keeps the output from flickering between raw and derained frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
HIGH_PASS_SIGMA = 2.0
DEFAULT_MIN_FRAMES, DEFAULT_PROBE_INTERVAL = 3, 15
# (on, off) of each shipped weight: calibrate_thresholds of its dry scores in benchmarks/results/rain_gate.json
# (tests/test_benchmarks.py checks that they match it).
CALIBRATED_THRESHOLDS = {"efderain_w025": (1.8, 1.2), "elf_lw": (0.6, 0.4)}


def calibrate_thresholds(dry_scores: Sequence[float]) -> tuple[float, float]:
    """``(on, off)`` for a network from its scores on dry frames (at least 10).

    On at their 90th percentile (rounded up to 0.1): one dry scene in ten can turn deraining on, and any
    rain that scores above nine dry scenes in ten does. Off at on / 1.5, the hysteresis margin that keeps
    one noisy score from switching the gate back. The rule errs towards deraining, because rain left in
    a frame costs the detector more than deraining a dry frame costs compute.
    """
    scores = np.asarray(dry_scores, np.float64)
    if scores.size < 10:
        raise ValueError(f"calibrating the rain gate needs at least 10 dry-frame scores, got {scores.size}")
    on = max(0.2, math.ceil(10.0 * float(np.percentile(scores, 90)) - 1e-9) / 10.0)
    return on, round(on / 1.5, 1)


def thresholds_for(weights: str | Path | None) -> tuple[float, float]:
    """The calibrated ``(on, off)`` of shipped weights (a name or the shipped file; None: the default model);
    any other weights get the default model's (calibrate yours with :func:`calibrate_thresholds`)."""
    from ..checkpoint import DEFAULT_WEIGHTS, SHIPPED_DIR

    name = DEFAULT_WEIGHTS if weights is None else str(weights)
    path = Path(name)
    if path.suffix == ".safetensors" and path.resolve().parent == SHIPPED_DIR:
        name = path.stem
    return CALIBRATED_THRESHOLDS.get(name, CALIBRATED_THRESHOLDS[DEFAULT_WEIGHTS])


def _luma(frame: np.ndarray) -> np.ndarray:
    """HxWx3 RGB (uint8 or float in [0, 1]) -> HxW float32 luma in [0, 1]."""
    rgb = frame.astype(np.float32)
    if frame.dtype == np.uint8:
        rgb *= np.float32(1.0 / 255.0)
    return rgb @ _LUMA


def rain_score(frame: np.ndarray, derained: np.ndarray) -> float:
    """How much oriented, thin structure the network removed from ``frame`` (see the module docstring).

    Both are HxWx3 RGB, uint8 or float in [0, 1]; the score is in 8-bit grey levels, ~0 for a frame the
    network left alone.
    """
    import cv2

    if frame.shape != derained.shape or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"rain_score needs two HxWx3 RGB frames of one shape, got {frame.shape} and "
                         f"{derained.shape}; pass the network's input and its output")
    residual = _luma(frame) - _luma(derained)
    high = residual - cv2.GaussianBlur(residual, (0, 0), HIGH_PASS_SIGMA)
    gx = cv2.Sobel(high, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(high, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float(np.mean(gx * gx)), float(np.mean(gy * gy)), float(np.mean(gx * gy))
    trace = jxx + jyy
    if trace <= 0.0:
        return 0.0
    coherence = np.sqrt((jxx - jyy) ** 2 + 4.0 * jxy * jxy) / trace
    return float(255.0 * np.mean(np.abs(high)) * coherence)


@dataclass
class GateStats:
    frames: int = 0     # frames seen
    derained: int = 0   # frames whose derained output was used
    skipped: int = 0    # frames the network did not run on
    probes: int = 0     # frames the network ran on only to measure the score (output not used)
    switches: int = 0   # on <-> off transitions

    def to_dict(self) -> dict:
        return dict(vars(self))


class RainGate:
    """Hysteresis on :func:`rain_score`. Per frame: ``run_model = gate.begin_frame()``; when it is True,
    run the network, ``use_output = gate.update(score)``; otherwise pass the frame through.

    ``raining`` is the initial state: True (the default) derains from the first frame and turns off
    after ``min_frames`` dry scores, so a pipeline never starts by showing rain it could have removed.
    """

    def __init__(self, on_threshold: float | None = None, off_threshold: float | None = None,
                 min_frames: int = DEFAULT_MIN_FRAMES, probe_interval: int = DEFAULT_PROBE_INTERVAL,
                 raining: bool = True, weights: str | Path | None = None):
        calibrated = thresholds_for(weights)  # for the thresholds not given
        on_threshold = calibrated[0] if on_threshold is None else on_threshold
        off_threshold = calibrated[1] if off_threshold is None else off_threshold
        if not off_threshold < on_threshold:
            raise ValueError(f"the gate's off-threshold ({off_threshold}) must be below its on-threshold "
                             f"({on_threshold}) for hysteresis; e.g. gate-on=1.5 gate-off=1.0")
        if min_frames < 1 or probe_interval < 1:
            raise ValueError(f"gate min-frames and probe interval must be >= 1, got {min_frames} and {probe_interval}")
        self.on_threshold, self.off_threshold = float(on_threshold), float(off_threshold)
        self.min_frames, self.probe_interval = int(min_frames), int(probe_interval)
        self.raining = bool(raining)
        self.stats = GateStats()
        self.last_score: float | None = None
        self._streak = 0          # consecutive scores pointing at the other state
        self._since_probe = 0     # frames since the last probe while off
        self._pending = False     # this frame was admitted to the network

    @property
    def confirming(self) -> bool:
        """Off, but the last probe saw rain: probing every frame until it is confirmed or rejected."""
        return not self.raining and self._streak > 0

    def begin_frame(self) -> bool:
        """Whether the network runs on this frame."""
        self.stats.frames += 1
        if self.raining or self.confirming or self._since_probe + 1 >= self.probe_interval:
            self._since_probe = 0
            self._pending = True
            return True
        self._since_probe += 1
        self.stats.skipped += 1
        return False

    def update(self, score: float) -> bool:
        """Feed the score of the frame admitted by :meth:`begin_frame`; return whether to use the derained
        output (the state after this score)."""
        if not self._pending:
            raise RuntimeError("RainGate.update called without begin_frame() admitting the frame; call "
                               "begin_frame() once per frame and update() only when it returned True")
        self._pending = False
        self.last_score = float(score)
        toward_other = score <= self.off_threshold if self.raining else score >= self.on_threshold
        self._streak = self._streak + 1 if toward_other else 0
        if self._streak >= self.min_frames:
            self.raining = not self.raining
            self._streak = 0
            self.stats.switches += 1
        if self.raining:
            self.stats.derained += 1
        else:
            self.stats.probes += 1
        return self.raining
