"""What the benchmark scripts share: where results go, what machine measured them, and the table each
renders into BENCHMARKS.md.

Every script writes its measurements to ``benchmarks/results/<name>.json`` and renders them as a
markdown table between ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->`` in ``BENCHMARKS.md``, so
the page is regenerated from the JSON instead of being typed, and a number there always has a
command and a file behind it. A run with ``--out`` somewhere else leaves ``BENCHMARKS.md`` alone.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # runnable from a checkout without `pip install -e .`


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None = None) -> dict:
    """Date, machine and software of a run; the load average says how busy the CPU was when it started."""
    from edge_derain.utils import git_commit

    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": _cpu_model(),
           "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
           "git_commit": git_commit(ROOT)}
    if hasattr(os, "getloadavg"):
        env["load_average_1min"] = round(os.getloadavg()[0], 2)
    for module in ("torch", "onnxruntime"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            pass
    if threads is not None:
        env["threads"] = threads
    if "OMP_NUM_THREADS" in os.environ:
        env["omp_num_threads"] = os.environ["OMP_NUM_THREADS"]
    return env


def describe_machine(env: dict) -> str:
    """One line for a table caption, e.g. '2026-11-23, AMD EPYC (2 CPUs), 1 thread, load average 3.9 at the start'."""
    parts = [env["date"], f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} CPUs)"]
    if "threads" in env:
        parts.append(f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}")
    elif "omp_num_threads" in env:
        parts.append(f"OMP_NUM_THREADS={env['omp_num_threads']}")
    if "load_average_1min" in env:
        parts.append(f"load average {env['load_average_1min']} at the start")
    return ", ".join(parts)


def add_output_options(parser, name: str, default_from: str | None = None) -> None:
    """``--out`` (default ``benchmarks/results/<name>.json``) and ``--render`` (table from that JSON, no measuring).

    ``default_from`` names the option the results' name depends on: ``--out`` then defaults to None and the
    script resolves it once that option is parsed."""
    default = None if default_from else RESULTS / f"{name}.json"
    shown = default or f"benchmarks/results/{name}.json, by {default_from}"
    parser.add_argument("--out", type=Path, default=default, help=f"results JSON (default: {shown})")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: re-render the BENCHMARKS.md table from the --out JSON")


def load_results(path: Path) -> dict:
    import json

    if not path.is_file():
        raise SystemExit(f"{path} does not exist; run the script without --render first")
    return json.loads(path.read_text())


def write_results(path: Path, payload: dict) -> Path:
    from edge_derain.utils import atomic_write_json

    atomic_write_json(path, payload)
    print(f"wrote {path}")
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(name: str, text: str, path: Path = BENCHMARKS_MD) -> bool:
    """Put ``text`` between ``name``'s markers in ``path``; False (and a note) when the markers are missing."""
    from edge_derain.utils import atomic_write_bytes

    begin, end = markers(name)
    page = path.read_text()
    if begin not in page or end not in page:
        print(f"{path.name} has no {begin} ... {end} markers: table not inserted (add them where it belongs)")
        return False
    page = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{text}\n{end}", page, flags=re.S)
    atomic_write_bytes(path, page.encode())
    print(f"updated the {name} table in {path.name}")
    return True


def publish(name: str, out: Path, payload: dict, table: str, rendered_only: bool = False) -> None:
    """Write the JSON to ``out`` (unless it was only read back for ``--render``); when ``out`` is the default
    ``benchmarks/results/<name>.json``, put the table into BENCHMARKS.md."""
    if not rendered_only:
        write_results(out, payload)
    print(table)
    if out.resolve() == (RESULTS / f"{name}.json").resolve():
        replace_section(name, table)
