"""Training loop, evaluation report, derain/demo commands — end to end on the development data."""
import json

import numpy as np
import pytest
import torch

from edge_derain.backends import TorchBackend
from edge_derain.checkpoint import load_model, read_sidecar
from edge_derain.cli import main
from edge_derain.evaluate import evaluate, write_report
from edge_derain.models import create_model
from edge_derain.train import TrainConfig, lr_factor, train


def _config(data_dir, out, **kw):
    base = dict(model="efderain", data=str(data_dir), out=str(out), model_config={"width": 0.125},
                iters=20, batch=4, crop=64, lr=1e-3, epoch_iters=10, val_limit=2, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_constant_then_linear_to_zero():
    cfg = TrainConfig(model="efderain", data=".", out=".", iters=100, decay_start=0.5)
    assert lr_factor(0, cfg) == lr_factor(49, cfg) == 1.0
    assert lr_factor(75, cfg) == pytest.approx(0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.0)


def test_time_limit_drives_schedule_and_stops_run(data_dir, tmp_path):
    cfg = TrainConfig(model="efderain", data=".", out=".", iters=1000, decay_start=0.5, time_limit_min=1.0)
    assert lr_factor(10, cfg, elapsed_s=15.0) == 1.0          # 25% of the time, 1% of the iterations
    assert lr_factor(10, cfg, elapsed_s=45.0) == pytest.approx(0.5)
    assert lr_factor(900, cfg, elapsed_s=0.0) == pytest.approx(0.2)  # iterations ahead of the clock
    # A budget that is spent after the first step ends the run there, validated and checkpointed.
    result = train(_config(data_dir, tmp_path, iters=10_000, time_limit_min=1e-6), progress=False)
    assert len(result["losses"]) == 1
    assert [h["step"] for h in json.loads((tmp_path / "history.json").read_text())] == [1]
    assert read_sidecar(tmp_path / "last.safetensors")["step"] == 1


def test_training_smoke_lowers_loss_and_writes_checkpoints(data_dir, tmp_path):
    result = train(_config(data_dir, tmp_path), progress=False)
    losses = result["losses"]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    for name in ("last", "best"):
        meta = read_sidecar(tmp_path / f"{name}.safetensors")
        assert meta["model"] == "efderain" and meta["config"]["width"] == 0.125
        assert set(meta["metrics"]) >= {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "input_psnr_y"}
        assert meta["data"] == str(data_dir) and "git_commit" in meta
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20]
    load_model(tmp_path / "best.safetensors")


def test_resume_continues_exactly(data_dir, tmp_path, monkeypatch):
    """A run killed right after its step-10 checkpoint resumes into the same losses as an uninterrupted run."""
    import edge_derain.train as train_module

    straight = train(_config(data_dir, tmp_path / "a"), progress=False)
    real_save = train_module.save_training_state

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data_dir, tmp_path / "b"), progress=False)
    monkeypatch.setattr(train_module, "save_training_state", real_save)
    resumed = train(_config(data_dir, tmp_path / "b", resume=True), progress=False)
    assert len(resumed["losses"]) == 10
    np.testing.assert_allclose(resumed["losses"], straight["losses"][10:], rtol=1e-5)
    with pytest.raises(ValueError, match="--resume"):
        train(_config(data_dir, tmp_path / "b", resume=True, model_config={"width": 0.25}), progress=False)


def test_eval_report_json_and_csv(data_dir, tmp_path):
    torch.manual_seed(0)
    backend = TorchBackend(create_model("efderain", width=0.125))
    report = evaluate(backend, data_dir / "val", limit=3, progress=False)
    assert report["count"] == 3
    for row in report["images"]:
        assert 5 < row["input_psnr_y"] < 60 and 0 < row["ssim_y"] <= 1 and row["time_ms"] > 0
    json_path, csv_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["mean"]["psnr_y"] == pytest.approx(report["mean"]["psnr_y"])
    assert csv_path.read_text().splitlines()[-1].startswith("MEAN,")


def test_cli_eval_with_shipped_weights_improves_over_rainy_input(data_dir, tmp_path, capsys):
    assert main(["eval", "--data", str(data_dir / "val"), "--out", str(tmp_path), "--quiet"]) == 0
    mean = json.loads((tmp_path / "eval.json").read_text())["mean"]
    assert mean["psnr_y"] > mean["input_psnr_y"]  # the shipped model visibly derains
    assert "dB (derained)" in capsys.readouterr().out


