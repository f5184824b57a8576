"""Small helpers shared by every stage: atomic file writes, source digests and the git revision of the
checkout."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Engines, caches and checkpoints are written this way so that a crash or Ctrl-C never leaves a
    truncated file that a later run would mistake for a good one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have, so
        # engine caches and checkpoints can be shared with the user a pipeline service runs as.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


#: What replaces a plot when matplotlib is missing (it is in the dev install, not the user install).
PLOT_HINT = "no PNG plot: matplotlib is not installed (.venv/bin/pip install matplotlib to get it)"


def have_matplotlib() -> bool:
    """Plots are optional: commands write their JSON either way and say when the PNG is left out."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def console():
    """A rich Console for tables; when output goes to a pipe or file it is not cut at 80 columns."""
    import shutil
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else max(200, shutil.get_terminal_size((200, 24)).columns))


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout this package runs from, or None outside a git checkout."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cache_dir(*parts: str) -> Path:
    """Per-user cache folder (``$EDGE_DERAIN_CACHE``, else ``$XDG_CACHE_HOME/edge_derain``, else ``~/.cache``)."""
    base = os.environ.get("EDGE_DERAIN_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge_derain"
    return root.joinpath(*parts)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of one file's bytes, read in 1 MiB chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path], root: Path, extra: bytes = b"") -> str:
    """SHA-256 (hex) of files named relative to ``root`` (name and content of each, in the given order),
    then ``extra``: what keys caches of things built from source files."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(extra)
    return digest.hexdigest()
