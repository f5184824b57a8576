"""Accuracy-budgeted mixed precision: per-layer INT8 sensitivity, then the most sensitive layers stay FP32.

Given the calibrated scales (computed once, reused by every trial — nothing is recalibrated), each
trial inserts Q/DQ for a subset of convolutions into the portable graph and measures the mean PSNR-Y
against the clean targets of the calibration set's held-out split on ONNX Runtime (CPU); the drop is
the FP32 graph's PSNR-Y minus the trial's. :func:`greedy_plan`:

1. measure the all-INT8 drop and each layer group's drop alone (the sensitivity);
2. move groups back to FP32, most sensitive first, measuring the combined drop after each, until the
   budget holds;
3. try the moved groups again, least sensitive first, keeping each one that still fits the budget
   (drops do not add up exactly, so step 2 can overshoot).

Layers left out of INT8 run in the graph's float type: FP32 in a strongly typed engine (TensorRT-RTX,
11.x); a weakly typed TensorRT 10 build with ``--fp16`` may run them in FP16. The budget is
unreachable when not even one layer group fits it alone; the plan then says which group came
closest and by how much it missed. The coverage is the fraction of conv multiply-accumulates in INT8.
The held-out split is small (8 frames of 128x128 in the default recipe) to stay affordable on a CPU,
so differences of a few hundredths of a dB are within its noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import onnx

from .calibration_set import HoldoutPair
from .graphs import graph_input
from .qdq import insert_qdq
from .table import QuantTable

GROUPINGS = ("conv", "stage")
MAC_REFERENCE_SIZE = (256, 256)  # MAC fractions of a fully convolutional net do not depend on the size


@dataclass(frozen=True)
class LayerGroup:
    name: str
    convs: tuple[str, ...]
    macs: int


def stage_of(conv: str) -> str:
    """The module a conv belongs to: the first component of its exported name (``/conv3/conv3.2/Conv`` -> conv3)."""
    parts = [part for part in conv.split("/") if part]
    return parts[0] if len(parts) > 1 else conv


def layer_groups(convs: Sequence[str], by: str, macs: dict[str, int]) -> list[LayerGroup]:
    """Groups that are quantized or left in FP32 together: each conv, or each stage (``stage_of``)."""
    if by not in GROUPINGS:
        raise ValueError(f"layer groups must be one of {', '.join(GROUPINGS)}, got {by!r}")
    members: dict[str, list[str]] = {}
    for conv in convs:
        members.setdefault(conv if by == "conv" else stage_of(conv), []).append(conv)
    return [LayerGroup(name, tuple(group), sum(macs[c] for c in group)) for name, group in members.items()]


def conv_macs(model: onnx.ModelProto, convs: Sequence[str],
              size: tuple[int, int] = MAC_REFERENCE_SIZE) -> dict[str, int]:
    """Multiply-accumulates of each conv for one (1, C, *size) input, from ONNX shape inference."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = graph_input(fixed).type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, dims[1].dim_value or 3, *size)):
        dim.Clear()
        dim.dim_value = value
    fixed.graph.ClearField("value_info")
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.output]}
    initializers = {t.name: list(t.dims) for t in fixed.graph.initializer}
    by_name = {node.name: node for node in fixed.graph.node}
    unknown = [by_name[name].output[0] for name in convs
               if not all(shapes.get(by_name[name].output[0]) or [0])]
    if unknown:
        # Shape inference cannot follow every shape computation (e.g. slicing a frame into quadrants
        # at H/2); one ONNX Runtime run on a random input of the same size measures them instead.
        shapes.update(_measured_shapes(fixed, unknown))
    macs = {}
    for name in convs:
        node = by_name[name]
        out_shape, weight = shapes.get(node.output[0]), initializers[node.input[1]]
        if not out_shape or not all(out_shape):
            raise ValueError(f"cannot infer the output shape of {name} for a {size[0]}x{size[1]} input; re-export "
                             "the model with 'edge-derain export'")
        macs[name] = int(np.prod(out_shape)) * int(np.prod(weight[1:]))
    return macs


def _measured_shapes(model: onnx.ModelProto, tensors: Sequence[str]) -> dict[str, list[int]]:
    """Shapes of ``tensors`` from running the (static-input, standard-op) ``model`` once on ONNX Runtime."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    image = graph_input(model)
    shape = [d.dim_value for d in image.type.tensor_type.shape.dim]
    feed = {image.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    return {name: list(value.shape) for name, value in zip(tensors, session.run(list(tensors), feed))}


def int8_coverage(macs: dict[str, int], int8_convs: Sequence[str]) -> float:
    """Fraction of all conv MACs that run in INT8."""
    total = sum(macs.values())
    return sum(macs[c] for c in set(int8_convs)) / total if total else 0.0


def psnr_y_per_pair(model: onnx.ModelProto, pairs: Sequence[HoldoutPair]) -> list[float]:
    """PSNR-Y of ``model``'s output (ONNX Runtime, CPU; cropped to the unpadded size) against each target."""
    import onnxruntime as ort

    from ..metrics import psnr

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    scores = []
    for pair in pairs:
        h, w = pair.target.shape[:2]
        output = session.run(None, {name: pair.input})[0][0, :, :h, :w].astype(np.float32)
        scores.append(psnr(np.clip(output.transpose(1, 2, 0), 0.0, 1.0), pair.target, "y"))
    return scores


