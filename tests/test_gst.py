"""GStreamer pipelines on CPU: elements, composer, runner (signals, leaky queues, errors, reconnect), gating,
gst-launch discovery and the demo. Skips when GStreamer's Python bindings are not installed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_derain.gst.gating import CALIBRATED_THRESHOLDS, RainGate, calibrate_thresholds, rain_score, thresholds_for
from edge_derain.gst.pipeline import (PipelineDefinition, PipelineOptions, PipelineRunner, SinkSpec, compose,
                                      element, gst_value, infer_pipeline, list_definitions, run_pipeline)

try:
    from edge_derain.gst import plugin_environment, register_elements, require_gst

    Gst = require_gst()
    register_elements()
except ImportError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"GStreamer Python bindings not importable ({exc}); run install.sh", allow_module_level=True)

from edge_derain.gst.elements import buffer_to_rgb, frame_to_buffer  # noqa: E402


def _decode(path: Path) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.fixture(scope="module")
def portable_onnx(tmp_path_factory) -> Path:
    """The shipped weights' portable graph (exported once per test module)."""
    from edge_derain.checkpoint import load_model
    from edge_derain.export import export_model

    return export_model(load_model(), tmp_path_factory.mktemp("onnx") / "efderain").portable_path


@pytest.fixture(scope="module")
def ort_backend(portable_onnx):
    from edge_derain.backends.ort_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(portable_onnx, providers=["CPUExecutionProvider"])


class _Frames:
    """Pad probe that keeps a copy of every frame passing a pad, by PTS."""

    def __init__(self, pipeline, element_name: str, pad: str = "src"):
        self.frames: dict[int, np.ndarray] = {}
        pipeline.get_by_name(element_name).get_static_pad(pad).add_probe(Gst.PadProbeType.BUFFER, self._probe)

    def _probe(self, pad, info):
        buf = info.get_buffer()
        self.frames[buf.pts] = buffer_to_rgb(buf, pad.get_current_caps())
        return Gst.PadProbeReturn.OK


# ---- composer (no pipeline runs) ------------------------------------------------------------------
def test_definitions_sources_sinks_and_composition():
    names = {d.name for d in list_definitions()}
    assert {"webcam", "jetson-csi", "file", "rtsp", "test"} <= names
    assert infer_pipeline("/dev/video2") == ("webcam", "/dev/video2")
    assert infer_pipeline("1") == ("webcam", "/dev/video1")
    assert infer_pipeline("csi:1") == ("jetson-csi", "1")
    assert infer_pipeline("rtsp://cam/stream") == ("rtsp", "rtsp://cam/stream")
    assert infer_pipeline("test:smpte") == ("test", "smpte")
    with pytest.raises(FileNotFoundError, match="not a file, a /dev/video device"):
        infer_pipeline("/no/such/video.mp4")
    assert SinkSpec.parse("rtsp:9000/cam") == SinkSpec("rtsp", port=9000, mount="/cam")
    assert SinkSpec.parse("file:out.mp4").segment(2).location == "out.2.mp4"
    with pytest.raises(ValueError, match="file:OUT.mp4, display"):
        SinkSpec.parse("window")
    with pytest.raises(ValueError, match="unknown pipeline 'nope'"):
        PipelineDefinition.load("nope")
    assert gst_value("a b") == '"a b"' and gst_value(True) == "true" and gst_value("/x/y.onnx") == "/x/y.onnx"
    assert element("queue", "q", max_size_buffers=2, leaky=None) == "queue name=q max-size-buffers=2"

    live = compose(PipelineOptions(source="test", detector="hog", sink="file:o.mp4", derain={"backend": "ort"}))
    assert live.live and live.stages == ("derain", "detect") and live.egress == "detect"
    assert live.description.count("leaky=downstream") == 2  # the stage queues; the sink queue never leaks
    assert "derain name=derain backend=ort" in live.description and "mp4mux" in live.description
    assert "gst-launch-1.0 -e" in live.gst_launch_command() and "GST_PLUGIN_PATH=" in live.gst_launch_command()
    jetson = compose(PipelineOptions(source="csi:0", platform="jetson", sink="rtsp:8554/derain", derain={}))
    assert "nvarguscamerasrc sensor-id=0" in jetson.description and "nvvidconv" in jetson.description
    assert "video/x-raw(memory:NVMM)" in jetson.description and "nvv4l2h264enc" in jetson.description
    assert "rtph264pay name=pay0" in jetson.rtsp_launch
    video = Path(__file__)  # any existing file: composition does not open it
    offline = compose(PipelineOptions(source=str(video), sink="fake", derain=None))
    assert not offline.live and "leaky" not in offline.description and offline.stages == ()
    assert f"uri={video.resolve().as_uri()}" in offline.description
    with pytest.raises(ValueError, match="ending in .mp4"):
        compose(PipelineOptions(sink="file:out.avi"))


