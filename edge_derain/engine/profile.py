"""Optimisation profiles: the (min, opt, max) input shapes an engine accepts, and the input multiple the
network's down-sampling needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def _dims(value: Sequence[int], what: str) -> tuple[int, ...]:
    dims = tuple(int(v) for v in value)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{what} shape must be positive integers, got {tuple(value)}")
    return dims


@dataclass(frozen=True)
class ShapeProfile:
    """Optimisation profile (min, opt, max) for one network input, ``image`` by default."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    input_name: str = "image"

    def __post_init__(self):
        for attr in ("min", "opt", "max"):
            object.__setattr__(self, attr, _dims(getattr(self, attr), f"profile {attr}"))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"profile shapes must have one rank, got {self.min}, {self.opt}, {self.max}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile needs min <= opt <= max in every dimension, got {self.min}, "
                             f"{self.opt}, {self.max}")

    @classmethod
    def static(cls, shape: Sequence[int], input_name: str = "image") -> "ShapeProfile":
        return cls(tuple(shape), tuple(shape), tuple(shape), input_name)

    @classmethod
    def parse(cls, text: str, input_name: str = "image") -> "ShapeProfile":
        """``"1x3x512x512"`` (static) or ``"1x3x256x256:1x3x512x512:2x3x1024x1024"`` (min:opt:max)."""
        parts = text.split(":")
        if len(parts) not in (1, 3):
            raise ValueError(f"shape profile {text!r} must be one shape NxCxHxW or three as min:opt:max")
        try:
            shapes = [tuple(int(v) for v in part.lower().split("x")) for part in parts]
        except ValueError:
            raise ValueError(f"shape profile {text!r} must contain integers like 1x3x512x512") from None
        return cls.static(shapes[0], input_name) if len(shapes) == 1 else cls(*shapes, input_name=input_name)

    @property
    def label(self) -> str:
        return ":".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))

    def to_dict(self) -> dict:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]), d["input"])


def check_profile_multiple(shapes: ShapeProfile, multiple: int | None, name: str) -> None:
    """One-line ValueError unless every profile H and W is a multiple of the model's input multiple: the
    network down-samples that often, and TensorRT aborts the build (not an error it returns) otherwise."""
    if not multiple or len(shapes.min) != 4:
        return
    bad = [(label, shape) for label, shape in (("min", shapes.min), ("opt", shapes.opt), ("max", shapes.max))
           if shape[2] % multiple or shape[3] % multiple]
    if bad:
        label, shape = bad[0]
        fixed = ":".join("x".join(map(str, (*s[:2], *(-(-d // multiple) * multiple for d in s[2:]))))
                         for s in (shapes.min, shapes.opt, shapes.max))
        raise ValueError(f"profile {label} {'x'.join(map(str, shape))} of {name}: H and W must be multiples of "
                         f"{multiple} (the model's input multiple); use --shapes {fixed}")
