"""Many cameras through one batched derain call: real GStreamer sources, ONNX Runtime on the CPU, a real
Mosquitto broker, Prometheus scrapes, and an RTSP camera that dies mid-run."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from conftest import free_port, wait_for_port

pytest.importorskip("gi")
ROOT = Path(__file__).resolve().parents[1]
SIZE = (96, 160)   # (H, W): small frames keep the CPU runs short


@pytest.fixture(scope="module")
def ort_backend():
    from edge_derain.backends.ort_backend import OnnxRuntimeBackend
    from edge_derain.gst.select import exported_onnx

    # The fully convolutional shipped model: 5x faster per frame than the default on a 2-core CPU, so the
    # file streams finish within the runs' time limits; batching does not depend on the model.
    return OnnxRuntimeBackend(exported_onnx("efderain_w025")[1], providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 30-frame H.264 file (not live: every frame must be processed)."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=30", "pattern=smpte", "!",
                    f"video/x-raw,width={SIZE[1]},height={SIZE[0]},framerate=15/1", "!", "videoconvert", "!",
                    "x264enc", "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={path}"],
                   check=True, timeout=60)
    return path


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    return count


class Scraper(threading.Thread):
    """Scrapes the metrics endpoint every 0.3 s while the run goes on; keeps the last good text."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.texts, self.stop = port, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.texts.append(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode())
            except OSError:
                pass
            time.sleep(0.3)


def samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
def test_four_streams_batched_with_metrics_events_and_recordings(tmp_path, clip, ort_backend, broker):
    from edge_derain.fleet import EventPublisher, PipelineMetrics
    from edge_derain.gst.multistream import MultiStreamOptions, MultiStreamRunner
    from test_fleet import Subscriber

    options = MultiStreamOptions(sources=["test", "test:snow", str(clip), str(clip)], sink=f"file:{tmp_path}/{{stream}}.mp4",
                                 width=SIZE[1], height=SIZE[0], fps=10)
    metrics = PipelineMetrics(0, host="127.0.0.1")
    subscriber = Subscriber(broker, "site/#")
    scraper = Scraper(metrics.port)
    scraper.start()
    with EventPublisher(f"mqtt://127.0.0.1:{broker}/site") as events:
        runner = MultiStreamRunner(options, ort_backend, None, metrics=metrics, events=events, duration=15)
        result = runner.run()
    scraper.stop.set()
    scraper.join()
    final = urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5).read().decode()
    metrics.close()
    streams = result.streams
    assert result.status in ("duration", "eos") and result.error is None, result
    # The two files end (every frame processed), the two live test sources run until the duration.
    assert streams["cam2"]["status"] == streams["cam3"]["status"] == "finished"
    assert streams["cam2"]["processed"] == streams["cam3"]["processed"] == 30
    assert streams["cam0"]["processed"] > 5 and streams["cam1"]["processed"] > 5
    batches = result.stats["batches"]
    # Batches of 3-4 while all four run; how many depends on the machine's load, so count, don't average.
    assert max(int(size) for size in batches["sizes"]) >= 3
    assert sum(calls for size, calls in batches["sizes"].items() if int(size) >= 2) >= 5, batches
    for name, stream in streams.items():   # every processed frame was recorded, and the file plays
        assert frame_count(tmp_path / f"{name}.mp4") == stream["processed"], name
    # Every frame's event reached the broker, under its stream's topic.
    total = sum(s["processed"] for s in streams.values())
    messages = subscriber.wait_for(total)
    subscriber.close()
    assert len(messages) == total
    assert {topic for topic, _ in messages} == {f"site/{name}" for name in streams}
    assert sorted(p["frame"] for t, p in messages if t == "site/cam2") == list(range(30))
    # The scrapes taken during the run saw the counters move, and the last one agrees with the result.
    live = [samples(text) for text in scraper.texts]
    assert len(live) >= 3 and any(0 < s.get(("edge_derain_frames_total", (("stream", "cam0"),)), 0) for s in live)
    last = samples(final)
    assert last[("edge_derain_frames_total", (("stream", "cam2"),))] == 30
    assert last[("edge_derain_batch_size_count", ())] == batches["count"]
    assert last[("edge_derain_stream_up", (("stream", "cam0"),))] == 1