def test_backend_selection_and_validation(tmp_path):
    from edge_derain.backends.auto import auto_backend
    from edge_derain.gst.select import BackendRequest, resolve_kind

    assert resolve_kind(BackendRequest()) == auto_backend()
    assert resolve_kind(BackendRequest(kind="torch")).kind == "torch"
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    assert resolve_kind(BackendRequest(engine=str(engine))).kind == "trt"
    with pytest.raises(ValueError, match="runs on TensorRT only"):
        BackendRequest(kind="ort", engine=str(engine)).validate()
    with pytest.raises(ValueError, match="precision fp16 needs TensorRT"):
        BackendRequest(kind="ort", precision="fp16").validate()
    with pytest.raises(ValueError, match="backend 'cuda' is not one of auto, trt, ort, torch"):
        BackendRequest(kind="cuda").validate()
    with pytest.raises(FileNotFoundError, match="model file .*missing.onnx not found"):
        BackendRequest(model=str(tmp_path / "missing.onnx")).validate()


# ---- gating ---------------------------------------------------------------------------------------
def test_rain_gate_hysteresis_probes_and_counts():
    gate = RainGate(on_threshold=2.0, off_threshold=1.0, min_frames=2, probe_interval=4)
    decisions = []
    scores = iter([5, 0.5, 0.5] + [0.5] * 20 + [3] * 10)
    for _ in range(20):  # raining, then two dry scores turn it off; then probes every 4th frame
        if gate.begin_frame():
            decisions.append(gate.update(next(scores)))
        else:
            decisions.append(None)
    assert decisions[:3] == [True, True, False]  # one dry score is not enough, the second switches off
    assert decisions[3:6] == [None, None, None] and decisions[6] is False  # probe on the 4th frame
    assert gate.stats.skipped == decisions.count(None) and gate.stats.probes == decisions.count(False)
    gate2 = RainGate(2.0, 1.0, min_frames=3, probe_interval=5, raining=False)
    runs = [gate2.begin_frame() for _ in range(4)]
    assert runs == [False, False, False, False] and gate2.begin_frame()  # the 5th frame is a probe
    assert gate2.update(3.0) is False and gate2.confirming  # rain seen: confirm on every frame
    assert gate2.begin_frame() and gate2.update(3.0) is False
    assert gate2.begin_frame() and gate2.update(3.0) is True and gate2.raining
    with pytest.raises(ValueError, match="below its on-threshold"):
        RainGate(1.0, 2.0)
    with pytest.raises(RuntimeError, match="without begin_frame"):
        RainGate().update(1.0)


def test_gate_thresholds_are_those_of_its_weights(tmp_path):
    from edge_derain.checkpoint import DEFAULT_WEIGHTS, SHIPPED_DIR, list_shipped_weights

    assert set(CALIBRATED_THRESHOLDS) == set(list_shipped_weights())  # shipping a weight means calibrating it
    for name, (on, off) in CALIBRATED_THRESHOLDS.items():
        assert 0 < off < on
        for spelling in (name, SHIPPED_DIR / f"{name}.safetensors"):
            gate = RainGate(weights=spelling)
            assert (gate.on_threshold, gate.off_threshold) == (on, off)
    default = CALIBRATED_THRESHOLDS[DEFAULT_WEIGHTS]
    assert (RainGate().on_threshold, RainGate().off_threshold) == default
    own = tmp_path / "efderain_w025.safetensors"  # not the shipped file, whatever its name
    assert thresholds_for(own) == default and thresholds_for("someone/else.safetensors") == default
    gate = RainGate(on_threshold=9.0, weights="efderain_w025")  # what is given wins
    assert (gate.on_threshold, gate.off_threshold) == (9.0, CALIBRATED_THRESHOLDS["efderain_w025"][1])
    assert calibrate_thresholds([0.1 * i for i in range(1, 21)]) == (1.9, 1.3)  # p90 of 0.1..2.0 = 1.81 -> 1.9
    assert calibrate_thresholds([0.0] * 10) == (0.2, 0.1)  # a network that leaves dry frames alone
    with pytest.raises(ValueError, match="at least 10 dry-frame scores"):
        calibrate_thresholds([1.0, 2.0])


