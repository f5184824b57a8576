"""benchmarks/model_table.py: the frontier and default rule, and the committed table agreeing with the package."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("model_table", ROOT / "benchmarks" / "model_table.py")
model_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_table)


def row(name, val, holdout, light, ms, gmacs):
    return {"name": name, "val": {"gain_psnr_y": val}, "rain800-holdout": {"gain_psnr_y": holdout},
            "light": {"gain_psnr_y": light}, "ort_ms_480p": ms, "gmacs_720p": gmacs}


def test_frontier_and_default_rule():
    rows = [row("fast", 3.0, 1.0, 0.5, 50, 40), row("slow_good", 5.0, 3.0, 1.0, 400, 80),
            row("dominated", 2.0, 0.5, 0.2, 100, 40), row("huge", 9.0, 6.0, 2.0, 2000, 900),
            row("loses_light", 6.0, 4.0, -0.5, 500, 60)]
    assert model_table.frontier(rows) == ["fast", "slow_good", "huge", "loses_light"]
    # huge is over the real-time budget, loses_light worsens light rain: slow_good is the default.
    assert model_table.choose_default(rows) == "slow_good"
    assert model_table.choose_default([row("only", 1.0, 1.0, -1.0, 10, 500)]) == "only"


def test_committed_table_names_the_package_default_and_every_shipped_model():
    from edge_derain.checkpoint import DEFAULT_WEIGHTS, SHIPPED_DIR, list_shipped_weights, read_sidecar

    path = ROOT / "benchmarks" / "results" / "model_table.json"
    results = json.loads(path.read_text())
    assert results["default"] == DEFAULT_WEIGHTS == model_table.choose_default(results["models"])
    assert sorted(r["name"] for r in results["models"]) == list_shipped_weights()
    for r in results["models"]:
        card = read_sidecar(SHIPPED_DIR / f"{r['name']}.safetensors")["eval"]
        # Measured by the table's own run of the same weights: the two tools agree.
        assert r["val"]["gain_psnr_y"] == pytest.approx(card["val"]["gain_psnr_y"], abs=1e-3), r["name"]
    assert model_table.MARKERS[0] in (ROOT / "BENCHMARKS.md").read_text()
