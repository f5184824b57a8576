"""benchmarks/: the logic around the measurements (parsing tool output, statistics, rendering and merging
results) and the committed results agreeing with BENCHMARKS.md and with the package."""
import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import their siblings (reporting, gpu_check) by name

reporting = importlib.import_module("reporting")
rain_gate = importlib.import_module("rain_gate")
gpu_profile = importlib.import_module("gpu_profile")
gpu_check = importlib.import_module("gpu_check")

# ncu --csv --page details, as Nsight Compute prints it: its own lines first, then one row per (launch, metric).
NCU_CSV = """==PROF== Connected to process 4242 (/usr/bin/python3)
==PROF== Profiling "gram_partials_kernel": 0%....50%....100% - 1 pass
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","4242","python3","127.0.0.1","void gram_partials_kernel<float, 1, 32>(const T1 *, const T1 *, float *, Geometry)","1","7","(256, 1, 1)","(900, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","usecond","236.51"
"0","4242","python3","127.0.0.1","void gram_partials_kernel<float, 1, 32>(const T1 *, const T1 *, float *, Geometry)","1","7","(256, 1, 1)","(900, 1, 1)","0","9.0","Command line profiler metrics","launch__registers_per_thread","register/thread","127"
"1","4242","python3","127.0.0.1","reduce_partials_kernel(const float *, float *, Geometry)","1","7","(256, 1, 1)","(4, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","31,040"
"2","4242","python3","127.0.0.1","void gram_partials_kernel<float, 1, 32>(const T1 *, const T1 *, float *, Geometry)","1","7","(256, 1, 1)","(900, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","msecond","0.24"
"3","4242","python3","127.0.0.1","cudaMemsetAsync","1","7","(1, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","900"
==PROF== Disconnected from process 4242
"""


def test_ncu_csv_rows_become_per_stage_medians_in_microseconds():
    rows = gpu_profile.parse_ncu_csv(NCU_CSV)
    assert len(rows) == 5
    stages = gpu_profile.stage_metrics(rows)
    assert list(stages) == ["gram", "reduce"]  # launch order; the memset is no stage
    assert stages["gram"]["time_us"] == pytest.approx((236.51 + 240.0) / 2)
    assert stages["gram"]["registers_per_thread"] == 127
    assert stages["reduce"]["time_us"] == pytest.approx(31.04)  # "31,040" ns: thousands separator
    assert gpu_profile.parse_ncu_csv("==ERROR== ERR_NVGPUCTRPERM - no permission") == []
    with pytest.raises(ValueError, match="time unit"):
        gpu_profile.metric_value({"Metric Name": "gpu__time_duration.sum", "Metric Unit": "cycle",
                                  "Metric Value": "3"})


def test_sanitizer_summary_is_read_from_its_last_line():
    assert gpu_profile.sanitizer_error_count("========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n") == 0
    text = "========= Invalid __global__ read of size 4 bytes\n========= ERROR SUMMARY: 1,024 errors\n"
    assert gpu_profile.sanitizer_error_count(text) == 1024
    assert gpu_profile.sanitizer_error_count("Segmentation fault") is None


def test_sanitizer_cases_cover_every_mode_and_head_size_within_the_kernel_limit():
    from edge_derain.engine import kernel_lib
    from edge_derain.ops import topk_from_ratios

    cases = gpu_profile.SANITIZER_ATTENTION_CASES
    assert {c[5] for c in cases} == {"dense", "sparse", "dual", "multi"}
    assert max(c[2] for c in cases) == kernel_lib.max_head_channels()
    for n, heads, per_head, h, w, mode, ratios in cases:
        assert all(1 <= k <= per_head for k in topk_from_ratios(per_head, ratios))


def test_roc_area_and_threshold_rates():
    assert rain_gate.roc_auc([1, 2, 3], [4, 5]) == 1.0
    assert rain_gate.roc_auc([4, 5], [1, 2, 3]) == 0.0
    assert rain_gate.roc_auc([1, 2], [1, 2]) == 0.5  # ties count half
    stats = rain_gate.condition_stats([1.0, 2.0, 3.0, 4.0], on=3.0, off=2.0)
    assert (stats["at_or_above_on"], stats["at_or_below_off"], stats["median"]) == (0.5, 0.5, 2.5)
    with pytest.raises(ValueError, match="at least one"):
        rain_gate.roc_auc([], [1.0])


def test_section_replacement_touches_only_its_markers(tmp_path):
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("intro\n<!-- a:begin -->\nold a\n<!-- a:end -->\nmiddle\n<!-- b:begin -->\nold b\n<!-- b:end -->\n")
    assert reporting.replace_section("a", "new a", page)
    assert page.read_text() == ("intro\n<!-- a:begin -->\nnew a\n<!-- a:end -->\nmiddle\n<!-- b:begin -->\nold b\n"
                                "<!-- b:end -->\n")
    assert not reporting.replace_section("missing", "x", page)


def _gpu_report(**parts) -> dict:
    return {"device": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "torch": "2.11.0",
            "kernels_version": "0.2.0",
            "kernels_sha256": "0123456789abcdef", "copy_bandwidth_gbps": 2964.0, "warmup": 10, "iters": 50,
            "dates": {name: "2026-11-22" for name in parts.get("checks", {})}, **parts}