def test_rain_score_separates_rain_from_a_dry_frame(ort_backend):
    from edge_derain.data import RainRenderer, read_image
    from edge_derain.demo import SAMPLE_IMAGE
    from edge_derain.gst.elements import derain_frame, to_uint8

    clean = to_uint8(read_image(SAMPLE_IMAGE))
    rainy = to_uint8(RainRenderer.preset("heavy").render(clean / 255.0, np.random.default_rng(3))[0])
    dry, wet = (rain_score(x, derain_frame(ort_backend, x)) for x in (clean, rainy))
    on, _ = thresholds_for(None)  # the default weights, which portable_onnx was exported from
    assert dry < on < wet and 10 * dry < wet
    with pytest.raises(ValueError, match="two HxWx3 RGB frames"):
        rain_score(clean, clean[:10])


# ---- pipelines ------------------------------------------------------------------------------------
def test_test_source_with_rain_derain_ort_detect_hog_to_mp4(tmp_path, portable_onnx):
    out, stats_json = tmp_path / "out.mp4", tmp_path / "stats.json"
    options = PipelineOptions(source="test", width=128, height=96, derain={"backend": "ort", "model": str(portable_onnx)},
                              detector="hog", sink=f"file:{out}", leaky=False)
    probes = {}

    def setup(pipeline):
        probes["clean"] = _Frames(pipeline, "rain", "sink")
        probes["rainy"] = _Frames(pipeline, "rain")
        probes["derained"] = _Frames(pipeline, "derain")

    result = run_pipeline(options, max_frames=8, stats_path=stats_json, setup=setup)
    assert result.error is None and result.status == "frames" and result.frames_in == result.frames_out == 8
    decoded = _decode(out)
    assert len(decoded) == 8 and decoded[0].shape == (96, 128, 3)
    pts = sorted(probes["derained"].frames)
    assert len(pts) == 8
    improved = []
    for index, key in enumerate(pts):
        clean, rainy = probes["clean"].frames[key].astype(int), probes["rainy"].frames[key].astype(int)
        derained, video = probes["derained"].frames[key].astype(int), decoded[index].astype(int)
        rain = np.abs(rainy - clean).max(axis=2) > 40  # where streaks were drawn
        assert rain.mean() > 0.02
        assert np.abs(derained - rainy)[rain].mean() > 15  # the derain stage changed the rain pixels ...
        assert np.abs(video - derained)[rain].mean() < np.abs(video - rainy)[rain].mean()  # ... and they were recorded
        improved.append(np.abs(derained - clean)[rain].mean() < np.abs(rainy - clean)[rain].mean())
    assert all(improved)  # and moved them towards the clean frame
    stats = json.loads(stats_json.read_text())
    assert stats["frames_out"] == 8 and stats["fps"] > 0 and stats["dropped"]["total"] == 0
    assert stats["latency"]["derain"]["count"] == 8 and stats["latency"]["derain"]["p99_ms"] > 0
    assert stats["latency"]["detect"]["count"] == 8 and stats["detections"]["frames"] == 8
    assert "onnxruntime" in stats["loads"]["derain"]["what"].lower()


