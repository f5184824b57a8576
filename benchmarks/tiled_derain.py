"""Peak memory and time of ``edge-derain derain`` on a 12-megapixel photo, whole and in tiles.

    python benchmarks/tiled_derain.py                         # 4000x3000: tiles of 1024 and 512, whole 3 MP
    python benchmarks/tiled_derain.py --whole                 # also the whole 12 MP image (about 7 GB)
    python benchmarks/tiled_derain.py --backend out/efderain.portable.onnx

The photo is the shipped sample scaled to 4000x3000 with heavy synthetic rain rendered into it. Each case is
one ``edge-derain derain`` process; its peak resident memory is the kernel's ``ru_maxrss`` of that child
(``os.wait4``), so the number covers everything the command holds (model, runtime, image, tiles, output).

Writes ``benchmarks/results/tiled_derain.json`` and the ``tiled_derain`` table of ``BENCHMARKS.md``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from reporting import RESULTS, add_output_options, describe_machine, environment, load_results, markdown_table, \
    publish

PHOTO = (3000, 4000)  # (H, W): 12 megapixels


def make_photo(path: Path, size: tuple[int, int]) -> Path:
    import cv2
    import numpy as np

    from edge_derain.data import RainRenderer, read_image, write_image
    from edge_derain.demo import SAMPLE_IMAGE

    clean = cv2.resize(read_image(SAMPLE_IMAGE), size[::-1], interpolation=cv2.INTER_CUBIC)
    rainy = RainRenderer.preset("heavy").render(np.clip(clean, 0, 1), np.random.default_rng(0))[0]
    return write_image(path, rainy)


def run_case(image: Path, out_dir: Path, tile: int, backend: str) -> dict:
    """One ``edge-derain derain`` process: wall time and the kernel's peak RSS of that process."""
    command = [sys.executable, "-m", "edge_derain.cli", "derain", str(image), "--out", str(out_dir),
               "--tile", str(tile), "--backend", backend, "--quiet"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr.strip()[-500:]}")
    return {"tile": tile, "seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def measure(backend: str, whole: bool) -> dict:
    from edge_derain.data import read_image

    env = environment()
    cases = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        photos = {PHOTO: make_photo(work / "photo_12mp.png", PHOTO),
                  (1500, 2000): make_photo(work / "photo_3mp.png", (1500, 2000))}
        plan = [(PHOTO, 1024), (PHOTO, 512), ((1500, 2000), 0)] + ([(PHOTO, 0)] if whole else [])
        outputs = {}
        for size, tile in plan:
            out_dir = work / f"out_{size[0]}_{tile}"
            case = run_case(photos[size], out_dir, tile, backend)
            case.update(height=size[0], width=size[1], megapixels=round(size[0] * size[1] / 1e6, 1))
            outputs[(size, tile)] = next(out_dir.iterdir())
            print(case, flush=True)
            cases.append(case)
        if whole:  # the seams: tiled against whole-image output of the same 12 MP photo
            import numpy as np

            diff = np.abs(read_image(outputs[(PHOTO, 1024)]) - read_image(outputs[(PHOTO, 0)]))
            env["tiled_vs_whole_12mp"] = {"mean_abs_255": round(float(diff.mean()) * 255, 4),
                                          "max_abs_255": round(float(diff.max()) * 255, 2)}
    return {"backend": backend, "cases": cases, "environment": env}


def markdown(results: dict) -> str:
    rows = [[f"{c['width']}×{c['height']} ({c['megapixels']} MP)", f"{c['tile']} px" if c["tile"] else "whole",
             f"{c['peak_rss_mib']:,} MiB", f"{c['seconds']:.1f} s"] for c in results["cases"]]
    env = results["environment"]
    seams = env.get("tiled_vs_whole_12mp")
    note = (f" Tiled (1024) vs whole 12 MP output: mean |Δ| {seams['mean_abs_255']}/255, max {seams['max_abs_255']}/255."
            if seams else "")
    return (f"`{results.get('command', 'python benchmarks/tiled_derain.py')}` "
            f"([JSON](benchmarks/results/tiled_derain.json)): `edge-derain derain --backend {results['backend']}` "
            f"on one heavy-rain photo, peak resident memory of the whole process (`ru_maxrss`); "
            f"{describe_machine(env)}.{note}\n\n"
            + markdown_table(["photo", "tiles", "peak memory", "time"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="torch", help="what edge-derain derain --backend takes")
    parser.add_argument("--whole", action="store_true", help="also derain the 12 MP photo whole (needs ~8 GB)")
    add_output_options(parser, "tiled_derain")
    args = parser.parse_args(argv)
    if args.render:
        results = load_results(args.out)
    else:
        results = measure(args.backend, args.whole)
        results["command"] = " ".join(["python benchmarks/tiled_derain.py", *(sys.argv[1:] if argv is None else argv)])
    publish("tiled_derain", args.out, results, markdown(results), rendered_only=args.render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
