"""Training loop, evaluation report, derain command — end to end on the development data (the demo: test_demo.py)."""
import json

import numpy as np
import pytest
import torch

from edge_derain.backends import TorchBackend
from edge_derain.checkpoint import load_model, read_sidecar
from edge_derain.data import EVAL_SETS
from edge_derain.cli import main
from edge_derain.evaluate import evaluate, write_report
from edge_derain.models import create_model
from edge_derain.train import TrainConfig, lr_factor, train


def _config(data_dir, out, **kw):
    base = dict(model="efderain", data=str(data_dir), out=str(out), model_config={"width": 0.125},
                iters=20, batch=4, crop=64, lr=1e-3, epoch_iters=10, val_limit=2, seed=3, pack_mib=3,
                final_eval=False)
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
        assert meta["data"]["dir"] == str(data_dir) and "git_commit" in meta
        assert meta["data"]["pack"]["counts"]["pairs"] > 0 and meta["data"]["recipe"]["dry"] > 0
        assert meta["lineage"][-1]["iters"] == meta["step"] == 20 and meta["lineage"][-1]["device"] == "cpu"
        assert (tmp_path / f"{name}.md").read_text().startswith("# Model card")
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20]
    load_model(tmp_path / "best.safetensors")


@pytest.mark.slow  # two training runs and a third that resumes: minutes on a 2-core CPU
def test_resume_continues_exactly(data_dir, tmp_path, monkeypatch):
    """A run killed right after its step-10 checkpoint resumes into the same losses as an uninterrupted run."""
    from safetensors.torch import load_file

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
    # The saved weights are the moving average, which resumes too (the losses alone would not show it).
    resumed_weights = load_file(str(tmp_path / "b" / "last.safetensors"))
    for key, tensor in load_file(str(tmp_path / "a" / "last.safetensors")).items():
        torch.testing.assert_close(resumed_weights[key], tensor, rtol=1e-4, atol=1e-6)
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


@pytest.mark.slow  # every full-size image of the validation set through PyTorch
def test_cli_eval_with_shipped_weights_improves_over_rainy_input(data_dir, tmp_path, capsys):
    assert main(["eval", "--data", str(data_dir / "val"), "--out", str(tmp_path), "--quiet"]) == 0
    mean = json.loads((tmp_path / "eval.json").read_text())["mean"]
    assert mean["psnr_y"] > mean["input_psnr_y"]  # the shipped model visibly derains
    assert "dB (derained)" in capsys.readouterr().out