def _run_appsrc(description: str, frames: list[np.ndarray], fmt: str, setup=None) -> list[np.ndarray]:
    """Push ``frames`` (HxWxC uint8, ``fmt``) through ``appsrc ! DESCRIPTION ! appsink``; return the output."""
    height, width = frames[0].shape[:2]
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps=video/x-raw,format={fmt},width={width},height={height},framerate=10/1 "
        f"! {description} ! appsink name=sink sync=false")
    if setup:
        setup(pipeline)
    pipeline.set_state(Gst.State.PLAYING)
    src, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    for index, frame in enumerate(frames):
        buf = frame_to_buffer(frame, fmt)
        buf.pts, buf.duration = index * Gst.SECOND // 10, Gst.SECOND // 10
        assert src.emit("push-buffer", buf) == Gst.FlowReturn.OK
    src.emit("end-of-stream")
    out = []
    try:
        for _ in frames:
            sample = sink.emit("try-pull-sample", 30 * Gst.SECOND)
            assert sample is not None, "the pipeline produced no frame within 30 s"
            caps, buf = sample.get_caps(), sample.get_buffer()
            ok, mapping = buf.map(Gst.MapFlags.READ)
            channels = 4 if fmt.endswith(("A", "x")) else 3
            out.append(np.frombuffer(mapping.data, np.uint8).reshape(height, -1)[:, :width * channels]
                       .reshape(height, width, channels).copy())
            buf.unmap(mapping)
            assert caps.get_structure(0).get_string("format") == fmt
    finally:
        pipeline.set_state(Gst.State.NULL)
    return out


@pytest.mark.parametrize("fmt", ["RGB", "RGBA", "BGRx"])
def test_appsrc_appsink_round_trip_equals_the_backend(fmt, ort_backend):
    rng = np.random.default_rng(7)
    height, width = 37, 53  # odd sizes: row padding in the buffer, and the backend pads to 16 and crops
    rgb = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
    alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
    order = {"RGB": [0, 1, 2], "RGBA": [0, 1, 2], "BGRx": [2, 1, 0]}[fmt]
    frames = [np.concatenate([f[..., order], alpha], axis=2) if len(fmt) == 4 else f[..., order] for f in rgb]

    def inject(pipeline):
        pipeline.get_by_name("derain").use_backend(ort_backend)

    out = _run_appsrc("derain name=derain", frames, fmt, inject)
    for source, result in zip(rgb, out):
        reference = ort_backend.run(source.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]
        expected = np.clip(np.rint(reference.transpose(1, 2, 0) * 255.0), 0, 255)
        got = result[..., order].astype(int)
        assert np.abs(got - expected).max() <= 1  # uint8 rounding of the same float output
        assert np.mean(got == expected) > 0.999
        assert np.abs(got - source.astype(int)).mean() > 1  # the frame really went through the network
        if len(fmt) == 4:
            assert np.array_equal(result[..., 3:], alpha)  # alpha / padding bytes untouched


@pytest.mark.filterwarnings("ignore:ONNX export mode is set to TrainingMode.EVAL")  # RECA-Net instance norms
@pytest.mark.parametrize("name,config,backend", [
    ("danet", {"channels": 16, "cabs": 2}, "torch"),
    pytest.param("danet", {"channels": 16, "cabs": 2}, "ort", marks=pytest.mark.slow),  # its export: ~40 s
    ("recanet", {"n1": 8}, "torch"), ("recanet", {"n1": 8}, "ort")])
def test_derain_element_runs_any_registered_model_from_its_weights(tmp_path, name, config, backend):
    """The element rebuilds whatever model the checkpoint's sidecar names (PyTorch, or ONNX Runtime on
    the graph it exports on the fly) and gives that model's output."""
    import torch

    from edge_derain.backends import TorchBackend
    from edge_derain.checkpoint import load_model, save_checkpoint
    from edge_derain.models import create_model

    torch.manual_seed(4)
    weights = save_checkpoint(tmp_path / name, create_model(name, **config))
    frames = [np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8) for i in range(2)]
    out = _run_appsrc(f"derain backend={backend} weights={weights}", frames, "RGB")
    reference = TorchBackend(load_model(weights))
    for frame, result in zip(frames, out):
        expected = reference.run(frame.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]
        expected = np.clip(np.rint(expected.transpose(1, 2, 0) * 255.0), 0, 255)
        assert np.abs(result.astype(int) - expected).max() <= 1


