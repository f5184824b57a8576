"""A new user's first hour: bad inputs fail early in one line, batches go on past bad items, outputs are
files people can open (H.264 4:2:0 Main profile MP4) and never left half-written, printed pipelines run
when pasted, a recording survives signals and a camera that drops and comes back."""
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

from edge_derain.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(plugin graph, portable graph) of the shipped weights."""
    from edge_derain.checkpoint import load_model
    from edge_derain.export import export_model

    result = export_model(load_model("efderain_w025"), tmp_path_factory.mktemp("onnx") / "efderain")
    return result.plugin_path, result.portable_path


@pytest.fixture(scope="module")
def truncated_onnx(exported, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "truncated.onnx"
    path.write_bytes(exported[1].read_bytes()[:20_000])  # a download or copy cut short
    return path


def _rainy_image(path: Path, size=(96, 128), seed=0) -> Path:
    from edge_derain.data import RainRenderer, write_image

    rng = np.random.default_rng(seed)
    clean = np.clip(0.5 + 0.25 * rng.standard_normal((*size, 3)).cumsum(1) / 8, 0, 1).astype(np.float32)
    return write_image(path, RainRenderer.preset("medium").render(clean, rng)[0])


def _one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- one clear line, early ------------------------------------------------------------------------
def test_a_truncated_onnx_fails_in_one_line_in_every_command(truncated_onnx, tmp_path, capsys):
    image = _rainy_image(tmp_path / "in.png")
    commands = [["compare", "--backend", str(truncated_onnx)],
                ["bench", "--backend", str(truncated_onnx), "--out", str(tmp_path / "b")],
                ["derain", str(image), "--out", str(tmp_path / "d"), "--backend", str(truncated_onnx)],
                ["demo", "--backend", str(truncated_onnx), "--out", str(tmp_path / "demo")],
                ["run", "--source", "test", "--sink", "fake", "--backend", "ort", "--model", str(truncated_onnx)]]
    for command in commands:
        assert main(command) == 2, command
        _one_error_line(capsys.readouterr().err, "truncated.onnx is not a readable ONNX model", "re-export")
    assert not (tmp_path / "demo").exists() and not (tmp_path / "d").exists()


def test_engine_profiles_must_be_multiples_of_the_input_multiple(exported, capsys):
    """Checked before TensorRT sees the profile: TensorRT aborts the process on such shapes."""
    from edge_derain.engine.builder import ShapeProfile, inspect_onnx, resolve_shapes

    summary = inspect_onnx(exported[0])
    with pytest.raises(ValueError, match=r"multiples of 16 .*use --shapes 1x3x112x112:1x3x112x112:1x3x112x112"):
        resolve_shapes(summary, ShapeProfile.parse("1x3x100x100"))
    assert resolve_shapes(summary, ShapeProfile.parse("1x3x112x112")).max == (1, 3, 112, 112)
    assert main(["build", "--onnx", str(exported[0]), "--shapes", "1x3x64x64:1x3x64x72:1x3x64x96"]) == 2
    _one_error_line(capsys.readouterr().err, "profile opt 1x3x64x72", "multiples of 16")


def test_plots_are_optional_without_matplotlib(tmp_path, monkeypatch, capsys):
    """A user install (no matplotlib) runs bench to the end: the JSON, and one line about the PNG."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` finds in a user install
    out = tmp_path / "bench"
    assert main(["bench", "--backend", "torch", "--res", "32x48", "--warmup", "0", "--iters", "1", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "benchmark.json").is_file() and not (out / "benchmark.png").exists()
    assert "no PNG plot: matplotlib is not installed" in printed


def test_tables_are_not_cut_at_80_columns_when_piped(capsys):
    from edge_derain.bench import print_benchmark, run_benchmark
    from edge_derain.backends import open_backend

    name = "efderain_w025 exported to ONNX Runtime, CPU execution provider"
    results = run_benchmark({name: open_backend("torch")}, [(32, 48)], warmup=0, iters=1, progress=False)
    print_benchmark(results)  # stdout is captured: not a terminal
    assert name in capsys.readouterr().out


# ---- batches go on past bad items ---------------------------------------------------------------------
def test_derain_on_a_folder_goes_on_past_bad_files(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _rainy_image(folder / "a.png", seed=1)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))  # a damaged file
    _rainy_image(folder / "c.jpg", seed=2)
    out = tmp_path / "out"
    assert main(["derain", str(folder), str(tmp_path / "missing.png"), "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a_derained.png", "c_derained.png"]
    assert "2 inputs failed" in captured.err and "b.png" in captured.err and "missing.png" in captured.err
    assert "Traceback" not in captured.err and captured.out.count(" -> ") == 2


def test_eval_goes_on_past_a_bad_pair(exported, tmp_path, capsys):
    from edge_derain.data import write_image

    data = tmp_path / "val"
    for name, seed in (("a.png", 1), ("b.png", 2)):
        clean = _rainy_image(tmp_path / f"clean_{name}", seed=seed)
        (data / "clean").mkdir(parents=True, exist_ok=True)
        (data / "rain").mkdir(exist_ok=True)
        clean.rename(data / "clean" / name)
        _rainy_image(data / "rain" / name, seed=seed + 10)
    write_image(data / "rain" / "c.png", np.zeros((8, 8, 3), np.float32))
    (data / "clean" / "c.png").write_bytes(b"not an image")
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "report"), "--quiet"]) == 1
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert report["count"] == 2 and [f["name"] for f in report["failed"]] == ["c.png"]
    assert "1 image failed" in err and "c.png" in err and "Traceback" not in err
    assert main(["eval", "--precisions", "fp32,fp16", "--onnx", str(exported[0]), "--data", str(data), "--out",
                 str(tmp_path / "precisions"), "--quiet"]) == 1
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "precisions" / "precision_report.json").read_text())
    assert [image["name"] for image in report["images"]] == ["a.png", "b.png"] and report["count"] == 2
    assert "2 images failed" in err and "c.png (fp16)" in err and "Traceback" not in err


