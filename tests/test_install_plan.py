"""install.sh's decisions (edge_derain/install_plan.py) on faked machines: a Jetson with JetPack 6, CUDA 12
and 13 desktops, a CPU build server, an aarch64 server; the real gathering reads a fake file tree and a
fake nvidia-smi, and its shell output is evaluated by bash as install.sh does."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_derain.install_plan import (MachineFacts, PlanError, gather_facts, parse_cuda_version_file,
                                      parse_nvidia_smi, plan_install)

REPO = Path(__file__).resolve().parents[1]
TEGRA = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
SMI_HEADER = ("+-----------------------------------------------------------------------------------------+\n"
              "| NVIDIA-SMI 540.4.0                Driver Version: 540.4.0        CUDA Version: {cuda}     |\n")
JETPACK_TORCH = "2.5.0a0+872d972e41.nv24.08"


def facts(machine="x86_64", tegra=None, driver=None, toolkit=None, python=(3, 11), torch=None) -> MachineFacts:
    return MachineFacts(machine, tegra, driver, toolkit, python, torch)


def test_jetson_keeps_jetpack_and_pins_cuda_python_to_cuda_12():
    plan = plan_install(facts("aarch64", TEGRA, (12, 6), (12, 6), (3, 10), JETPACK_TORCH))
    assert plan.jetson and plan.venv_args == ("--system-site-packages",) and not plan.expose_system_gi
    assert plan.torch == ""  # keep NVIDIA's JetPack wheel
    assert plan.packages == ("numpy>=1.24,<2", "cuda-python>=12,<13")
    assert not [p for p in plan.packages if "tensorrt_rtx" in p]
    assert any("Jetson Linux 36.4.3" in note for note in plan.notes)
    assert any(f"keeping JetPack's PyTorch {JETPACK_TORCH}" in note for note in plan.notes)


def test_jetson_without_jetpack_torch_says_what_to_install():
    with pytest.raises(PlanError, match="JetPack's PyTorch is not installed .*EDGE_DERAIN_TORCH") as err:
        plan_install(facts("aarch64", TEGRA, None, (12, 6), (3, 10)))
    assert "\n" not in str(err.value)
    wheel = "/opt/torch-2.5.0a0+872d972e41.nv24.08-cp310-cp310-linux_aarch64.whl"
    assert plan_install(facts("aarch64", TEGRA, None, (12, 6), (3, 10)), torch=wheel).torch == wheel


@pytest.mark.parametrize("driver,rtx,cuda_python", [((12, 4), "cu12", "cuda-python>=12,<13"),
                                                     ((13, 0), "cu13", "cuda-python>=13,<14"),
                                                     (None, "cu13", "cuda-python>=13,<14")],
                         ids=["cuda12-driver", "cuda13-driver", "cpu-build-server"])
def test_x86_gets_the_tensorrt_rtx_and_cuda_python_of_its_driver(driver, rtx, cuda_python):
    plan = plan_install(facts(driver=driver))
    assert not plan.jetson and plan.venv_args == () and plan.expose_system_gi
    assert plan.torch == "torch==2.13.0"
    assert plan.packages == (f"tensorrt_rtx_{rtx}_libs", f"tensorrt_rtx_{rtx}_bindings", cuda_python)


def test_driver_beats_toolkit_and_old_drivers_are_named():
    assert plan_install(facts(driver=(12, 8), toolkit=(13, 0))).packages[-1] == "cuda-python>=12,<13"
    assert plan_install(facts(toolkit=(12, 2))).packages[-1] == "cuda-python>=12,<13"
    old = plan_install(facts(driver=(11, 8)))
    assert "tensorrt_rtx_cu13_libs" in old.packages and any("needs a newer driver" in n for n in old.notes)


def test_aarch64_servers_never_get_tensorrt_rtx():
    plan = plan_install(facts("aarch64", driver=(13, 0)))
    assert plan.packages == ("cuda-python>=13,<14",) and not plan.venv_args


def test_python_older_than_310_is_refused():
    with pytest.raises(PlanError, match="python3 is 3.8; edge_derain needs Python 3.10 or newer"):
        plan_install(facts("aarch64", TEGRA, python=(3, 8), torch=JETPACK_TORCH))


def test_parsers_read_the_real_formats():
    assert parse_nvidia_smi(SMI_HEADER.format(cuda="12.6")) == (12, 6)
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver") is None
    version_json = json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"},
                               "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": "12.6.68"}})
    assert parse_cuda_version_file(version_json) == (12, 6)
    assert parse_cuda_version_file("CUDA Version 11.4.315\n") == (11, 4)  # JetPack 5's version.txt
    assert parse_cuda_version_file("{}") is None


@pytest.fixture
def jetson_tree(tmp_path):
    """A Jetson's files under tmp_path, and a nvidia-smi that reports CUDA 12.6."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(TEGRA + "\nINSTALL_TYPE=\n")
    cuda = tmp_path / "usr" / "local" / "cuda"
    cuda.mkdir(parents=True)
    (cuda / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{SMI_HEADER.format(cuda='12.6')}EOF\n")
    smi.chmod(0o755)
    return tmp_path


def test_gather_facts_reads_the_tree_and_nvidia_smi(jetson_tree):
    found = gather_facts(str(jetson_tree), "aarch64", str(jetson_tree / "bin" / "nvidia-smi"))
    assert found.jetson and found.l4t == "36.4.3" and found.driver_cuda == (12, 6) and found.toolkit_cuda == (12, 6)
    # a JetPack image without nvidia-smi: the toolkit's version.json decides
    (jetson_tree / "usr" / "local" / "cuda" / "version.json").write_text('{"cuda": {"version": "12.2.140"}}')
    found = gather_facts(str(jetson_tree), "aarch64", str(jetson_tree / "bin" / "no-such-nvidia-smi"))
    assert found.driver_cuda is None and found.cuda_major == 12
    desktop = gather_facts(str(jetson_tree / "bin"), "x86_64", str(jetson_tree / "bin" / "no-such-nvidia-smi"))
    assert not desktop.jetson and desktop.cuda_major is None


def test_install_sh_evaluates_the_plan_of_a_jetson(jetson_tree):
    """What install.sh runs: the module's stdout evaluated by bash (this venv's torch stands in for JetPack's)."""
    command = (f"PLAN=$({sys.executable} -m edge_derain.install_plan --root {jetson_tree} --machine aarch64 "
               f"--nvidia-smi {jetson_tree / 'bin' / 'nvidia-smi'}) || exit 1; eval \"$PLAN\"; "
               "printf '%s|%s|%s|%s\\n' \"$PLAN_JETSON\" \"$PLAN_VENV_ARGS\" \"$PLAN_TORCH\" \"$PLAN_PACKAGES\"")
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1|--system-site-packages||numpy>=1.24,<2 cuda-python>=12,<13\n"
    assert "[install] cuda-python 12.x, matching the CUDA 12 of nvidia-smi" in result.stderr