def test_detect_attaches_roi_meta_and_posts_boxes():
    from edge_derain.detect import Detection
    from edge_derain.gst.elements import read_roi_meta

    class TwoBoxes:
        def detect(self, frame):
            assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
            return [Detection(2, 3, 20, 30, 0.9, 0, "person"), Detection(30.4, 5, 60, 40, 0.55, 2, "car")]

    metas = []

    def setup(pipeline):
        pipeline.get_by_name("detect").detector = TwoBoxes()
        pipeline.get_by_name("sink").get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER, lambda pad, info: metas.append(read_roi_meta(info.get_buffer())) or Gst.PadProbeReturn.OK)

    frames = [np.full((48, 64, 3), 90, np.uint8) for _ in range(2)]
    out = _run_appsrc("detect name=detect overlay=true", frames, "RGB", setup)
    assert len(metas) == 2 and [m["label"] for m in metas[0]] == ["person", "car"]
    assert metas[0][1] == {"x": 30, "y": 5, "w": 30, "h": 35, "label": "car", "score": 0.55, "class_id": 2}
    assert (out[0] != 90).any(axis=2)[3, 2:20].all()  # the overlay drew the top edge of the first box


def test_gating_skips_dry_frames_and_reports_the_saving():
    from edge_derain.backends import Backend
    from edge_derain.data import RainRenderer
    from edge_derain.gst.stats import PipelineStats

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:96]
    clean = np.stack([xx / 96, yy / 64, 0.5 + 0 * xx], axis=2).astype(np.float32) * 0.8 + 0.1
    rainy = RainRenderer.preset("heavy").render(clean, rng)[0]
    clean_u8, rainy_u8 = ((x * 255 + 0.5).astype(np.uint8) for x in (clean, rainy))

    class Oracle(Backend):
        """Removes exactly the rendered rain (the gate's logic is under test here, not the model)."""
        name, input_multiple, calls = "oracle", 1, 0

        def infer(self, batch):
            Oracle.calls += 1
            time.sleep(0.002)
            return np.repeat(clean.transpose(2, 0, 1)[None], batch.shape[0], axis=0)

    sequence = [rainy_u8] * 6 + [clean_u8] * 40 + [rainy_u8] * 20
    stats = PipelineStats()

    def setup(pipeline):
        pipeline.get_by_name("derain").use_backend(Oracle())
        bus = pipeline.get_bus()
        bus.enable_sync_message_emission()  # the per-frame messages, as they are posted
        bus.connect("sync-message::element", lambda bus, message: stats.on_message(message))

    out = _run_appsrc("derain name=derain gate=true gate-min-frames=3 gate-interval=5", sequence, "RGB", setup)
    passed = [np.array_equal(o, s) for o, s in zip(out, sequence)]
    derained = [np.abs(o.astype(int) - clean_u8).max() <= 1 for o in out]
    assert all(derained[:6])  # raining: derained
    assert all(passed[6 + 3:46])  # dry (after the 3 confirming frames): frames pass through untouched
    assert all(derained[46 + 5 + 3:])  # rain again: back on within interval + min-frames frames
    assert Oracle.calls < len(sequence) - 25  # the network skipped most dry frames
    gate = stats.summary()["gating"]
    assert gate["frames"] == len(sequence) and gate["skipped"] == len(sequence) - Oracle.calls
    assert gate["skipped"] > 25 and gate["saved_s"] > 0 and gate["probes"] >= 5


def test_leaky_queue_bounds_latency_and_counts_dropped_frames():
    from edge_derain.backends import Backend

    class Slow(Backend):
        name, input_multiple = "slow", 1

        def infer(self, batch):
            time.sleep(0.1)  # 10 frames/s behind a 30 frames/s camera
            return batch

    options = PipelineOptions(source="test", width=64, height=48, derain={}, sink="fake", queue_size=2,
                              params={"rain": "light"})
    composed = compose(options)
    assert "leaky=downstream" in composed.description
    runner = PipelineRunner(composed, setup=lambda pipeline: pipeline.get_by_name("derain").use_backend(Slow()))
    stopper = threading.Timer(1.5, runner.request_stop)  # e.g. a service stopping the pipeline from its thread
    stopper.start()
    result = runner.run()
    stats = result.stats
    assert result.error is None and result.status == "interrupted" and 35 <= result.frames_in <= 70
    assert stats["dropped"]["q_derain"] > 15  # about two frames in three were dropped ...
    assert stats["dropped"]["total"] == stats["frames_in"] - stats["frames_out"]  # ... and every one counted
    assert stats["latency"]["end_to_end"]["p99_ms"] < 600  # bounded: (2 queued + 1 running) x 100 ms + slack
    assert stats["latency"]["derain"]["p50_ms"] >= 100