def test_demo_derains_the_sample_and_cli_writes_a_clip(tmp_path, capsys):
    import cv2

    from edge_derain.demo import run_demo

    result = run_demo(TorchBackend(load_model()), tmp_path / "img")
    assert result.output.exists() and result.frames == 1 and result.fps > 0
    assert result.psnr_derained > result.psnr_rainy + 1.0  # visibly derains the shipped sample
    assert main(["demo", "--out", str(tmp_path / "clip"), "--clip", "4"]) == 0
    assert "frames/s" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(tmp_path / "clip" / "demo_side_by_side.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_cli_derain_and_clean_errors(tmp_path, capsys):
    from edge_derain.data import write_image

    rng = np.random.default_rng(0)
    write_image(tmp_path / "in.png", rng.random((40, 52, 3), dtype=np.float32))
    assert main(["derain", str(tmp_path / "in.png"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "in_derained.png").exists()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert main(["derain", str(tmp_path / "bad.mp4"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot open video" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--weights", "nope", "--data", str(tmp_path)]) == 2
    assert "shipped names" in capsys.readouterr().err


def _silhouette_pair(folder, rainy: bool):
    """A pedestrian figure HOG finds, as a rain/clean pair (the rain image is the clean one when dry)."""
    import cv2

    from edge_derain.data import RainRenderer, write_image

    image = np.full((320, 240, 3), 200, np.uint8)
    cv2.circle(image, (120, 70), 14, (0, 0, 0), -1)
    cv2.rectangle(image, (104, 86), (136, 170), (0, 0, 0), -1)
    for start, end, width in (((106, 92), (92, 160), 9), ((134, 92), (148, 160), 9),
                              ((112, 168), (104, 250), 12), ((128, 168), (136, 250), 12)):
        cv2.line(image, start, end, (0, 0, 0), width)
    clean = image.astype(np.float32) / 255
    rain = RainRenderer.preset("medium").render(clean, np.random.default_rng(0))[0] if rainy else clean
    write_image(folder / "clean" / "fig.png", clean)
    write_image(folder / "rain" / "fig.png", rain)


def test_eval_scores_a_detector_against_its_clean_image_detections(tmp_path, capsys):
    from edge_derain.detect import create_detector

    pytest.importorskip("cv2").HOGDescriptor  # OpenCV 5 keeps HOG in the contrib build
    _silhouette_pair(tmp_path / "dry", rainy=False)
    report = evaluate(TorchBackend(load_model()), tmp_path / "dry", progress=False, detector=create_detector("hog"))
    detection = report["detection"]
    assert detection["reference_boxes"] >= 1
    # A "rainy" image identical to the clean one finds exactly the reference detections.
    assert detection["rainy"]["f1"] == 1.0 and detection["rainy"]["ap50"] == 1.0
    assert 0.0 <= detection["derained"]["f1"] <= 1.0

    _silhouette_pair(tmp_path / "wet", rainy=True)
    model = tmp_path / "m"
    assert main(["export", "--out", str(model)]) == 0
    assert main(["eval", "--precisions", "fp32,fp16", "--onnx", str(model) + ".onnx", "--data", str(tmp_path / "wet"),
                 "--detector", "hog", "--out", str(tmp_path / "report"), "--quiet"]) == 0
    assert "detector vs clean-image detections" in capsys.readouterr().out
    summary = json.loads((tmp_path / "report" / "precision_report.json").read_text())["precisions"]
    assert set(summary["fp16"]["detection"]) >= {"f1", "drop_f1", "precision", "recall", "ap50"}
    assert summary["fp32"]["detection"]["drop_f1"] == 0.0


@pytest.mark.parametrize("model", ["elf_lw", "recanet"])
def test_multi_output_models_train_through_the_same_loop(data_dir, tmp_path, model):
    """Two-stage (ELF-LW) and input-derived-target (RECA-Net) losses need no special case in the loop;
    RECA-Net's embedding-consistency target comes from a rain autoencoder trained first."""
    import warnings

    from edge_derain.train import train_rain_autoencoder

    loss_config = {}
    if model == "recanet":
        autoencoder = train_rain_autoencoder(data_dir, tmp_path / "ae", iters=2, batch=2, crop=32, progress=False)
        loss_config = {"autoencoder": str(autoencoder)}
    cfg = _config(data_dir, tmp_path, model=model, model_config={}, iters=3, batch=2, crop=32, epoch_iters=3,
                  val_limit=1, loss_config=loss_config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, progress=False)
    assert not [w for w in caught if "autoencoder" in str(w.message)]  # the embedding term is on
    assert len(result["losses"]) == 3 and all(np.isfinite(result["losses"]))
    assert load_model(tmp_path / "last.safetensors").model_name == model
