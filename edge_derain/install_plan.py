"""What ``install.sh`` installs on this machine: a Jetson (JetPack 6) or a desktop/server, which TensorRT,
which cuda-python, and whether to keep the PyTorch already there.

    python3 -m edge_derain.install_plan [--torch SPEC]      # shell assignments on stdout, notes on stderr

``install.sh`` runs it with the system ``python3`` before the virtualenv exists, so it uses the standard
library of Python 3.10 only. The facts (:class:`MachineFacts`) come from ``/etc/nv_tegra_release``,
``nvidia-smi``, ``/usr/local/cuda/version.json`` and the system Python; :func:`plan_install` turns
them into an :class:`InstallPlan` and is what the tests drive with faked machines (``--root``,
``--machine`` and ``--nvidia-smi`` point the real gathering at a fake file tree).

The rules, each for a failure seen on a Jetson Orin with JetPack 6 (Ubuntu 22.04, Python 3.10,
TensorRT 10.3, CUDA 12.x, sm_87):

* JetPack's ``tensorrt``, ``gi`` (PyGObject) and PyTorch live in the system Python 3.10: the virtualenv
  is created with ``--system-site-packages`` to see them, and NVIDIA's JetPack PyTorch is kept (PyPI's
  aarch64 wheels have no Jetson GPU support); NumPy stays below 2, which those modules were built against.
* TensorRT-RTX is never installed on aarch64 (it cannot target Jetson's sm_87); on x86_64 its cu12 or
  cu13 build follows the driver's CUDA major.
* cuda-python is pinned to the driver's CUDA major: an unpinned ``cuda-python>=12`` resolves to 13.x,
  which a CUDA 12 driver refuses. The driver's version comes from ``nvidia-smi``, else from the
  toolkit's ``version.json``; a machine with neither (a CPU build server) gets the CUDA 13 builds.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TORCH = "torch==2.13.0"  # the project's CPU machines have this wheel on disk
#: CUDA major of the TensorRT-RTX and cuda-python builds where no driver says otherwise.
DEFAULT_CUDA_MAJOR = 13
RTX_CUDA_MAJORS = (12, 13)  # tensorrt_rtx_cu12_* and tensorrt_rtx_cu13_* wheels exist
JETPACK_TORCH_HELP = ("install NVIDIA's PyTorch wheel for JetPack 6 with the system pip first (see "
                      "https://docs.nvidia.com/deeplearning/frameworks/install-pytorch-jetson-platform/), or set "
                      "EDGE_DERAIN_TORCH=/path/to/torch-<version>-cp310-cp310-linux_aarch64.whl")


class PlanError(ValueError):
    """This machine cannot be set up as it is; the message says what to do."""


@dataclass(frozen=True)
class MachineFacts:
    machine: str  # platform.machine(): x86_64, aarch64
    tegra_release: str | None  # first line of /etc/nv_tegra_release (Jetson), else None
    driver_cuda: tuple[int, int] | None  # "CUDA Version" of nvidia-smi: what the driver supports
    toolkit_cuda: tuple[int, int] | None  # /usr/local/cuda/version.json (version.txt on older toolkits)
    python: tuple[int, int]  # the system python3 the virtualenv is made from
    system_torch: str | None  # version of the torch the system python3 has (JetPack's wheel), else None

    @property
    def jetson(self) -> bool:
        return self.tegra_release is not None

    @property
    def l4t(self) -> str | None:
        """``36.4.3`` from ``# R36 (release), REVISION: 4.3, ...``: Jetson Linux 36.x is JetPack 6."""
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", self.tegra_release or "")
        return f"{match[1]}.{match[2]}" if match else None

    @property
    def cuda_major(self) -> int | None:
        version = self.driver_cuda or self.toolkit_cuda
        return version[0] if version else None