def test_calibrate_collect_goes_on_past_bad_sources(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for seed in range(3):
        _rainy_image(folder / f"f{seed}.png", seed=seed)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    out = tmp_path / "calib"
    assert main(["calibrate", "collect", "--from", str(folder), str(tmp_path / "gone.mp4"), "--out", str(out),
                 "--count", "3"]) == 1
    err = capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["frames"]) == 3
    assert sorted(Path(s["source"]).name for s in manifest["origin"]["skipped"]) == ["broken.jpg", "gone.mp4"]
    assert "2 sources failed" in err and "Traceback" not in err


# ---- GStreamer: printed pipelines, encoders, signals, sources that drop --------------------------------
try:
    from edge_derain.gst import require_gst

    Gst = require_gst()
except ImportError as exc:  # pragma: no cover - depends on the machine
    Gst, _GST_MISSING = None, str(exc)
needs_gst = pytest.mark.skipif(Gst is None, reason="GStreamer Python bindings not importable; run install.sh")


def video_facts(path: Path) -> dict:
    """What a player learns from ``path`` (GStreamer's discoverer): codec caps, profile, chroma, frames."""
    import gi

    gi.require_version("GstPbutils", "1.0")
    from gi.repository import GstPbutils

    import cv2

    info = GstPbutils.Discoverer.new(30 * Gst.SECOND).discover_uri(path.resolve().as_uri())
    (stream,) = info.get_video_streams()
    caps = stream.get_caps().get_structure(0)
    capture, frames = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:  # frames a player decodes (a live recording's timestamps have gaps)
        frames += 1
    capture.release()
    return {"codec": caps.get_name(), "profile": caps.get_string("profile"),
            "chroma": caps.get_string("chroma-format"), "size": (stream.get_height(), stream.get_width()),
            "fps": stream.get_framerate_num() / max(1, stream.get_framerate_denom()), "frames": frames,
            "container": info.get_stream_info().get_caps().get_structure(0).get_name()}


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 file's top-level box types in file order (ISO BMFF: 32-bit size, 4-char type, 64-bit size if 1)."""
    data, boxes, at = path.read_bytes(), [], 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        boxes.append(kind)
        at += size if size else len(data)
    return boxes


