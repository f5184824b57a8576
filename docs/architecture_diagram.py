"""Draw docs/images/architecture.png: the stages of edge_derain, their folders, and how data flows.

    .venv/bin/python docs/architecture_diagram.py

Edit the STAGES / SIDE tables below and rerun it when a stage or folder changes.
"""
from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent / "images" / "architecture.png"

# The one-way chain: (key, title, folders, x). Each stage knows only the one before it.
STAGES = (
    ("models", "models", "edge_derain/models/\nedge_derain/ops/", 0.0),
    ("export", "ONNX", "edge_derain/export/\nplugin + portable graph", 1.0),
    ("quant", "precision", "edge_derain/quant/\nQ/DQ INT8, FP16 graph", 2.0),
    ("engine", "engine", "edge_derain/engine/\nTensorRT build + cache", 3.0),
    ("backends", "runtime", "edge_derain/backends/\ntorch | ort | trt", 4.0),
    ("pipeline", "pipeline", "edge_derain/gst/\nsource▶derain▶detect▶sink", 5.0),
)
CHAIN_Y = 2.0
# Inputs from the side: (key, title, folders, x, y, feeds).
SIDE = (
    ("data", "data", "edge_derain/data/\npairs, synthetic rain, packs", -1.0, 0.4, None),
    ("train", "training", "train.py, losses.py,\ncheckpoint.py, release.py", 0.0, 0.4, "models"),
    ("calibration", "calibration sets", "calibration/\nrecipe, manifest format", 2.0, 0.4, "quant"),
    ("plugins", "kernels + plugins", "plugins/: CUDA, C API, C++\nengine/python_plugins.py", 3.5, 0.4,
     "engine"),
    ("pipelines", "pipeline configs", "pipelines/*.toml\ndetect/, fleet/", 5.0, 0.4, "pipeline"),
)
BOX_W, BOX_H = 0.86, 0.9


def _box(ax, x: float, y: float, title: str, folders: str, colour: str) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                boxstyle="round,pad=0.02,rounding_size=0.06", facecolor=colour, edgecolor="#333333",
                                linewidth=1.2))
    ax.text(x, y + 0.2, title, ha="center", va="center", fontsize=11, fontweight="bold")
    ax.text(x, y - 0.13, folders, ha="center", va="center", fontsize=7, family="monospace", linespacing=1.3)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], style: str = "-|>", dashed: bool = False) -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, linewidth=1.4, color="#333333",
                                 linestyle="--" if dashed else "-", shrinkA=2, shrinkB=2))


def draw(path: Path = OUT) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(15, 5.6))
    ax.set_xlim(-1.6, 5.6)
    ax.set_ylim(-0.9, 2.9)
    ax.axis("off")
    position = {}
    for key, title, folders, x in STAGES:
        _box(ax, x, CHAIN_Y, title, folders, "#dbe9f6")
        position[key] = (x, CHAIN_Y)
    for (_, _, _, x0), (_, _, _, x1) in zip(STAGES, STAGES[1:]):
        _arrow(ax, (x0 + BOX_W / 2, CHAIN_Y), (x1 - BOX_W / 2, CHAIN_Y))
    for key, title, folders, x, y, feeds in SIDE:
        _box(ax, x, y, title, folders, "#f3e6cf")
        position[key] = (x, y)
        if feeds:
            fx, fy = position[feeds]
            _arrow(ax, (x, y + BOX_H / 2), (fx, fy - BOX_H / 2))
    _arrow(ax, (position["data"][0] + BOX_W / 2, 0.4), (position["train"][0] - BOX_W / 2, 0.4))
    # The TensorRT runtime loads the same plugins when it deserialises an engine.
    _arrow(ax, (position["plugins"][0] + 0.25, 0.4 + BOX_H / 2), (position["backends"][0] - 0.2, CHAIN_Y - BOX_H / 2),
           dashed=True)
    ax.text(2.0, CHAIN_Y + 0.68, "data flows one way: each stage imports only the stage before it",
            ha="center", fontsize=10, style="italic")
    ax.text(2.0, -0.55, "benchmarks/ measures every stage → benchmarks/results/*.json → tables in BENCHMARKS.md;"
            "   edge_derain/cli/ is a thin command layer over all of them", ha="center", fontsize=9)
    ax.text(-1.0, CHAIN_Y, "shipped weights\nedge_derain/weights/", ha="center", va="center", fontsize=8,
            family="monospace")
    _arrow(ax, (-0.6, CHAIN_Y), (-BOX_W / 2, CHAIN_Y))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(f"wrote {draw()}")
