"""Backend comparison report (pass/fail logic) and the latency benchmark (JSON + PNG)."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from edge_derain.backends.base import Backend
from edge_derain.bench import print_benchmark, run_benchmark, write_benchmark
from edge_derain.compare import compare_backends, error_stats, print_compare_report, random_inputs


class _Affine(Backend):
    """Deterministic stand-in for a network: ``0.8 x + 0.1`` plus an optional error pattern."""

    name = "affine"
    input_multiple = 8

    def __init__(self, perturb=None):
        self.perturb = perturb
        self.seen = []

    def infer(self, batch):
        self.seen.append(batch.copy())
        out = 0.8 * batch + 0.1
        if self.perturb is not None:
            out = self.perturb(out)
        return out


def _bump_first(delta):
    def perturb(out):
        out = out.copy()
        out.flat[0] += delta
        return out
    return perturb


def test_identical_backends_pass_with_zero_error():
    a, b = _Affine(), _Affine()
    report = compare_backends(a, b, sizes=[(16, 24), (13, 30)], batch=2, seed=3)
    assert report["passed"] and len(report["results"]) == 2
    for r in report["results"]:
        assert r["max_abs_err"] == r["mean_abs_err"] == r["max_rel_err"] == 0.0
        assert math.isinf(r["psnr_db"]) and r["mismatches"] == 0 and r["passed"]
    assert [r["input_shape"] for r in report["results"]] == [[2, 3, 16, 24], [2, 3, 13, 30]]
    # Both backends saw the same seeded, non-zero, padded inputs.
    assert all(np.array_equal(x, y) for x, y in zip(a.seen, b.seen))
    assert all(x.min() >= 0 and x.max() > 0 and x.shape[-2] % 8 == 0 == x.shape[-1] % 8 for x in a.seen)


def test_tolerances_decide_pass_fail():
    inputs = random_inputs([(16, 16)], seed=0)
    reference = _Affine()
    bumped = _Affine(_bump_first(1e-3))
    failing = compare_backends(bumped, reference, inputs=inputs, atol=1e-4, rtol=1e-4)
    (r,) = failing["results"]
    assert not failing["passed"] and not r["passed"] and r["mismatches"] == 1
    assert r["max_abs_err"] == pytest.approx(1e-3, rel=1e-3)
    expected_ref = 0.8 * inputs[0].flat[0] + 0.1
    assert r["max_rel_err"] == pytest.approx(1e-3 / expected_ref, rel=1e-3)
    assert r["mean_abs_err"] == pytest.approx(1e-3 / inputs[0].size, rel=1e-3)
    assert r["psnr_db"] == pytest.approx(10 * math.log10(inputs[0].size / 1e-6), rel=1e-3)
    # Either tolerance alone is enough for an element (Polygraphy's rule).
    assert compare_backends(bumped, reference, inputs=inputs, atol=2e-3, rtol=0)["passed"]
    assert compare_backends(bumped, reference, inputs=inputs, atol=0, rtol=2e-2)["passed"]


def test_nan_output_fails_and_report_prints(capsys):
    inputs = random_inputs([(8, 8)], seed=1)
    report = compare_backends(_Affine(_bump_first(np.nan)), _Affine(), inputs=inputs, atol=1, rtol=1)
    assert not report["passed"] and report["results"][0]["nonfinite"] == 1
    print_compare_report(report)
    text = capsys.readouterr().out
    assert "FAIL" in text and "8x8" in text


def test_error_stats_and_argument_errors():
    with pytest.raises(ValueError, match="output shapes differ"):
        error_stats(np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 5)), 1e-4, 1e-4)
    with pytest.raises(ValueError, match="atol must be a non-negative number"):
        compare_backends(_Affine(), _Affine(), atol=-1)
    with pytest.raises(ValueError, match="no inputs to compare"):
        compare_backends(_Affine(), _Affine(), sizes=[])


class _Sleeper(_Affine):
    """Latency that grows with the pixel count, so the benchmark has a trend to plot."""

    name = "sleeper"

    def __init__(self, ms_per_mpix):
        super().__init__()
        self.ms_per_mpix = ms_per_mpix

    def infer(self, batch):
        time.sleep(self.ms_per_mpix * batch.shape[-1] * batch.shape[-2] / 1e9)
        return super().infer(batch)


def test_benchmark_writes_json_and_png(tmp_path, capsys):
    backends = {"fast": _Sleeper(2000.0), "slow": _Sleeper(6000.0)}
    results = run_benchmark(backends, [(32, 48), (64, 96)], batch=2, warmup=1, iters=6, progress=False)
    rows = results["results"]
    assert [(r["backend"], r["height"], r["width"]) for r in rows] == [
        ("fast", 32, 48), ("fast", 64, 96), ("slow", 32, 48), ("slow", 64, 96)]
    for r in rows:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["fps"] == pytest.approx(2 * 1000 / r["median_ms"])
    by_key = {(r["backend"], r["height"]): r["median_ms"] for r in rows}
    assert by_key[("slow", 64)] > by_key[("fast", 64)] and by_key[("slow", 64)] > by_key[("slow", 32)]
    # Warm-up + timed calls, on random (never zero) inputs that alternate between calls.
    seen = backends["fast"].seen
    assert len(seen) == 2 * (1 + 6)
    assert all(x.min() >= 0 and x.mean() > 0.3 for x in seen) and not np.array_equal(seen[0], seen[1])

    json_path, png_path = write_benchmark(results, tmp_path / "bench")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(results))
    png = png_path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    print_benchmark(results)
    assert "frames/s" in capsys.readouterr().out


def test_benchmark_argument_errors():
    with pytest.raises(ValueError, match="no backends"):
        run_benchmark({}, [(16, 16)])
    with pytest.raises(ValueError, match="no resolutions"):
        run_benchmark({"a": _Affine()}, [])
    with pytest.raises(ValueError, match="iters must be an int >= 1"):
        run_benchmark({"a": _Affine()}, [(16, 16)], iters=0)
    with pytest.raises(ValueError, match=r"\(height, width\) pairs"):
        run_benchmark({"a": _Affine()}, [(16, 0)], progress=False)


def test_benchmark_per_batch_size_shows_throughput(tmp_path):
    class PerCall(_Affine):
        """A fixed cost per call plus a small cost per frame: batching pays off."""

        def infer(self, batch):
            time.sleep(0.004 + 0.001 * batch.shape[0])
            return super().infer(batch)

    results = run_benchmark({"b": PerCall()}, [(16, 16)], batch=[1, 4], warmup=1, iters=5, progress=False)
    assert results["batch"] == [1, 4]
    by_batch = {r["batch"]: r for r in results["results"]}
    assert by_batch[4]["fps"] > 1.8 * by_batch[1]["fps"]          # frames/s counts frames, not calls
    assert write_benchmark(results, tmp_path)[1].read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        run_benchmark({"b": PerCall()}, [(16, 16)], batch=[1, 0])
