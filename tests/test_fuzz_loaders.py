"""Fuzzing the loaders with damaged files: ONNX graphs, engine sidecars, checkpoint sidecars, pipeline TOML,
calibration manifests and images, cut short, bit-flipped, replaced by garbage, or (for the structured
ones) with values of the wrong type. Every case must load or fail with one line the CLI prints as such
(``edge_derain.cli.USER_ERRORS``): no traceback, no hang, no crash. The loaders run in a child process
(tests/support/fuzz_loaders.py) so that a crash is caught and named instead of killing the test run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "support" / "fuzz_loaders.py"
WRONG_VALUES = (None, [], {}, "x", -1, 0, 1e308, True)


def byte_mutations(data: bytes, rng: np.random.Generator, flips: int = 3) -> dict[str, bytes]:
    """Empty, cut short at three points, garbage of the same length, and ``flips`` copies with 16 bytes flipped."""
    out = {"empty": b"", "garbage": rng.bytes(max(1, len(data)))}
    for fraction in (0.1, 0.5, 0.95):
        out[f"cut at {fraction:.0%}"] = data[:int(len(data) * fraction)]
    for k in range(flips):
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), 16):
            flipped[position] ^= int(rng.integers(1, 256))
        out[f"16 bytes flipped #{k}"] = bytes(flipped)
    return out


def json_mutations(document, rng: np.random.Generator, count: int = 24) -> dict[str, bytes]:
    """The document with one value (at any depth) replaced by a value of another type, or itself a non-object."""
    paths = []

    def walk(node, path):
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            paths.append(path + [key])
            if isinstance(value, (dict, list)) and len(path) < 4:
                walk(value, path + [key])

    walk(document, [])
    out = {f"top level is {type(v).__name__}": json.dumps(v).encode() for v in ([], "x", 3)}
    for index in rng.choice(len(paths), size=min(count, len(paths)), replace=False):
        path, wrong = paths[index], WRONG_VALUES[int(rng.integers(len(WRONG_VALUES)))]
        mutated = json.loads(json.dumps(document))
        node = mutated
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = wrong
        out[f"{'/'.join(map(str, path))} = {wrong!r}"] = json.dumps(mutated).encode()
    return out


def toml_mutations(text: str) -> dict[str, bytes]:
    """Each ``key = value`` line with its value replaced by one of another type, and the line removed."""
    out = {}
    for number, line in enumerate(text.splitlines()):
        if " = " not in line or line.lstrip().startswith("#"):
            continue
        key = line.split(" = ", 1)[0]
        for wrong in ("[]", "1", "true", "{}", '"{unknown}"'):
            lines = text.splitlines()
            lines[number] = f"{key} = {wrong}"
            out[f"{key.strip()} = {wrong}"] = "\n".join(lines).encode()
        out[f"no {key.strip()}"] = "\n".join(text.splitlines()[:number] + text.splitlines()[number + 1:]).encode()
    return out


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """One valid file per loader (the shipped checkpoint, an exported graph, a collected calibration set...)."""
    from edge_derain.checkpoint import load_model, resolve_weights
    from edge_derain.data import read_image, write_image
    from edge_derain.demo import SAMPLE_IMAGE
    from edge_derain.engine.builder import ShapeProfile
    from edge_derain.engine.cache import SIDECAR_SCHEMA, DeviceFingerprint, EngineKey
    from edge_derain.export import export_model
    from edge_derain.gst.pipeline import pipelines_dir
    from edge_derain.quant import collect_from_media

    root = tmp_path_factory.mktemp("originals")
    image = read_image(SAMPLE_IMAGE)[:96, :128]
    write_image(root / "frames" / "a.png", image)
    write_image(root / "frames" / "b.jpg", image[::-1])
    key = EngineKey(DeviceFingerprint("tensorrt_rtx", "1.3.0", ("sm86", "sm89"), None), "fp16",
                    ShapeProfile.parse("1x3x64x64:1x3x256x256:1x3x512x512"), "0" * 64, "1" * 16, None, "python",
                    "strong")
    sidecar = root / "model.engine.json"
    sidecar.write_text(json.dumps({"schema": SIDECAR_SCHEMA, "key": key.to_dict(), "onnx_path": "model.onnx",
                                   "input_multiple": 16, "receptive_radius": 32, "plugins": []}))
    weights = resolve_weights(None)
    return {"onnx": export_model(load_model(), root / "efderain").portable_path,
            "engine_sidecar": sidecar, "checkpoint": weights.with_suffix(".json"),
            "pipeline_toml": pipelines_dir() / "test.toml",
            "calibration_manifest": collect_from_media([root / "frames"], root / "calib", count=2).root
            / "manifest.json",
            "image_png": root / "frames" / "a.png", "image_jpg": root / "frames" / "b.jpg"}


def _write_cases(originals: dict[str, Path], work: Path) -> list[dict]:
    from edge_derain.checkpoint import resolve_weights

    rng = np.random.default_rng(0)
    cases = []
    for name, original in originals.items():
        loader = "image" if name.startswith("image") else name
        data = original.read_bytes()
        mutations = byte_mutations(data, rng, flips=2 if loader == "onnx" else 3)
        if original.suffix == ".json":
            mutations.update(json_mutations(json.loads(data), rng))
        elif original.suffix == ".toml":
            mutations.update(toml_mutations(data.decode()))
        for index, (what, content) in enumerate(mutations.items()):
            folder = work / name / str(index)
            if loader == "calibration_manifest":  # the set's frames beside the damaged manifest
                shutil.copytree(original.parent, folder)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / original.name
            if loader == "checkpoint":  # the weights beside the damaged sidecar
                path = folder / "weights.json"
                shutil.copy(resolve_weights(None), folder / "weights.safetensors")
            path.write_bytes(content)
            cases.append({"loader": loader, "path": str(path), "file": original.name, "mutation": what})
    return cases


def test_damaged_files_fail_in_one_line_without_traceback_hang_or_crash(originals, tmp_path):
    cases = _write_cases(originals, tmp_path)
    assert len(cases) > 120 and {c["loader"] for c in cases} == {
        "onnx", "engine_sidecar", "checkpoint", "pipeline_toml", "calibration_manifest", "image"}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    child = subprocess.run([sys.executable, str(RUNNER), str(tmp_path / "cases.json")], capture_output=True,
                           text=True, timeout=900, cwd=ROOT)
    reports = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    if len(reports) < len(cases):
        crashed = cases[len(reports)]
        pytest.fail(f"the loader process died (exit {child.returncode}) on {crashed}: {child.stderr[-2000:]}")
    problems = []
    for case, report in zip(cases, reports):
        where = f"{case['loader']} {case['file']} [{case['mutation']}]"
        if report["outcome"] in ("bug", "hang"):
            problems.append(f"{where}: {report['outcome']} {report.get('type', '')}: {report.get('message', '')}")
        elif report["outcome"] == "error" and ("\n" in report["message"].strip() or not report["message"].strip()):
            problems.append(f"{where}: not one line: {report['message']!r}")
    assert not problems, "\n".join(problems)
    outcomes = {c["mutation"]: r["outcome"] for c, r in zip(cases, reports) if c["loader"] == "onnx"}
    assert outcomes["empty"] == outcomes["cut at 50%"] == "error"  # damage is found, not silently accepted