def test_reconnection_backs_off_gives_up_and_forgives_a_healthy_segment():
    """The retry policy both runners (single and multi-stream) use for a failed live source."""
    from edge_derain.gst.watchdog import Reconnection

    reconnection = Reconnection(True, max_retries=3, backoff=(1.0, 3.0), reset_after_s=30.0)
    delays = []
    while reconnection.try_again():
        delays.append(reconnection.delay())
    assert delays == [1.0, 2.0, 3.0]   # doubling, capped at backoff[1]; then it gives up
    assert reconnection.announcement() == "reconnecting in 3 s (attempt 3 of 3)"
    reconnection.note_progress(now=100.0, segment_started=80.0, segment_frames=500)
    assert reconnection.retries == 3   # 20 s of frames: not yet healthy
    reconnection.note_progress(now=100.0, segment_started=60.0, segment_frames=0)
    assert reconnection.retries == 3   # 40 s without a frame is no progress
    reconnection.note_progress(now=100.0, segment_started=60.0, segment_frames=500)
    assert reconnection.retries == 0 and reconnection.try_again()
    assert not Reconnection(False, 5, (1.0, 30.0)).try_again()


def test_source_errors_are_one_line_and_sources_reconnect_with_new_file_parts(tmp_path):
    from gi.repository import GLib

    result = run_pipeline(PipelineOptions(source="file:///no/such/clip.mp4", derain=None, sink="fake"),
                          stall_timeout=5)
    assert result.status == "error" and result.error.startswith("source file:///no/such/clip.mp4 failed:")
    assert "\n" not in result.error

    out = tmp_path / "cam.mp4"
    options = PipelineOptions(source="test", width=64, height=48, derain=None, sink=f"file:{out}",
                              params={"rain": "light"})

    def unplug_after_10_frames(pipeline):
        source = pipeline.get_by_name("rain")  # stands in for the camera: it errors like v4l2src on unplug
        count = [0]

        def probe(pad, info):
            count[0] += 1
            if count[0] == 10:
                error = GLib.Error.new_literal(Gst.ResourceError.quark(), "Could not read from resource.",
                                               Gst.ResourceError.READ)
                source.post_message(Gst.Message.new_error(source, error, "poll error 1: No such device (19)"))
            return Gst.PadProbeReturn.DROP if count[0] >= 10 else Gst.PadProbeReturn.OK

        source.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)

    runner = PipelineRunner(lambda segment, udp_port: compose(options, segment, udp_port), reconnect=True,
                            max_retries=2, backoff=(0.05, 0.1), setup=unplug_after_10_frames, stall_timeout=5)
    result = runner.run()
    assert result.restarts == 2 and result.status == "error"
    assert result.error == "source ball failed: rain: Could not read from resource (poll error 1: No such device (19))"
    for part in (out, tmp_path / "cam.1.mp4", tmp_path / "cam.2.mp4"):  # each attempt's recording is playable
        assert len(_decode(part)) == 9

    stalled = PipelineRunner(compose(options), stall_timeout=0.5, setup=lambda pipeline: pipeline.get_by_name(
        "rain").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, lambda pad, info: Gst.PadProbeReturn.DROP))
    result = stalled.run()
    assert result.error == "source ball delivered no frame for 0.5 s (camera unplugged or stream stalled)"

    def swallow_eos(pipeline):  # a stage that never passes EOS on: the watchdog must end the run
        pipeline.get_by_name("q_sink").get_static_pad("sink").add_probe(
            Gst.PadProbeType.EVENT_DOWNSTREAM, lambda pad, info: Gst.PadProbeReturn.DROP
            if info.get_event().type == Gst.EventType.EOS else Gst.PadProbeReturn.OK)

    started = time.monotonic()
    result = PipelineRunner(compose(options), max_frames=5, eos_timeout=0.5, setup=swallow_eos).run()
    assert result.status == "timeout" and "did not finish within 0.5 s of EOS (frames)" in result.error
    assert time.monotonic() - started < 10