def test_gpu_check_renders_its_tables_and_merges_a_partial_run():
    rows = [{"case": "1x3x720x1280 d=1,2,3,4", "dtype": "float32", "status": "ok", "rel_err": 0.0, "kernel_ms": 0.086,
             "torch_ms": 0.722, "speedup": 8.4, "gbps": 1802.0, "pct_of_copy": 61.0}]
    full = _gpu_report(checks={"dilation_filter": rows})
    sections = gpu_check.markdown_sections(full)
    assert list(sections) == ["gpu_check_dilation_filter"]
    assert "| 1x3x720x1280 d=1,2,3,4 | float32 | ok | 0.0e+00 | 0.086 | 0.722 | 8.4 | 1802 | 61 |" in \
        sections["gpu_check_dilation_filter"]

    nsight = {"status": "ok", "tool": "NVIDIA Nsight Compute 2025.1", "clock_control": "base", "calls_per_case": 3,
              "rows": [{"case": "1x1x48x540x960 dense", "dtype": "float32", "status": "ok",
                        "stages": {s: {"time_us": t, "achieved_occupancy_pct": 24.0, "registers_per_thread": 127.0,
                                       "dram_throughput_pct": 26.0, "sm_throughput_pct": 60.0}
                                   for s, t in (("gram", 236.0), ("reduce", 31.0), ("rows", 19.0), ("apply", 238.0))}}]}
    partial = _gpu_report(checks={}, nsight=nsight)
    merged = gpu_check.merge_reports(full, partial)
    assert merged["checks"]["dilation_filter"] == rows and merged["nsight"] == nsight
    assert "| 1x1x48x540x960 dense | float32 | 236 | 31 | 19 | 238 |" in gpu_check.markdown_sections(merged)[
        "gpu_check_nsight"]
    other_device = {**full, "device": "Jetson AGX Orin"}
    assert "dilation_filter" not in gpu_check.merge_reports(other_device, partial)["checks"]
    failed = {**merged, "sanitizer": {"status": "FAIL", "errors": 3}}
    assert gpu_check.failures(failed) == ["sanitizer"]
    assert gpu_check.archive_name({"device": "NVIDIA H200"}, "2026-12-04") == "gpu_check-nvidia-h200-2026-12-04.json"


CPU_RESULTS = ("model_complexity", "models_cpu", "efderain_cpu", "precision_cpu_elf_lw", "precision_cpu_efderain_w025",
               "pipeline_cpu", "rain_gate", "batch_cpu")


@pytest.mark.parametrize("name", CPU_RESULTS)
def test_committed_results_are_the_tables_in_benchmarks_md(name):
    """The page is rendered from the JSON: a hand edit of either one shows up here."""
    path = BENCH / "results" / f"{name}.json"
    assert path.is_file(), f"{path} is missing: rerun its script (docs/workflows/benchmarking.md)"
    results = json.loads(path.read_text())
    script = {"efderain_cpu": "models_cpu", "precision_cpu_elf_lw": "precision_cpu",
              "precision_cpu_efderain_w025": "precision_cpu"}.get(name, name)
    module = importlib.import_module(script)
    table = (module.markdown(results, results.get("command", "python benchmarks/models_cpu.py"), name)
             if script == "models_cpu" else module.markdown(results))
    begin, end = reporting.markers(name)
    assert f"{begin}\n{table}\n{end}" in (ROOT / "BENCHMARKS.md").read_text()


def test_gate_thresholds_are_the_committed_calibration():
    """CALIBRATED_THRESHOLDS are calibrate_thresholds of the committed dry scores of each shipped weight,
    measured on the very files shipped (a re-shipped weight of the same name fails until it is re-measured)."""
    from edge_derain.checkpoint import list_shipped_weights, resolve_weights
    from edge_derain.gst.gating import CALIBRATED_THRESHOLDS, calibrate_thresholds
    from edge_derain.utils import file_sha256

    measured = json.loads((BENCH / "results" / "rain_gate.json").read_text())["weights"]
    assert set(measured) == set(list_shipped_weights()), "rerun benchmarks/rain_gate.py after shipping weights"
    for name, result in measured.items():
        assert result.get("weights_sha256") == file_sha256(resolve_weights(name)), (
            f"{name} changed since its gate calibration: rerun benchmarks/rain_gate.py --data DATA --weights {name}")
        dry = result["conditions"]["dry"]["scores"]
        assert calibrate_thresholds(dry) == (result["thresholds"]["on"], result["thresholds"]["off"])
        assert CALIBRATED_THRESHOLDS[name] == calibrate_thresholds(dry), (
            f"copy {name}'s thresholds from benchmarks/results/rain_gate.json into edge_derain/gst/gating.py")


def test_committed_model_sizes_match_the_models():
    from edge_derain.models import create_model, parameter_count, thop_parameter_count

    path = BENCH / "results" / "model_complexity.json"
    for row in json.loads(path.read_text())["models"]:
        if row["model"] == "ddsa":
            continue  # 21 M parameters: slow to build on a small CPU, and pinned by tests/test_models_ddsa_reca.py
        model = create_model(row["model"], **row["config"])
        assert (parameter_count(model), thop_parameter_count(model)) == (row["parameters"], row["parameters_thop"])
