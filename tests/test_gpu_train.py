"""benchmarks/gpu_train.py: the prepared GPU recipe, run end to end on the CPU with a tiny budget."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_train_script_trains_both_models_from_a_pack(data_dir, tmp_path):
    from edge_derain.checkpoint import load_model, read_sidecar
    from edge_derain.data import build_pack

    pack = tmp_path / "pack.npz"
    build_pack(data_dir, pack, budget_mib=3, progress=False)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_train.py"), "--pack", str(pack),
                           "--out", str(out), "--minutes", "0.02", "--device", "cpu", "--batch", "2",
                           "--epoch-iters", "1", "--workers", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "gpu_train.json").read_text())
    assert set(summary) == {"efderain_w025", "elf_lw"}
    for name, entry in summary.items():
        meta = read_sidecar(entry["weights"])
        # Each run starts from the shipped weights and extends their lineage.
        assert meta["lineage"][-1]["init"] == name and len(meta["lineage"]) >= 2
        assert meta["lineage"][-1]["iters"] >= 1 and (out / name / "last.md").exists()
        load_model(entry["weights"])


def test_gpu_train_script_needs_a_pack(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_train.py"), "--pack",
                           str(tmp_path / "none.npz"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "edge-derain pack" in proc.stderr