@dataclass
class SensitivityPlan:
    budget_db: float
    by: str
    holdout_frames: int
    fp32_psnr_y: float
    groups: list[dict]  # name, convs, macs, drop_db (that group alone in INT8)
    full_int8_drop_db: float
    int8_groups: list[str]
    fp32_groups: list[str]
    int8_convs: list[str]
    achieved_drop_db: float
    int8_coverage: float
    met: bool
    reason: str | None
    trials: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "budget_db": self.budget_db, "metric": "mean PSNR-Y drop vs FP32 on the held-out split (ONNX Runtime CPU)",
            "groups_by": self.by, "holdout_frames": self.holdout_frames, "fp32_psnr_y": self.fp32_psnr_y,
            "full_int8_drop_db": self.full_int8_drop_db, "met": self.met, "reason": self.reason,
            "achieved_drop_db": self.achieved_drop_db, "int8_coverage": self.int8_coverage,
            "int8_groups": self.int8_groups, "fp32_groups": self.fp32_groups, "int8_convs": self.int8_convs,
            "sensitivity": self.groups, "trials": self.trials,
        }


def greedy_plan(groups: Sequence[LayerGroup], measure: Callable[[list[str]], float], budget: float) -> dict:
    """The plan for ``groups`` under ``budget`` dB; ``measure(convs)`` is the drop with exactly ``convs`` in INT8.

    Returns a dict with ``sensitivity`` (group -> drop alone), ``int8`` (groups kept in INT8, graph
    order), ``drop`` (measured for that selection; 0 for none), ``met``, ``reason`` and ``trials``.
    Every selection is measured at most once.
    """
    groups = list(groups)
    if not groups:
        raise ValueError("there are no layer groups to plan; the graph has nothing to quantize")
    trials: list[dict] = []
    measured: dict[frozenset, float] = {}

    def run(selection: list[LayerGroup], why: str) -> float:
        key = frozenset(g.name for g in selection)
        if key not in measured:
            measured[key] = float(measure([c for g in selection for c in g.convs]))
            trials.append({"int8_groups": [g.name for g in selection], "drop_db": measured[key], "why": why})
        return measured[key]

    full = run(groups, "all groups in INT8")
    sensitivity = {g.name: run([g], f"only {g.name} in INT8") for g in groups}
    int8, drop, moved = list(groups), full, []
    for group in sorted(groups, key=lambda g: (-sensitivity[g.name], g.name)):
        if drop <= budget:
            break
        int8.remove(group)
        moved.append(group)
        drop = run(int8, f"{group.name} back to FP32") if int8 else 0.0
    for group in sorted(moved, key=lambda g: (sensitivity[g.name], g.name)):
        candidate = [g for g in groups if g in int8 or g is group]
        candidate_drop = run(candidate, f"{group.name} in INT8 again")
        if candidate_drop <= budget:
            int8, drop = candidate, candidate_drop
    reason = None
    if not int8:
        closest = min(groups, key=lambda g: sensitivity[g.name])
        reason = (f"the {budget:g} dB budget is unreachable: even the least sensitive layer group, {closest.name}, "
                  f"loses {sensitivity[closest.name]:.3f} dB alone on the held-out split, so no layer can run in INT8 "
                  f"(all INT8: {full:.3f} dB); raise the budget or build FP16")
    return {"sensitivity": sensitivity, "full": full, "int8": int8, "drop": drop, "met": bool(int8),
            "reason": reason, "trials": trials}


def plan_mixed_precision(portable: onnx.ModelProto, table: QuantTable, convs: Sequence[str],
                         pairs: Sequence[HoldoutPair], max_drop_db: float, by: str = "conv",
                         macs: dict[str, int] | None = None) -> SensitivityPlan:
    """Run :func:`greedy_plan` on the FP32 portable graph with the calibrated ``table`` (see the module docstring)."""
    if not pairs:
        raise ValueError("the sensitivity analysis needs held-out frames with clean targets; generate the default "
                         "calibration set with 'edge-derain calibrate collect --data DIR'")
    macs = macs if macs is not None else conv_macs(portable, convs)
    groups = layer_groups(convs, by, macs)
    reference = float(np.mean(psnr_y_per_pair(portable, pairs)))

    from tqdm import tqdm

    # Each trial quantizes a graph and runs the held-out frames: tens of seconds in all, so show them going by
    # (the count is open-ended: the greedy search stops when the budget fits).
    bar = tqdm(desc=f"INT8 sensitivity ({len(groups)} {by} groups, budget {max_drop_db:g} dB)", unit="trial",
               leave=False)

    def measure(selected: list[str]) -> float:
        bar.update()
        return reference - float(np.mean(psnr_y_per_pair(insert_qdq(portable, table, selected), pairs)))

    try:
        result = greedy_plan(groups, measure, max_drop_db)
    finally:
        bar.close()
    int8_names = {g.name for g in result["int8"]}
    int8_convs = [c for g in result["int8"] for c in g.convs]
    return SensitivityPlan(
        budget_db=float(max_drop_db), by=by, holdout_frames=len(pairs), fp32_psnr_y=reference,
        groups=[{"name": g.name, "convs": list(g.convs), "macs": g.macs, "drop_db": result["sensitivity"][g.name]}
                for g in groups],
        full_int8_drop_db=result["full"], int8_groups=[g.name for g in result["int8"]],
        fp32_groups=[g.name for g in groups if g.name not in int8_names], int8_convs=int8_convs,
        achieved_drop_db=result["drop"], int8_coverage=int8_coverage(macs, int8_convs), met=result["met"],
        reason=result["reason"], trials=result["trials"])
