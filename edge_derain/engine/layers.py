"""The layers of a built engine (after fusion) and the data types they run in, read from TensorRT's engine
inspector or, without a GPU, from the DETAILED build log; plugin layers marked."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable


_DTYPE_WORDS = (("Float", r"Float|FP32"), ("Half", r"Half|FP16"), ("BFloat16", r"BFloat16|BF16"),
                ("Int8", r"Int8|INT8"), ("Int32", r"Int32|INT32"), ("Int64", r"Int64|INT64"),
                ("UInt8", r"UInt8|UINT8"), ("Bool", r"Bool|BOOL"), ("FP8", r"FP8|Fp8"),
                ("Int4", r"Int4|INT4"), ("FP4", r"FP4|Fp4"))
_DTYPE_RE = re.compile(r"\b(" + "|".join(alts for _, alts in _DTYPE_WORDS) + r")\b")
_DTYPE_CANON = {alt: canon for canon, alts in _DTYPE_WORDS for alt in alts.split("|")}
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
# RTX log / ONELINE inspector format: "Name: n, LayerType: t, Inputs: [...], Outputs: [...], ..."
_ONELINE_RE = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*), Inputs: (?P<rest>.*)$")
_ONELINE_IO_RE = re.compile(r"(?:Format/Datatype|Datatype): ([^,}\]]+)")
# tensorrt 8.x-10.x build log: "Layer(Type): name, Tactic: 0x.., in (Float[1,3,8,8]) -> out (Half[...])"
_LEGACY_RE = re.compile(r"^Layer\((?P<type>[^)]*)\): (?P<name>.*?), Tactic: \S+?, (?P<io>.*)$")
_LEGACY_IO_RE = re.compile(r"(?:\(|\[)\s*(" + "|".join(alts for _, alts in _DTYPE_WORDS) + r")\s*(?:\[|\()")


def one_line(text: str) -> str:
    return " ".join(text.split())


def onnx_nodes_of(metadata: str) -> tuple[str, ...]:
    """ONNX node names in a layer's metadata (``[ONNX Layer: a]\x1e[ONNX Layer: b]``)."""
    return tuple(_ONNX_LAYER_RE.findall(metadata or ""))


def _canon_dtypes(texts: Iterable[str]) -> tuple[str, ...]:
    out = []
    for text in texts:
        match = _DTYPE_RE.search(text)
        if match:
            out.append(_DTYPE_CANON[match[1]])
    return tuple(out)


@dataclass(frozen=True)
class EngineLayer:
    """One layer of the built engine (after fusion), as reported by TensorRT."""

    name: str
    type: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    onnx_nodes: tuple[str, ...] = ()
    plugin: str | None = None  # plugin name when the layer runs a plugin

    @property
    def datatypes(self) -> frozenset[str]:
        return frozenset(self.input_dtypes) | frozenset(self.output_dtypes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EngineLayer":
        return cls(d["name"], d["type"], tuple(d["input_dtypes"]), tuple(d["output_dtypes"]),
                   tuple(d.get("onnx_nodes", ())), d.get("plugin"))


def _parse_oneline(match: re.Match) -> EngineLayer:
    rest = match["rest"]
    inputs, _, outputs = rest.partition("Outputs: [")
    inputs = inputs.split("Constants: [")[0]  # folded weights are not activations
    outputs = re.split(r"\], (?:ParameterType|TacticName|TacticValue|StreamId|Metadata):", outputs)[0]
    metadata = rest.rpartition("Metadata:")[2]
    return EngineLayer(match["name"], match["type"], _canon_dtypes(_ONELINE_IO_RE.findall(inputs)),
                       _canon_dtypes(_ONELINE_IO_RE.findall(outputs)),
                       onnx_nodes_of(metadata))


def _parse_legacy(match: re.Match) -> EngineLayer:
    inputs, _, outputs = match["io"].partition(" -> ")
    return EngineLayer(match["name"], match["type"], _canon_dtypes(_LEGACY_IO_RE.findall(inputs)),
                       _canon_dtypes(_LEGACY_IO_RE.findall(outputs)),
                       tuple(part.strip() for part in match["name"].split(" + ")))


def parse_layer_log(messages: Iterable[str]) -> list[EngineLayer]:
    """Engine layers from the builder's VERBOSE log with ProfilingVerbosity.DETAILED.

    TensorRT-RTX logs a ``Layers:`` message in the inspector's one-line format; tensorrt 8.x-10.x log
    ``Engine Layer Information:`` with ``Layer(Type): name, Tactic: .., in (Float[..]) -> out (Half[..])``.
    """
    layers = []
    for message in messages:
        lines = message.split("\n")  # not splitlines(): it also splits at the \x1e between metadata entries
        if not lines or lines[0].strip() not in ("Layers:", "Engine Layer Information:"):
            continue
        for line in lines[1:]:
            line = line.strip()
            match = _ONELINE_RE.match(line)
            if match:
                layers.append(_parse_oneline(match))
                continue
            match = _LEGACY_RE.match(line)
            if match:
                layers.append(_parse_legacy(match))
    return layers


def layers_from_inspector(info: dict) -> list[EngineLayer]:
    """Engine layers from ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``."""
    layers = []
    for entry in info.get("Layers", []):
        if not isinstance(entry, dict):  # LAYER_NAMES_ONLY verbosity gives bare names
            continue

        def dtypes(key):
            return _canon_dtypes(str(t.get("Format/Datatype", t.get("Datatype", ""))) for t in entry.get(key, []))

        layers.append(EngineLayer(str(entry.get("Name", "")), str(entry.get("LayerType", "")), dtypes("Inputs"),
                                  dtypes("Outputs"), onnx_nodes_of(str(entry.get("Metadata", "")))))
    return layers


def summarize_layers(layers: list[EngineLayer], source: str) -> dict:
    """Layer counts by type, the data types used and the plugin layers, for sidecars and reports."""
    types: dict[str, int] = {}
    for layer in layers:
        types[layer.type] = types.get(layer.type, 0) + 1
    return {
        "count": len(layers),
        "types": types,
        "datatypes": sorted(set().union(*(layer.datatypes for layer in layers))),
        "plugin_layers": [{"name": l.name, "plugin": l.plugin, "datatypes": sorted(l.datatypes)}
                          for l in layers if l.plugin],
        "source": source,
    }


def attach_plugins(layers: list[EngineLayer], plugin_nodes: dict[str, str]) -> list[EngineLayer]:
    """Mark engine layers that came from plugin nodes (ONNX node / network layer name -> plugin name)."""
    out = []
    for layer in layers:
        plugin = next((plugin_nodes[n] for n in layer.onnx_nodes if n in plugin_nodes), None)
        out.append(EngineLayer(layer.name, layer.type, layer.input_dtypes, layer.output_dtypes,
                               layer.onnx_nodes, plugin))
    return out