def rtsp_camera(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "rtsp_server.py"), str(port), "/cam"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready" and wait_for_port(port)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("reconnect", [False, True])
def test_a_camera_that_dies_leaves_the_others_running(tmp_path, ort_backend, reconnect):
    from edge_derain.gst.multistream import MultiStreamOptions, MultiStreamRunner

    port = free_port()
    camera = rtsp_camera(port)
    options = MultiStreamOptions(sources=[f"rtsp://127.0.0.1:{port}/cam", "test", "test:snow"], sink="fake",
                                 width=SIZE[1], height=SIZE[0], fps=10, reconnect=reconnect, backoff=(0.5, 1.0))
    runner = MultiStreamRunner(options, ort_backend, None, duration=12, stall_timeout=3)
    seen = {}

    def kill_then_maybe_restart():
        time.sleep(4)
        seen["before"] = {s.name: s.processed for s in runner.streams}
        camera.kill()
        camera.wait()
        if reconnect:
            time.sleep(1.5)
            seen["camera"] = rtsp_camera(port)

    killer = threading.Thread(target=kill_then_maybe_restart)
    killer.start()
    result = runner.run()
    killer.join()
    if "camera" in seen:
        seen["camera"].kill()
    streams = result.streams
    assert seen["before"]["cam0"] > 0, "the RTSP camera delivered frames before it died"
    for name in ("cam1", "cam2"):   # the others kept going after the camera died
        assert streams[name]["processed"] > seen["before"][name] + 10, name
        assert streams[name]["status"] != "failed"
    if reconnect:
        assert streams["cam0"]["restarts"] >= 1 and streams["cam0"]["processed"] > seen["before"]["cam0"]
    else:
        assert streams["cam0"]["status"] == "failed" and "127.0.0.1" in streams["cam0"]["error"]
        assert result.status == "duration"


def test_cli_multi_stream_run_and_bad_options(tmp_path, capsys):
    from edge_derain.cli import main
    from edge_derain.gst.gating import CALIBRATED_THRESHOLDS

    streams = tmp_path / "streams.toml"
    streams.write_text('[[stream]]\nname = "gate"\nsource = "test"\n\n[[stream]]\nname = "yard"\nsource = "test:snow"\n')
    stats = tmp_path / "stats.json"
    assert main(["run", "--streams", str(streams), "--sink", "fake", "--width", "96", "--height", "64",
                 "--backend", "ort", "--weights", "efderain_w025", "--gate", "--gate-off", "0.5", "--frames", "6",
                 "--stats", str(stats), "--quiet"]) == 0
    report = json.loads(stats.read_text())
    assert set(report["streams"]) == {"gate", "yard"} and report["frames"] >= 6
    gate = report["streams"]["yard"]["gate"]  # the weights' own on-threshold, the off-threshold given
    assert (gate["on_threshold"], gate["off_threshold"]) == (CALIBRATED_THRESHOLDS["efderain_w025"][0], 0.5)
    assert gate["frames"] >= 1
    assert "batched derain calls" in capsys.readouterr().out
    # One recording for two streams is refused up front, with the fix in the message.
    assert main(["run", "--source", "test", "--source", "test", "--sink", f"file:{tmp_path}/x.mp4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "{stream}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    streams.write_text('[[stream]]\nsauce = "test"\n')
    assert main(["run", "--streams", str(streams), "--quiet"]) == 2
    assert "lists no streams" in capsys.readouterr().err


_APPSINK_SEEN_FIRST = """
from edge_derain.gst import require_gst
from edge_derain.gst.multistream import MultiStreamOptions, MultiStreamRunner
Gst = require_gst()
# An appsink wrapped before GstApp's typelib is imported gets a Python class without its methods
# (what an earlier single-stream run in the same process does).
Gst.parse_launch("videotestsrc num-buffers=1 ! appsink name=early").get_by_name("early")
options = MultiStreamOptions(["test", "test:ball"], width=64, height=48, fps=30)
result = MultiStreamRunner(options, None, None, max_frames=6, duration=20).run()
print(result.status, sum(s["processed"] for s in result.streams.values()))
"""


def test_streams_are_taken_whatever_class_the_appsink_was_wrapped_in():
    """Regression: in a process where an appsink was wrapped first, the batcher died on a missing
    ``try_pull_sample`` and the run never ended."""
    out = subprocess.run([sys.executable, "-c", _APPSINK_SEEN_FIRST], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    status, processed = out.stdout.split()[-2:]
    assert status == "frames" and int(processed) >= 6, out.stdout + out.stderr[-2000:]


@pytest.mark.slow
def test_engine_for_four_streams_has_a_batch_profile(rtx, tmp_path):
    """What a 4-camera run builds for TensorRT: one engine whose profile takes 1 to 4 frames per call
    (built ahead of time with TensorRT-RTX; running it needs a GPU)."""
    from edge_derain.engine import EngineCache, ShapeProfile
    from edge_derain.gst.select import exported_onnx

    profile = ShapeProfile((1, 3, 96, 160), (4, 3, 96, 160), (4, 3, 96, 160))
    engine = EngineCache(tmp_path).get_or_build(exported_onnx()[0], precision="fp16", shapes=profile,
                                                target="sm86", flavour=rtx)
    assert engine.engine_path.stat().st_size > 10_000
    assert engine.key.shapes.max == (4, 3, 96, 160) and engine.key.shapes.min[0] == 1
