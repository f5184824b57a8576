"""A non-editable install works: ``pip wheel .`` on the files a clone holds, the wheel installed into a fresh
virtualenv, and the tool run from outside the checkout (``demo``, ``run --print-pipeline``, ``build --target
sm86``), so pipelines/, the kernel sources and the default calibration recipe must come from the wheel.

The fresh virtualenv borrows the already-installed dependencies (torch, onnxruntime, TensorRT-RTX, ...) by
a ``.pth`` line naming this environment's site-packages: that line adds the folder to ``sys.path`` without
running the ``.pth`` files in it, so this checkout's editable install stays out and ``edge_derain`` is the
wheel's. Only the wheel build's own setuptools is fetched (cached by pip), no runtime dependency.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about a minute: wheel, virtualenv, demo, an engine build


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(python, edge-derain, environment) of a fresh virtualenv with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # the files a clone (plus this uncommitted change) has, nothing ignored
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # build isolation, as install.sh's editable install: the build gets a current setuptools of its own
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(root / "dist")])
    [wheel] = (root / "dist").glob("edge_derain-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGE_DERAIN_PIPELINES",
                                                            "EDGE_DERAIN_PLUGIN_LIB", "EDGE_DERAIN_KERNEL_LIB")}
    env["EDGE_DERAIN_CACHE"] = str(root / "cache")
    return python, venv / "bin" / "edge-derain", env, root


def test_the_wheel_carries_its_folders(wheel_env):
    python, _, env, root = wheel_env
    code = ("import edge_derain, json\n"
            "from edge_derain.gst.pipeline import pipelines_dir\n"
            "from edge_derain.engine.kernel_lib import kernel_sources_hash, plugin_source_dir\n"
            "from edge_derain.quant.calibration_set import load_recipe\n"
            "print(json.dumps({'package': edge_derain.__file__, 'pipelines': str(pipelines_dir()),\n"
            "                  'plugins': str(plugin_source_dir()), 'kernels': kernel_sources_hash(),\n"
            "                  'recipe': load_recipe()['name']}))\n")
    found = json.loads(_run([str(python), "-c", code], cwd=root, env=env).stdout)
    installed = Path(found["package"]).parent
    assert installed.is_relative_to(root / "venv") and not installed.is_relative_to(REPO)
    assert found["pipelines"] == str(installed / "_resources" / "pipelines")
    assert found["plugins"] == str(installed / "_resources" / "plugins")
    from edge_derain.engine.kernel_lib import kernel_sources_hash
    from edge_derain.quant.calibration_set import load_recipe

    assert found["kernels"] == kernel_sources_hash() and found["recipe"] == load_recipe()["name"]


def test_print_pipeline_from_the_wheel(wheel_env):
    _, tool, env, root = wheel_env
    out = _run([str(tool), "run", "--source", "test", "--sink", "fake", "--print-pipeline"], cwd=root, env=env).stdout
    assert "gst-launch-1.0" in out and "videotestsrc" in out and "derain" in out


def test_build_for_sm86_from_the_wheel(rtx, wheel_env):
    _, tool, env, root = wheel_env
    out = _run([str(tool), "build", "--model", "efderain", "--target", "sm86", "--shapes", "1x3x64x64",
                "--cache-dir", str(root / "engines")], cwd=root, env=env).stdout
    assert out.startswith("built: ") and "targets sm86" in out and "python plugin" in out and "DilationFilter" in out


def test_demo_from_the_wheel(wheel_env):
    _, tool, env, root = wheel_env
    out = root / "demo"
    _run([str(tool), "demo", "--clip", "4", "--out", str(out)], cwd=root, env=env)
    stats = json.loads((out / "demo_stats.json").read_text())
    assert stats["status"] == "eos" and stats["frames_out"] == 4
    assert (out / "demo_side_by_side.mp4").stat().st_size > 1000