@dataclass(frozen=True)
class InstallPlan:
    jetson: bool
    venv_args: tuple[str, ...]  # for python3 -m venv
    torch: str  # pip requirement installed when the virtualenv has no torch; "" keeps the system's
    packages: tuple[str, ...]  # installed with the package: TensorRT-RTX, cuda-python, NumPy pins
    expose_system_gi: bool  # symlink Debian's gi into a virtualenv without system site packages
    notes: tuple[str, ...]

    def shell(self) -> str:
        """``PLAN_*=...`` assignments for ``eval`` in install.sh."""
        values = {"PLAN_JETSON": "1" if self.jetson else "0", "PLAN_VENV_ARGS": " ".join(self.venv_args),
                  "PLAN_TORCH": self.torch, "PLAN_PACKAGES": " ".join(self.packages),
                  "PLAN_EXPOSE_GI": "1" if self.expose_system_gi else "0"}
        return "\n".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def parse_nvidia_smi(text: str) -> tuple[int, int] | None:
    """The driver's CUDA version from nvidia-smi's header (``CUDA Version: 12.6``)."""
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def parse_cuda_version_file(text: str) -> tuple[int, int] | None:
    """The toolkit version from ``version.json`` (``{"cuda": {"version": "12.6.68"}}``) or the older
    ``version.txt`` (``CUDA Version 11.4.315``)."""
    try:
        version = str(json.loads(text)["cuda"]["version"])
    except (ValueError, KeyError, TypeError):
        match = re.search(r"CUDA Version\s+(\d+\.\d+)", text)
        version = match[1] if match else ""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def gather_facts(root: str = "/", machine: str | None = None, nvidia_smi: str = "nvidia-smi") -> MachineFacts:
    """This machine's facts; ``root`` prefixes the files read (tests point it at a fake tree)."""
    base = Path(root)
    tegra = _read(base / "etc" / "nv_tegra_release")
    try:
        smi = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, or a Jetson image without nvidia-smi
        smi = ""
    cuda = base / "usr" / "local" / "cuda"
    toolkit = next((parse_cuda_version_file(text) for text in map(_read, (cuda / "version.json", cuda / "version.txt"))
                    if text), None)
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = None
    return MachineFacts(machine or platform.machine(), tegra.splitlines()[0].strip() if tegra else None,
                        parse_nvidia_smi(smi), toolkit, sys.version_info[:2], torch)


def plan_install(facts: MachineFacts, torch: str | None = None) -> InstallPlan:
    """What to install on a machine with these facts; ``torch`` is ``$EDGE_DERAIN_TORCH`` (a pip requirement
    or wheel path) when set. Raises PlanError when the machine needs something first."""
    notes = []
    cuda = facts.cuda_major
    cuda_source = ("nvidia-smi" if facts.driver_cuda else "the CUDA toolkit") if cuda else None
    packages = []
    if facts.python < (3, 10):
        raise PlanError(f"python3 is {facts.python[0]}.{facts.python[1]}; edge_derain needs Python 3.10 or newer")
    if facts.jetson:
        notes.append(f"Jetson (Jetson Linux {facts.l4t or 'unknown release'}): a virtualenv that sees JetPack's "
                     "tensorrt, PyGObject and PyTorch; no TensorRT-RTX")
        if torch:
            torch_spec = torch
        elif facts.system_torch:
            torch_spec = ""
            notes.append(f"keeping JetPack's PyTorch {facts.system_torch}")
        else:
            raise PlanError(f"JetPack's PyTorch is not installed for the system python3: {JETPACK_TORCH_HELP}")
        packages.append("numpy>=1.24,<2")  # JetPack's torch and tensorrt are built against NumPy 1.x
    else:
        torch_spec = torch or DEFAULT_TORCH
        if facts.machine == "x86_64":
            rtx = cuda if cuda in RTX_CUDA_MAJORS else DEFAULT_CUDA_MAJOR
            if cuda is not None and cuda < min(RTX_CUDA_MAJORS):
                notes.append(f"the driver supports CUDA {cuda} only: TensorRT-RTX (CUDA {rtx}) builds engines "
                             "ahead of time here, but running them needs a newer driver")
            packages += [f"tensorrt_rtx_cu{rtx}_libs", f"tensorrt_rtx_cu{rtx}_bindings"]
            notes.append(f"TensorRT-RTX for CUDA {rtx}" + (f" (the CUDA {cuda} of {cuda_source})" if cuda else
                                                           " (no NVIDIA driver found)"))
        else:
            notes.append(f"{facts.machine}: no TensorRT-RTX (x86_64 only); install NVIDIA's tensorrt wheel for "
                         "engines")
    major = cuda or DEFAULT_CUDA_MAJOR
    packages.append(f"cuda-python>={major},<{major + 1}")
    notes.append(f"cuda-python {major}.x" + (f", matching the CUDA {cuda} of {cuda_source}" if cuda else
                                            " (no NVIDIA driver found)"))
    return InstallPlan(facts.jetson, ("--system-site-packages",) if facts.jetson else (), torch_spec,
                       tuple(packages), not facts.jetson, tuple(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default="", help="$EDGE_DERAIN_TORCH: a pip requirement or wheel for PyTorch")
    parser.add_argument("--root", default="/", help="read /etc and /usr/local/cuda under this folder (tests)")
    parser.add_argument("--machine", default=None, help="the architecture instead of platform.machine() (tests)")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="the nvidia-smi to run (tests)")
    args = parser.parse_args(argv)
    try:
        plan = plan_install(gather_facts(args.root, args.machine, args.nvidia_smi), args.torch or None)
    except PlanError as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 1
    for note in plan.notes:
        print(f"[install] {note}", file=sys.stderr)
    print(plan.shell())
    return 0


if __name__ == "__main__":
    sys.exit(main())
