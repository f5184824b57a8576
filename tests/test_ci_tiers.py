"""The two test tiers: the README's test command (what .ci/run runs first) leaves out the tests marked slow,
``--tier slow`` runs only those, and .ci/run runs both; the README says how to run each."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "bash install.sh dev && .venv/bin/python -m pytest -q --data=../shared/data"


def _collected(*args: str, path: str = "tests/test_gst.py") -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", path,
                          *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_readme_second_command_is_what_ci_runs_first_then_the_slow_tier():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert commands[1].strip() == TEST_COMMAND
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci.index(TEST_COMMAND) < next(i for i, line in enumerate(ci) if "--tier slow" in line)
    assert "--tier slow" in readme and "--tier all" in readme


def test_the_default_tier_leaves_out_slow_tests_and_the_slow_tier_runs_them():
    default, slow, every = _collected(), _collected("--tier", "slow"), _collected("--tier", "all")
    rtsp = "tests/test_gst.py::test_rtsp_out_feeds_rtsp_in_and_a_dropped_stream_ends_with_one_line"  # marked slow
    assert rtsp not in default and rtsp in slow and rtsp in every
    assert sorted(default + slow) == sorted(every) and not set(default) & set(slow)
    assert _collected(path=rtsp) == [rtsp]  # a slow test asked for by name runs in any tier