def test_cli_derain_and_clean_errors(tmp_path, capsys):
    from edge_derain.data import write_image

    rng = np.random.default_rng(0)
    write_image(tmp_path / "in.png", rng.random((40, 52, 3), dtype=np.float32))
    assert main(["derain", str(tmp_path / "in.png"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "in_derained.png").exists()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert main(["derain", str(tmp_path / "bad.mp4"), "--out", str(tmp_path / "out")]) == 1  # a failed item
    err = capsys.readouterr().err
    assert "cannot open video" in err and "Traceback" not in err
    assert "1 input failed" in err and not (tmp_path / "out" / "bad_derained.mp4").exists()
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


@pytest.mark.slow  # a training run per model: ~45 s (ELF-LW) to minutes (RECA-Net) on a 2-core CPU
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


@pytest.mark.slow
def test_init_extends_lineage_and_ship_measures_fp16_weights(data_dir, tmp_path):
    from safetensors.torch import load_file

    from edge_derain.checkpoint import save_checkpoint
    from edge_derain.release import ship_rule_violations, ship_weights

    # A checkpoint from before lineages existed: its one run is read from its config, step and machine.
    torch.manual_seed(0)
    legacy = save_checkpoint(tmp_path / "legacy", create_model("efderain", width=0.125), step=120,
                             train_config={"device": "cuda", "time_limit_min": 2.0, "batch": 16, "crop": 128},
                             trained_on="some GPU")
    train(_config(data_dir, tmp_path / "run", init=str(legacy), iters=4, epoch_iters=4), progress=False)
    lineage = read_sidecar(tmp_path / "run" / "last.safetensors")["lineage"]
    assert [(r["device"], r["iters"]) for r in lineage] == [("cuda", 120), ("cpu", 4)]
    assert lineage[0]["wall_s"] == 120.0 and lineage[1]["init"] == str(legacy)
    with pytest.raises(ValueError, match="--init"):
        train(_config(data_dir, tmp_path / "bad", init=str(legacy), model_config={"width": 0.25}), progress=False)

    # Random weights retouch every frame: the ship rule refuses them, and nothing is written.
    with pytest.raises(ValueError, match=r"not shipping .*dry frames come out at \d+\.\d dB .*--allow-regressions"):
        ship_weights(legacy, "random", data_dir, dest=tmp_path / "refused", progress=False)
    assert not list((tmp_path / "refused").glob("random*"))
    shipped = ship_weights(tmp_path / "run" / "last.safetensors", "tiny", data_dir, dest=tmp_path / "ship",
                           progress=False, allow_regressions=True)
    assert read_sidecar(shipped).get("ship_rule_waived", []) == ship_rule_violations(read_sidecar(shipped)["eval"])
    assert {t.dtype for t in load_file(str(shipped)).values()} == {torch.float16}
    meta = read_sidecar(shipped)
    assert meta["storage"] == "float16" and meta["lineage"] == lineage
    assert set(meta["eval"]) == set(EVAL_SETS) >= {"val", "rain800-holdout", "light", "dry"}
    card = shipped.with_suffix(".md").read_text()
    assert f"{meta['eval']['val']['gain_psnr_y']:+.2f} dB" in card and "0.03 CPU hours" not in card
    assert "2.0 GPU minutes" in card and "124 iterations" in card
    # What the card reports is what the FP16 file computes.
    report = evaluate(TorchBackend(load_model(shipped)), data_dir / "val", progress=False)
    assert report["mean"]["gain_psnr_y"] == pytest.approx(meta["eval"]["val"]["gain_psnr_y"], abs=1e-6)


def test_weight_ema_warms_up_and_averages_shared_parameters_once():
    from edge_derain.train import WeightEMA

    torch.manual_seed(0)
    shared = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.BatchNorm1d(3))
    ema = WeightEMA(model, decay=0.9)
    start = shared.weight.detach().clone()
    with torch.no_grad():
        shared.weight.add_(1.0)
        model[3].num_batches_tracked += 5
    ema.update(model)   # warm-up decay: min(0.9, 2 / 11)
    torch.testing.assert_close(ema.module[0].weight, start + (1 - 2 / 11))   # once, although used twice
    assert ema.module[3].num_batches_tracked.item() == 5 and ema.module[0] is ema.module[2]
    for _ in range(200):
        ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, shared.weight, rtol=0, atol=1e-6)
    restored = WeightEMA(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 201
    with pytest.raises(ValueError, match="--ema must be in"):
        WeightEMA(model, decay=1.5)


def test_training_saves_the_moving_average_not_the_raw_weights(data_dir, tmp_path):
    from edge_derain.train import TrainingRun

    run = TrainingRun(_config(data_dir, tmp_path, iters=6, epoch_iters=6, ema=0.9), progress=False)
    run.run()
    saved = load_model(tmp_path / "last.safetensors").state_dict()
    raw, average = run.model.state_dict(), run.ema.module.state_dict()
    name = next(k for k, v in raw.items() if v.is_floating_point() and not torch.equal(v, average[k]))
    torch.testing.assert_close(saved[name], average[name])
    assert read_sidecar(tmp_path / "last.safetensors")["lineage"][-1]["ema"] == 0.9
    off = TrainingRun(_config(data_dir, tmp_path / "raw", iters=2, epoch_iters=2, ema=0.0), progress=False)
    off.run()
    torch.testing.assert_close(load_model(tmp_path / "raw" / "last.safetensors").state_dict()[name],
                               off.model.state_dict()[name])


def test_average_is_the_mean_and_counts_shared_runs_once(tmp_path, capsys):
    from edge_derain.checkpoint import save_checkpoint
    from edge_derain.utils import file_sha256

    common = {"started": "2026-01-01T00:00:00+00:00", "device": "cuda", "iters": 100, "wall_s": 60.0, "step": 100}
    parents = []
    for seed, extra in ((1, 30), (2, 50)):
        torch.manual_seed(seed)
        run = {**common, "started": f"2026-01-0{seed + 1}", "device": "cpu", "iters": extra, "wall_s": 3600.0}
        parents.append(save_checkpoint(tmp_path / f"p{seed}", create_model("efderain", width=0.125), step=extra,
                                       lineage=[common, run]))
    assert main(["average", str(parents[0]), str(parents[1]), "--out", str(tmp_path / "soup")]) == 0
    assert "2 checkpoints averaged" in capsys.readouterr().out
    soup = load_model(tmp_path / "soup.safetensors").state_dict()
    a, b = (load_model(p).state_dict() for p in parents)
    for key in soup:
        torch.testing.assert_close(soup[key], (a[key] + b[key]) / 2)
    meta = read_sidecar(tmp_path / "soup.safetensors")
    assert [r["iters"] for r in meta["lineage"]] == [100, 30, 50, 0]   # the shared GPU run once
    assert meta["averaged_from"][1] == {"path": str(parents[1]), "sha256": file_sha256(parents[1]), "step": 50}
    card = (tmp_path / "soup.md").read_text()
    assert "180 iterations in 4 run(s): 1.0 GPU minutes, 2.00 CPU hours" in card
    assert "uniform average of 2 checkpoints (steps 30, 50;" in card and "p1.safetensors, p2.safetensors" in card

    # Two checkpoints of one run (its record grows with its steps) count that run once, as far as it got.
    early = save_checkpoint(tmp_path / "early", create_model("efderain", width=0.125), step=20,
                            lineage=[common, {**run, "iters": 20, "wall_s": 600.0, "step": 20}])
    assert main(["average", str(early), str(parents[1]), "--out", str(tmp_path / "same_run")]) == 0
    same_run = read_sidecar(tmp_path / "same_run.safetensors")["lineage"]
    assert [r["iters"] for r in same_run] == [100, 50, 0]

    torch.manual_seed(3)
    other = save_checkpoint(tmp_path / "wide", create_model("efderain", width=0.25))
    assert main(["average", str(parents[0]), str(other), "--out", str(tmp_path / "bad")]) == 2
    assert "only checkpoints of one model and config can be averaged" in capsys.readouterr().err
    assert main(["average", str(parents[0]), "--out", str(tmp_path / "bad")]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert not list(tmp_path.glob("bad*"))


def test_ship_rule_names_altered_dry_frames_and_worse_light_rain():
    from edge_derain.release import ship_rule_violations

    good = {"val": {"gain_psnr_y": 3.8}, "dry": {"psnr_y": 46.0}, "light": {"count": 15, "losses": 0}}
    assert ship_rule_violations(good) == []
    bad = {**good, "dry": {"psnr_y": 32.6}, "light": {"count": 15, "losses": 2}}
    assert ship_rule_violations(bad) == [
        "dry frames come out at 32.6 dB PSNR-Y from the clean input (the rule asks >= 40 dB)",
        "2 of 15 light-rain images come out worse than their input"]
    assert ship_rule_violations(bad, min_dry_psnr_y=30.0) == [
        "2 of 15 light-rain images come out worse than their input"]


@pytest.mark.slow
def test_shipped_model_cards_match_the_weights(data_dir):
    """A card can never drift from its weights: the val/ gain measured now equals the card's, within 0.1 dB."""
    from edge_derain.checkpoint import SHIPPED_DIR, list_shipped_weights

    for name in list_shipped_weights():
        meta = read_sidecar(SHIPPED_DIR / f"{name}.safetensors")
        card_gain = meta["eval"]["val"]["gain_psnr_y"]
        assert f"{card_gain:+.2f} dB" in (SHIPPED_DIR / f"{name}.md").read_text()
        measured = evaluate(TorchBackend(load_model(name)), data_dir / "val", progress=False)["mean"]["gain_psnr_y"]
        assert measured == pytest.approx(card_gain, abs=0.1), name


def test_cli_pack_card_and_eval_sets(data_dir, tmp_path, capsys):
    assert main(["pack", "--data", str(data_dir), "--out", str(tmp_path / "p.npz"), "--pack-mib", "3",
                 "--quiet"]) == 0
    assert "real pair crops" in capsys.readouterr().out
    assert main(["eval", "--data", str(data_dir), "--set", "dry", "--out", str(tmp_path / "dry"), "--quiet",
                 "--limit", "2"]) == 0
    report = json.loads((tmp_path / "dry" / "eval.json").read_text())
    assert report["count"] == 2 and report["data"].startswith("dry of")


def test_amp_step_runs_on_cpu_in_bf16(data_dir, tmp_path):
    # The GPU path (autocast + loss in fp32) exercised on the CPU: bf16 autocast works there too.
    result = train(_config(data_dir, tmp_path, iters=2, epoch_iters=2, amp="bf16", batch=0), progress=False)
    assert len(result["losses"]) == 2 and all(np.isfinite(result["losses"]))
    assert read_sidecar(tmp_path / "last.safetensors")["lineage"][-1]["amp"] == "bfloat16"
    assert read_sidecar(tmp_path / "last.safetensors")["lineage"][-1]["batch"] == 8
