"""Shared pytest options and fixtures.

The development data lives outside the repository (CI passes ``--data=../shared/data``; the ``=`` keeps pytest from taking the folder for a test path); tests that
need it take the ``data_dir`` fixture and skip with a stated reason when it is absent.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


TIERS = ("default", "slow", "all")


def pytest_addoption(parser):
    parser.addoption("--data", default=None,
                     help="development data directory (the layout of ../shared/data)")
    parser.addoption("--tier", default="default", choices=TIERS,
                     help="default: the tests not marked slow (the CI budget); slow: only those; all: both. "
                          "-m MARKEXPR or a test named by its node id overrides it")


def pytest_collection_modifyitems(config, items):
    """Two tiers: the default run leaves out @pytest.mark.slow tests, ``--tier slow`` runs only them."""
    tier = config.getoption("--tier")
    if tier == "all" or config.getoption("markexpr"):
        return
    named = tuple(arg for arg in config.args if "::" in arg)  # asked for by name: always run
    keep, drop = [], []
    for item in items:
        wanted = item.nodeid.startswith(named) if named else False
        slow = item.get_closest_marker("slow") is not None
        (keep if wanted or slow == (tier == "slow") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    value = request.config.getoption("--data")
    if not value:
        pytest.skip("no --data directory given (CI passes --data=../shared/data)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"--data {value} is not a directory")
    return path


@pytest.fixture(scope="session")
def rtx():
    """A TensorRT flavour that builds for named GPU targets without a GPU (TensorRT-RTX), else skip."""
    from edge_derain.engine import TensorRTUnavailable, detect_tensorrt

    try:
        flavour = detect_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(f"no TensorRT flavour installed ({exc})")
    if not flavour.supports_targets:
        pytest.skip(f"{flavour.name} builds only for the local GPU; these tests need TensorRT-RTX targets")
    return flavour


@pytest.fixture
def plugin_desc():
    """``plugin_desc(trt, shape, dtype)``: a LINEAR ``PluginTensorDesc`` as TensorRT hands a plugin at runtime."""
    def make(trt, shape, dtype):
        desc = trt.PluginTensorDesc()
        desc.dims, desc.type, desc.format = trt.Dims(list(shape)), dtype, trt.TensorFormat.LINEAR
        return desc
    return make


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto MQTT broker on a free loopback port (``install.sh dev`` installs Debian's mosquitto)."""
    binary = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
    if binary is None:
        pytest.skip("mosquitto is not installed (bash install.sh dev installs it)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for_port(port):
        proc.kill()
        pytest.fail("mosquitto did not start listening within 10 s")
    yield port
    proc.terminate()
    proc.wait(5)