def assert_plays_everywhere(path: Path) -> dict:
    facts = video_facts(path)
    assert facts["codec"] == "video/x-h264" and facts["container"] == "video/quicktime", facts
    boxes = top_level_boxes(path)  # index first: a browser starts playing before the download ends
    assert "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat"), boxes
    assert facts["profile"] in ("constrained-baseline", "baseline", "main") and facts["chroma"] == "4:2:0", facts
    assert not list(path.parent.glob(f".{path.stem}.partial*")), "a partial file was left behind"
    return facts


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 12-frame 128x96 clip at 12 frames/s with rain (real H.264 MP4)."""
    from edge_derain.data import read_image
    from edge_derain.gst.writer import Mp4Writer

    path = tmp_path_factory.mktemp("clip") / "rainy.mp4"
    frames = [read_image(_rainy_image(path.parent / f"{i}.png", seed=i)) for i in range(12)]
    with Mp4Writer(path, fps=12) as writer:
        for frame in frames:
            writer.write((frame * 255 + 0.5).astype(np.uint8))
    return path


@needs_gst
def test_printed_pipeline_runs_when_pasted_into_a_shell(clip, exported, tmp_path, capsys):
    out = tmp_path / "pasted.mp4"
    assert main(["run", "--source", str(clip), "--backend", "ort", "--model", str(exported[1]), "--detector", "hog",
                 "--sink", f"file:{out}", "--print-pipeline"]) == 0
    printed = capsys.readouterr().out.strip()
    shell = subprocess.run(["timeout", "-s", "INT", "240", "bash", "-c", printed], capture_output=True, text=True,
                           timeout=300)
    assert shell.returncode == 0, (printed, shell.stdout[-1500:], shell.stderr[-1500:])
    facts = assert_plays_everywhere(out)
    assert facts["frames"] == 12 and facts["size"] == (96, 128)


@needs_gst
def test_derain_on_a_video_writes_h264_420_at_the_source_rate(clip, tmp_path, capsys):
    assert main(["derain", str(clip), "--out", str(tmp_path), "--quiet"]) == 0
    facts = assert_plays_everywhere(tmp_path / "rainy_derained.mp4")
    assert facts["frames"] == 12 and facts["fps"] == pytest.approx(12) and facts["size"] == (96, 128)


@needs_gst
def test_display_sink_without_a_display_fails_in_one_line(monkeypatch, capsys):
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    for display in (None, ":97"):  # none set (SSH, service), or one nobody serves
        if display is None:
            monkeypatch.delenv("DISPLAY", raising=False)
        else:
            monkeypatch.setenv("DISPLAY", display)
        assert main(["run", "--source", "test", "--no-derain", "--sink", "display"]) == 2
        _one_error_line(capsys.readouterr().err, "--sink display needs a screen", "--sink file:out.mp4",
                        "rtsp:8554/derain")


@needs_gst
def test_failures_leave_no_output_file_and_happen_before_the_pipeline(tmp_path, capsys):
    out = tmp_path / "rec.mp4"
    assert main(["run", "--source", "file:///no/such/clip.mp4", "--no-derain", "--sink", f"file:{out}",
                 "--quiet"]) == 2
    assert not out.exists() and not list(tmp_path.iterdir())  # no 0-byte recording, no partial file
    capsys.readouterr()
    assert main(["run", "--source", "test", "--no-derain", "--detector", f"yolo:{tmp_path / 'yolo.onnx'}",
                 "--sink", f"file:{out}"]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, "YOLO model", "yolo.onnx not found")
    assert captured.out == "" and not list(tmp_path.iterdir())  # failed before any pipeline ran
    assert main(["run", "--source", "/dev/video77", "--no-derain", "--sink", f"file:{out}"]) == 2
    _one_error_line(capsys.readouterr().err, "camera /dev/video77 does not exist")


@needs_gst
def test_frames_counts_processed_frames_and_live_drops_agree(exported, tmp_path):
    from edge_derain.backends.ort_backend import OnnxRuntimeBackend
    from edge_derain.gst.pipeline import PipelineOptions, run_pipeline

    backend = OnnxRuntimeBackend(exported[1], providers=["CPUExecutionProvider"])

    class Throttled:  # the real backend, held back to 8 frames/s behind a 30 frames/s camera
        input_multiple, receptive_radius, name = backend.input_multiple, backend.receptive_radius, "throttled"

        def run(self, batch):
            time.sleep(0.12)
            return backend.run(batch)

    out, live = tmp_path / "rec.mp4", []
    options = PipelineOptions(source="test", width=64, height=48, derain={}, sink=f"file:{out}",
                              params={"rain": "light"})
    result = run_pipeline(options, max_frames=12, stats_interval=0.2, on_stats=live.append,
                          setup=lambda pipeline: pipeline.get_by_name("derain").use_backend(Throttled()))
    stats = result.stats
    assert result.error is None and result.status == "frames"
    assert result.frames_out == stats["frames_out"] == 12 and assert_plays_everywhere(out)["frames"] == 12
    assert stats["dropped"]["total"] > 0  # the camera was faster: the leaky queue dropped frames ...
    assert live[-1]["dropped"] == stats["dropped"]["total"] and live[-1]["frames"] == 12  # ... as the live line says


@needs_gst
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_recording_leaves_a_playable_file(signum, exported, tmp_path):
    out, stats = tmp_path / "rec.mp4", tmp_path / "stats.json"
    command = [sys.executable, "-m", "edge_derain.cli", "run", "--source", "test", "--width", "96", "--height", "64",
               "--backend", "ort", "--model", str(exported[1]), "--sink", f"file:{out}", "--stats", str(stats)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".rec.partial.mp4"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 2000):
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        assert not out.exists()  # while recording, the final name holds nothing
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    facts = assert_plays_everywhere(out)
    report = json.loads(stats.read_text())
    assert report["status"] == "interrupted" and report["frames_out"] == facts["frames"] >= 3


@needs_gst
def test_an_rtsp_camera_that_drops_and_comes_back_resumes_with_reconnect(tmp_path):
    """A real RTSP server (gst-rtsp-server on loopback) is killed mid-stream and started again: the pipeline
    reconnects and records a new part; both parts play."""
    from conftest import free_port, wait_for_port

    from edge_derain.gst.pipeline import PipelineOptions, PipelineRunner, compose
    from edge_derain.gst.stats import PipelineStats

    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/cam"

    def start_camera():
        camera = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "rtsp_server.py"), str(port)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert wait_for_port(port, 30), "the RTSP camera did not start"
        return camera

    out = tmp_path / "cam.mp4"
    options = PipelineOptions(source=url, derain=None, sink=f"file:{out}")
    frames = [0]  # processed frames, from the runner's live numbers
    runner = PipelineRunner(lambda segment, udp_port: compose(options, segment, udp_port), reconnect=True,
                            max_retries=8, backoff=(0.5, 2.0), stall_timeout=3, handle_signals=False,
                            stats=PipelineStats(interval=0.2), on_stats=lambda numbers: frames.__setitem__(
                                0, numbers["frames"]))
    camera = [start_camera()]
    events = []

    def operator():  # frames flow, the camera dies, comes back, frames flow again, stop
        def wait(condition, seconds):
            deadline = time.monotonic() + seconds
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.1)
            return condition()

        events.append(("first frames", wait(lambda: frames[0] >= 15, 90)))
        camera[0].kill()
        camera[0].wait(10)
        time.sleep(1.0)
        camera[0] = start_camera()
        before = frames[0]
        events.append(("resumed", wait(lambda: frames[0] >= before + 15, 90)))
        runner.request_stop()  # the loop runs: frames came through it

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        result = runner.run()
    finally:
        thread.join(120)
        camera[0].kill()
        camera[0].wait(10)
    assert events == [("first frames", True), ("resumed", True)], (events, result)
    assert result.restarts >= 1 and result.status == "interrupted", result
    parts = [out] + [tmp_path / f"cam.{i}.mp4" for i in range(1, result.restarts + 1)]
    recorded = [assert_plays_everywhere(part)["frames"] for part in parts if part.exists()]
    # The live counter runs a frame or two ahead of what each part holds when the camera drops mid-frame.
    assert recorded[0] >= 10 and recorded[-1] >= 10 and sum(recorded) >= 25, recorded