def test_gst_launch_finds_the_elements(portable_onnx):
    env = plugin_environment()
    inspect = subprocess.run(["gst-inspect-1.0", "derain"], env=env, capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0 and "gate-interval" in inspect.stdout and "engine" in inspect.stdout
    launch = subprocess.run(
        ["gst-launch-1.0", "-m", "videotestsrc", "num-buffers=3", "!", "video/x-raw,width=64,height=48", "!",
         "videoconvert", "!", "rainrender", "!", "derain", "backend=ort", f"model={portable_onnx}", "!",
         "detect", "overlay=true", "!", "fakesink"], env=env, capture_output=True, text=True, timeout=120)
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    assert launch.stdout.count("edge-derain-frame, stage=(string)derain0") == 3
    assert launch.stdout.count("edge-derain-frame, stage=(string)detect0") == 3


def test_cli_print_pipeline_and_one_line_errors(capsys, tmp_path):
    from edge_derain.cli import main

    assert main(["run", "--source", "test", "--sink", "fake", "--detector", "hog", "--print-pipeline"]) == 0
    printed = capsys.readouterr().out
    assert "gst-launch-1.0 -e" in printed and "detect name=detect detector=hog" in printed
    assert main(["run", "--source", "test", "--model", str(tmp_path / "missing.onnx"), "--sink", "fake"]) == 2
    err = capsys.readouterr().err
    assert "missing.onnx not found" in err and len(err.strip().splitlines()) == 1


def test_demo_runs_through_the_pipeline(tmp_path, portable_onnx):
    from edge_derain.demo import run_demo
    from edge_derain.gst.select import BackendRequest

    result = run_demo(BackendRequest(kind="ort", model=str(portable_onnx)), tmp_path, source="test", clip=5,
                      size=(64, 96))
    assert result.output.name == "demo_side_by_side.mp4" and result.frames == 5
    frames = _decode(result.output)
    assert len(frames) == 5 and frames[0].shape == (64, 3 * 96 + 2 * 4, 3)  # rainy | derained | clean
    stats = json.loads(result.stats_path.read_text())
    assert stats["frames_out"] == 5 and set(stats["latency"]) >= {"derain", "detect", "detect_rainy", "rain"}
    assert result.psnr_derained > result.psnr_rainy and "frames/s" in result.summary()
    assert os.path.exists(result.stats_path)


@pytest.mark.slow
def test_rtsp_out_feeds_rtsp_in_and_a_dropped_stream_ends_with_one_line():
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/derain"
    server_command = [sys.executable, "-m", "edge_derain.cli", "run", "--source", "test", "--width", "96", "--height",
                      "64", "--no-derain", "--sink", f"rtsp:{port}/derain", "--quiet"]

    def start_server():
        process = subprocess.Popen(server_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the RTSP port accepts connections
            assert process.poll() is None, process.communicate()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return process
            time.sleep(0.2)
        process.kill()
        raise AssertionError("the RTSP server did not start within 60 s")

    server = start_server()
    try:
        result = run_pipeline(PipelineOptions(source=url, derain=None, sink="fake"), max_frames=10, stall_timeout=20)
        assert result.error is None and result.frames_in == 10
        server.send_signal(signal.SIGINT)  # the server stops cleanly too
        assert server.wait(timeout=30) == 0
        server = start_server()
        killer = threading.Timer(3.0, server.kill)  # the stream drops mid-run
        killer.start()
        result = run_pipeline(PipelineOptions(source=url, derain=None, sink="fake"), stall_timeout=3)
        killer.join()
        assert result.status == "error" and result.error.startswith(f"source {url}")
        assert "\n" not in result.error and result.frames_in > 10, result.error
    finally:
        server.kill()
        server.wait(timeout=30)
