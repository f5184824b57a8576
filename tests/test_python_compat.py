"""The oldest Python that setup.py admits (3.10: JetPack 6's, which its PyGObject and TensorRT bindings are
built for) can run the whole project: vermin (from the dev extra) finds no newer syntax or stdlib use,
and the one 3.11 module we use, tomllib, falls back to tomli."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def minimum_python() -> str:
    """``3.10`` from setup.py's ``python_requires=">=3.10"``."""
    match = re.search(r'python_requires\s*=\s*">=\s*(\d+\.\d+)"', (REPO / "setup.py").read_text())
    assert match, "setup.py must state python_requires='>=X.Y'"
    return match[1]


def test_vermin_finds_nothing_newer_than_python_requires():
    vermin = Path(sys.executable).parent / "vermin"
    if not vermin.is_file():
        pytest.fail("vermin is not installed; it is part of the dev extra (pip install -e '.[dev]')")
    target = minimum_python()
    paths = ["edge_derain", "benchmarks", "tests", "setup.py", "conftest.py"]
    result = subprocess.run([str(vermin), f"--target={target}-", "--violations", "--no-tips", "--eval-annotations",
                             "--feature", "union-types", *paths], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"code needs a Python newer than {target}:\n{result.stdout}{result.stderr}"
    assert "Minimum required versions:" in result.stdout  # vermin really analysed the files


def test_pipelines_read_with_tomli_where_tomllib_is_missing():
    """Python 3.10 has no tomllib: the pipeline module must load (and parse every definition) with tomli."""
    pytest.importorskip("tomli", reason="tomli is part of the dev extra")
    code = ("import sys; sys.modules['tomllib'] = None\n"  # what `import tomllib` meets on Python 3.10
            "from edge_derain.gst import pipeline\n"
            "assert pipeline.tomllib.__name__ == 'tomli', pipeline.tomllib\n"
            "for support in ('platforms', 'sinks'):\n"
            "    assert pipeline._read_toml(pipeline.pipelines_dir() / f'{support}.toml')\n"
            "print(' '.join(sorted(d.name for d in pipeline.list_definitions())))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert {"file", "jetson-csi", "test", "webcam"} <= set(result.stdout.split())
