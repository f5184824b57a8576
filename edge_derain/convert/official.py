"""Import checkpoints of the papers' public code (``edge-derain import --from official``).

People who trained or downloaded weights with the papers' own repositories hold PyTorch pickles whose
state-dict names and tensor layouts follow that code. This module maps them onto our modules, one
readable mapping per architecture, and writes our checkpoint format (safetensors + JSON sidecar).

=============  =====================================================================================
our model      official layout
=============  =====================================================================================
efderain       ``tsingqguo/efficientderain`` ``network.py`` ``KPN`` as trained and tested by its scripts
               (v3 and v4 checkpoints: ``kernel_size=[3]``, no channel/spatial attention, no core bias).
               Always width 1.0 (64-128-256-512-512); our narrower widths have no official weights.
elf, elf_lw    ``kuijiang94/Magic-ELF`` ``ALformer3.py`` (ELF, the paper's 1.53 M model, deleted from
               the repository's HEAD but in its history) and ``ALformer_lw.py`` (ELF-LW). ``ALformer.py``
               at HEAD and the older ``ALformer1g.py``/``ALformer2.py`` have the same tensor names but a
               different background branch (a Restormer block before the RTB/EDB and the up-sampled rain
               residual added instead of the background); our ELF cannot compute that network, so such
               checkpoints (recognised by their one-head MAM) are refused, as are ``ALformer5.py``
               checkpoints (ALformer3's names and shapes, but GELU gating beside never-trained PReLUs).
danet,         ``kuijiang94/DANet`` ``DANet.py``. Its defaults (64 channels, 10 CABs) are ``danet_plus``.
danet_plus     The paper's 48-channel baseline has no public code: a ``DANet.py`` checkpoint trained at
               48 channels imports with the code's one-block EDB stages (``edb_blocks=1``), not our
               ``danet`` defaults (``edb_blocks=2``, the code's unused ``Encoder_dn``/``Decoder_dn``,
               whose names are mapped too). The sidecar records the configuration the shapes give.
=============  =====================================================================================

The configuration (EfficientDeRain ``width``; ELF ``channels``/``rtb_blocks``/``rtb_heads``/``ffn_act``;
DANet ``channels``/``cabs``/``edb_blocks``) is read from the checkpoint's shapes; configuration given
on the command line must agree with it. Layout changes beyond renaming: the ×2 sub-pixel conv of
ELF/DANet (``deep_conv``, followed by the code's ``shuffle_up``) is stored with its output channels
in PixelShuffle order (:meth:`~edge_derain.models.blocks.ShuffleUpConv.from_official_weight`). Names
under which the official code saves one shared PReLU several times map onto our (equally shared)
PReLU; their values must agree.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..checkpoint import save_checkpoint
from ..models import create_model
from ..models.blocks import ShuffleUpConv
from ..utils import file_sha256

Transform = Callable[[torch.Tensor], torch.Tensor]
Pairs = Iterator[tuple[str, str, "Transform | None"]]  # (official name, our name, layout transform)

FAMILY = {"efderain": "efderain", "elf": "elf", "elf_lw": "elf", "danet": "danet", "danet_plus": "danet"}
SOURCES = {  # the official network each of our models imports
    "efderain": "tsingqguo/efficientderain network.py KPN",
    "elf": "kuijiang94/Magic-ELF ALformer3.py",
    "elf_lw": "kuijiang94/Magic-ELF ALformer_lw.py",
    "danet": "kuijiang94/DANet DANet.py",
    "danet_plus": "kuijiang94/DANet DANet.py",
}
# Wrappers the papers' and common training scripts put around a state dict, outermost first.
WRAPPER_KEYS = ("state_dict", "model", "params")
EXAMPLES = 3  # unmatched names quoted in an error
PRELU_INIT = 0.25  # nn.PReLU()'s initial slope


# ---------------------------------------------------------------------------------------------
# Reading a checkpoint
# ---------------------------------------------------------------------------------------------

def unwrap_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict inside ``obj``: descend through ``state_dict``/``model``/``params`` wrappers and
    strip a DataParallel ``module.`` prefix."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:6]))
            raise ValueError(f"{source} holds no tensors and none of the wrappers {'/'.join(WRAPPER_KEYS)} "
                             f"(top-level keys: {keys or 'none'}); pass the .pth the training script saved")
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state dict; re-save it with "
                         "torch.save(model.state_dict(), path)")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official ``.pth`` with ``weights_only=True`` (no pickled code runs) and unwrap it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass the .pth file of the paper's code")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if pickled:
            raise ValueError(f"{path} pickles a {pickled.group(1)} object, not just tensors, so it was not loaded "
                             "(that would run code from the file); re-save it with torch.save(model.state_dict(), "
                             "path) in the code that made it") from None
        raise ValueError(f"cannot read {path}: it is not a torch.save file of tensors; pass the .pth the "
                         "paper's code saved") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint ({str(exc).strip().splitlines()[0]}); "
                         "re-download it") from None
    return unwrap_state_dict(obj, str(path))


# ---------------------------------------------------------------------------------------------
# Mapping building blocks (official prefix -> our prefix)
# ---------------------------------------------------------------------------------------------

def _conv(official: str, ours: str, bias: bool = False, transform: Transform | None = None) -> Pairs:
    yield f"{official}.weight", f"{ours}.weight", transform
    if bias:
        yield f"{official}.bias", f"{ours}.bias", None


def _calayer(official: str, ours: str) -> Pairs:
    """``CALayer.conv_du = [conv, ReLU, conv, Sigmoid]``."""
    yield from _conv(f"{official}.conv_du.0", f"{ours}.squeeze")
    yield from _conv(f"{official}.conv_du.2", f"{ours}.excite")


def _dsc(official: str, ours: str) -> Pairs:
    """``depthwise_separable_conv``."""
    yield from _conv(f"{official}.depth_conv", f"{ours}.depthwise", bias=True)
    yield from _conv(f"{official}.point_conv", f"{ours}.pointwise", bias=True)


def _s2fb2(official: str, ours: str) -> Pairs:
    yield from _dsc(f"{official}.DSC", f"{ours}.fuse")
    yield from _calayer(f"{official}.CA_fea", f"{ours}.ca")


def _s2fbp(official: str, ours: str) -> Pairs:
    """``S2FB_p``: DSC1 fuses (x3, x4), DSC2 adds x2, DSC3 adds x1."""
    yield from _dsc(f"{official}.DSC1", f"{ours}.fuse34")
    yield from _dsc(f"{official}.DSC2", f"{ours}.fuse2")
    yield from _dsc(f"{official}.DSC3", f"{ours}.fuse1")
    yield from _calayer(f"{official}.CA_fea", f"{ours}.ca")


def _cab(official: str, ours: str, conv=_conv, fused: bool = False) -> Pairs:
    """``CAB`` (``body = [conv, act, conv]``, ``CA``); ``ECAB``/``CAB_dsc`` add the ``S2FB2`` residual."""
    yield from conv(f"{official}.body.0", f"{ours}.conv1")
    yield f"{official}.body.1.weight", f"{ours}.act.weight", None  # the sub-network's shared PReLU
    yield from conv(f"{official}.body.2", f"{ours}.conv2")
    yield from _calayer(f"{official}.CA", f"{ours}.ca")
    if fused:
        yield from _s2fb2(f"{official}.S2FB2", f"{ours}.fuse")


def _edb(encoder: str, decoder: str, ours: str, blocks: int) -> Pairs:
    """``Encoder``/``Decoder`` (one block per stage) or ``Encoder_dn``/``Decoder_dn`` (two) -> :class:`EDB`."""
    for level in (1, 2, 3):
        enc, dec = f"{encoder}.encoder_level{level}", f"{decoder}.decoder_level{level}"
        our_enc, our_dec = f"{ours}.encoders.{level - 1}", f"{ours}.decoders.{level - 1}"
        yield from _conv(f"{encoder}.down_stage{level}.down.1", f"{ours}.down{level}.conv")
        for b in range(blocks):
            yield from _cab(f"{enc}.CAB{b + 1}", f"{our_enc}.blocks.{b}", conv=_dsc, fused=True)  # CAB_dsc
        yield from _s2fb2(f"{enc}.S2FB2", f"{our_enc}.fuse")
        yield from _s2fbp(f"{dec}.S2FB0", f"{our_dec}.gather")
        for b in range(blocks):
            yield from _cab(f"{dec}.CAB{b + 1}", f"{our_dec}.blocks.{b}", fused=blocks == 2)  # CAB / ECAB
        yield from _s2fb2(f"{dec}.S2FB2", f"{our_dec}.fuse")
        yield from _conv(f"{decoder}.up_stage{level}.up.1", f"{ours}.up_dec{level}.conv")
    skips = {"up_32": "up_3to2", "up_31": "up_3to1", "up_21": "up_2to1",
             "down_13": "down_1to3", "down_23": "down_2to3", "down_12": "down_1to2"}
    for official, our in skips.items():
        yield from _conv(f"{decoder}.{official}.{official.split('_')[0]}.1", f"{ours}.{our}.conv")


def _layernorm(official: str, ours: str) -> Pairs:
    """Restormer ``LayerNorm`` wraps its WithBias norm in ``body``."""
    yield f"{official}.body.weight", f"{ours}.weight", None
    yield f"{official}.body.bias", f"{ours}.bias", None


def _gdfn(official: str, ours: str, prelu: bool) -> Pairs:
    if prelu:  # ALformer3's FeedForward.act1; ALformer_lw calls a gelu function instead
        yield f"{official}.act1.weight", f"{ours}.act.weight", None
    for conv in ("project_in", "dwconv", "project_out"):
        yield from _conv(f"{official}.{conv}", f"{ours}.{conv}")


def _restormer(official: str, ours: str, prelu: bool) -> Pairs:
    """``RestormerBlock`` (norm1, MDTA, norm2, FeedForward) -> :class:`TransformerBlock`."""
    yield from _layernorm(f"{official}.norm1", f"{ours}.norm1")
    yield f"{official}.attn.temperature", f"{ours}.attn.temperature", None
    for conv in ("qkv", "qkv_dwconv", "project_out"):
        yield from _conv(f"{official}.attn.{conv}", f"{ours}.attn.{conv}")
    yield from _layernorm(f"{official}.norm2", f"{ours}.norm2")
    yield from _gdfn(f"{official}.ffn", f"{ours}.ffn", prelu)


def _shallow(official: str, ours: str) -> Pairs:
    """``DSNet`` shallow features: conv3x3 + CAB on the half image and on the quadrant stack."""
    for feat, our in (("shallow_feat1", "shallow_half"), ("shallow_feat2", "shallow_quadrants")):
        yield from _conv(f"{official}.{feat}.0", f"{ours}.{our}.0")
        yield from _cab(f"{official}.{feat}.1", f"{ours}.{our}.1")


def _reconstruction(official: str, ours: str) -> Pairs:
    """``SSNet`` ×2 reconstruction: ``tail(shuffle_up(deep_conv(x)))``."""
    yield from _conv(f"{official}.deep_conv", f"{ours}.upsample.conv", transform=ShuffleUpConv.from_official_weight)
    yield from _conv(f"{official}.tail", f"{ours}.tail")


# ---------------------------------------------------------------------------------------------
# One mapping per model
# ---------------------------------------------------------------------------------------------

def efderain_mapping(config: dict) -> Pairs:
    """``KPN``: ``conv{1..8}.conv1 = [conv, ReLU] x 3`` (bias), ``outc`` (1x1) and ``conv_final`` (3x3)."""
    for block in range(1, 9):
        for index in (0, 2, 4):
            yield from _conv(f"conv{block}.conv1.{index}", f"conv{block}.{index}", bias=True)
    yield from _conv("outc", "kernel_head", bias=True)
    yield from _conv("conv_final", "fusion", bias=True)


def _stem_embeddings(ours: str) -> Pairs:
    """``STEM``'s stride-2 conv of the rainy image and convs of the rain and background estimates."""
    for official, our in (("conv_stem0", "embed_image"), ("conv_stem2", "embed_rain"),
                          ("conv_stem3", "embed_background")):
        yield from _conv(f"ssnet.stem.{official}", f"{ours}.{our}")


def _elf_branches(official: str, edb: str, ours: str, config: dict) -> Pairs:
    """ELF's ``orsnet`` (RTB: Restormer blocks + conv) ‖ EDB, fused by ``S2FB_fuse``."""
    prelu = config["ffn_act"] == "prelu"
    for i in range(config["rtb_blocks"]):
        yield from _restormer(f"{official}.orsnet.orb.modules_body.{i}", f"{ours}.rtb.body.{i}", prelu)
    yield from _conv(f"{official}.orsnet.orb.conv", f"{ours}.rtb.conv")
    yield from _edb(f"{official}.{edb}_encoder", f"{official}.{edb}_decoder", f"{ours}.edb", blocks=1)
    yield from _s2fb2(f"{official}.S2FB_fuse", f"{ours}.merge")


def elf_mapping(config: dict) -> Pairs:
    """``ALformer`` = ``dsnet`` (IDN) + ``ssnet`` (``stem`` = MAM, the rest = BRN)."""
    prelu = config["ffn_act"] == "prelu"
    # IDN
    yield from _shallow("dsnet", "idn")
    yield from _restormer("dsnet.former.0", "idn.shallow_quadrants.2", prelu)
    yield from _conv("dsnet.fuse_conv", "idn.fuse")
    yield from _elf_branches("dsnet", "dsnnet", "idn", config)
    yield from _conv("dsnet.tail", "idn.tail")
    # MAM. The official block is called as former(key=rain feature, query=image, value=image) and its
    # Attention takes (q, k, v) positionally, so norm_key/q act on the rain feature (our queries).
    yield from _stem_embeddings("mam")
    for official, our in (("norm_key", "norm_rain"), ("norm_query", "norm_key"), ("norm_value", "norm_value"),
                          ("norm2", "norm_ffn")):
        yield from _layernorm(f"ssnet.stem.former.{official}", f"mam.{our}")
    for official, our in (("q", "query"), ("k", "key"), ("v", "value"), ("project_out", "project_out")):
        yield from _conv(f"ssnet.stem.former.attn.{official}", f"mam.{our}")
    yield "ssnet.stem.former.attn.temperature", "mam.temperature", None
    yield from _gdfn("ssnet.stem.former.ffn", "mam.ffn", prelu)
    yield from _s2fb2("ssnet.stem.S2FB", "mam.fuse")
    # BRN
    yield from _elf_branches("ssnet", "ssnnet", "brn", config)
    yield from _restormer("ssnet.former.0", "brn.refine", prelu)
    yield from _reconstruction("ssnet", "brn")


def danet_mapping(config: dict) -> Pairs:
    """``DANet`` = ``dsnet`` (DSN) + ``ssnet`` (``stem`` = ALM, the rest = RSN); ORB ``body`` = CABs + conv."""
    cabs, blocks = config["cabs"], config["edb_blocks"]
    yield from _shallow("dsnet", "dsn")
    yield from _conv("dsnet.fuse_conv", "dsn.fuse")
    for official, our, edb in (("dsnet", "dsn", "dsnnet"), ("ssnet", "rsn", "ssnnet")):
        for i in range(cabs):
            yield from _cab(f"{official}.orsnet.orb.body.{i}", f"{our}.orb.body.{i}")
        yield from _conv(f"{official}.orsnet.orb.body.{cabs}", f"{our}.orb.conv")
        yield from _edb(f"{official}.{edb}_encoder", f"{official}.{edb}_decoder", f"{our}.edb", blocks)
        yield from _s2fb2(f"{official}.S2FB_fuse", f"{our}.merge")
    yield from _conv("dsnet.tail", "dsn.tail")
    yield from _stem_embeddings("alm")
    yield from _reconstruction("ssnet", "rsn")


MAPPINGS: dict[str, Callable[[dict], Pairs]] = {
    "efderain": efderain_mapping, "elf": elf_mapping, "danet": danet_mapping}


# ---------------------------------------------------------------------------------------------
# Configuration from shapes
# ---------------------------------------------------------------------------------------------

def _count(state: dict, pattern: str) -> int:
    """Number of distinct indices ``(\\d+)`` in names matching ``pattern``."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def _dim(state: dict, key: str, axis: int = 0) -> int | None:
    tensor = state.get(key)
    return int(tensor.shape[axis]) if tensor is not None and tensor.dim() > axis else None


def infer_config(family: str, state: dict[str, torch.Tensor]) -> dict:
    """The model configuration the checkpoint's shapes give (keys that are absent are left out; the
    name check then reports them)."""
    if family == "efderain":
        c1 = _dim(state, "conv1.conv1.0.weight")
        return {} if c1 is None else {"width": c1 / 64}
    config = {}
    channels = _dim(state, "dsnet.shallow_feat1.0.weight")
    if channels is not None:
        config["channels"] = channels
    if family == "elf":
        config["rtb_blocks"] = _count(state, r"dsnet\.orsnet\.orb\.modules_body\.(\d+)\.")
        heads = _dim(state, "dsnet.orsnet.orb.modules_body.0.attn.temperature")
        if heads is not None:
            config["rtb_heads"] = heads
        config["ffn_act"] = "prelu" if "dsnet.former.0.ffn.act1.weight" in state else "gelu"
        return config
    config["cabs"] = _count(state, r"dsnet\.orsnet\.orb\.body\.(\d+)\.body\.")
    config["edb_blocks"] = _count(state, r"dsnet\.dsnnet_encoder\.encoder_level1\.CAB(\d+)\.")
    return config


def _check_representable(family: str, state: dict[str, torch.Tensor]) -> None:
    """Refuse official variants whose names fit but whose network ours cannot compute."""
    if family == "elf":
        from ..models.elf import MAM_HEADS

        heads = _dim(state, "ssnet.stem.former.attn.temperature")
        if heads is not None and heads != MAM_HEADS:
            raise ValueError(
                f"this checkpoint's MAM has {heads} attention head(s), i.e. Magic-ELF's ALformer.py (HEAD), "
                f"ALformer1g.py or ALformer2.py, whose background branch runs a Restormer block before the "
                f"RTB/EDB and adds the up-sampled rain residual; our ELF implements ALformer3.py/ALformer_lw.py "
                f"({MAM_HEADS}-head MAM, the paper's network) and cannot represent it exactly")


def _check_trained_gating(state: dict[str, torch.Tensor]) -> None:
    """ALformer5.py has ALformer3.py's names and shapes but gates its FeedForwards with GELU, leaving
    their PReLUs untrained; all slopes still at the initial value give it away."""
    slopes = [v for k, v in state.items() if k.endswith(".ffn.act1.weight")]
    if slopes and all(torch.all(v == PRELU_INIT) for v in slopes):
        raise ValueError(
            f"every FeedForward PReLU slope of this checkpoint is still at its initial {PRELU_INIT}: that is "
            f"Magic-ELF's ALformer5.py, which keeps those PReLUs but gates with GELU (the slopes never train); "
            f"our ELF cannot tell it from ALformer3.py by names and shapes, so it is refused (an untrained "
            f"ALformer3 model has nothing to import either)")


def _family_sources(family: str) -> str:
    return " / ".join(sorted({SOURCES[m] for m, f in FAMILY.items() if f == family}))


def _guess_family(state: dict[str, torch.Tensor]) -> str | None:
    if "conv1.conv1.0.weight" in state or "conv_final.weight" in state:
        return "efderain"
    if any(k.startswith("dsnet.") for k in state):
        return "elf" if any(".attn." in k for k in state) else "danet"
    return None


def _resolve_config(name: str, inferred: dict, given: dict) -> dict:
    """``inferred`` with the user's ``given`` settings, which must agree on every inferred key."""
    for key, value in given.items():
        if key in inferred and not _same(value, inferred[key]):
            flag = f"--width {value}" if key == "width" else f"--model-arg {key}={value}"
            raise ValueError(f"{flag} disagrees with the checkpoint, whose shapes give {key}={inferred[key]} "
                             f"for {name}; drop the flag (the configuration is read from the checkpoint)")
    return {**inferred, **given}


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------

@dataclass
class Conversion:
    """The result of matching an official state dict against a model's mapping."""

    model: nn.Module
    state: dict[str, torch.Tensor]  # our names -> tensors in our layout
    unmatched: list[str] = field(default_factory=list)  # official names the mapping does not know
    missing: list[str] = field(default_factory=list)  # official names the mapping needs, absent
    resized: list[str] = field(default_factory=list)  # "name: official shape vs ours"

    @property
    def ok(self) -> bool:
        return not (self.unmatched or self.missing or self.resized)

    def problem(self) -> str:
        def part(label: str, items: list[str]) -> str:
            return f"{len(items)} {label} (e.g. {', '.join(items[:EXAMPLES])})" if items else f"0 {label}"

        return "; ".join([part("checkpoint keys unmatched", self.unmatched),
                          part("expected keys missing", self.missing),
                          part("shapes differ", self.resized)])


def match_official(name: str, official: dict[str, torch.Tensor], given: dict | None = None,
                   source: str = "checkpoint") -> Conversion:
    """Build ``name`` with the configuration of ``official`` and map its tensors by name (no loading)."""
    family = FAMILY.get(name)
    if family is None:
        raise ValueError(f"no official layout is known for model {name!r}; importable: {', '.join(FAMILY)}")
    guess = _guess_family(official)
    if guess != family:
        if guess:
            models = " or ".join(m for m, f in FAMILY.items() if f == guess)
            fix = f"its keys look like {_family_sources(guess)}: pass --model {models}"
        else:
            seen = ", ".join(list(official)[:EXAMPLES]) or "no tensors"
            fix = f"its keys ({seen}) match none of {'; '.join(sorted(set(SOURCES.values())))}"
        raise ValueError(f"{source} is not an official {name} checkpoint ({SOURCES[name]}); {fix}")
    _check_representable(family, official)
    config = _resolve_config(name, infer_config(family, official), dict(given or {}))
    try:
        model = create_model(name, **config)
    except ValueError as exc:
        raise ValueError(f"{source}: its shapes give {name} the configuration {config}, which the model "
                         f"refuses: {exc}") from None
    ours = model.state_dict()
    pairs = list(MAPPINGS[family](model.model_config))
    mapped = {official_key for official_key, _, _ in pairs}
    targets = [our for _, our, _ in pairs]
    if sorted(targets) != sorted(ours):  # the mapping itself must cover our module 1:1
        stray = sorted(set(targets) ^ set(ours))
        raise RuntimeError(f"internal error: the {family} mapping does not cover model {name} 1:1 "
                           f"(e.g. {', '.join(stray[:EXAMPLES])}); please report it")
    conversion = Conversion(model, {}, unmatched=[k for k in official if k not in mapped])
    for official_key, our_key, transform in pairs:
        tensor = official.get(official_key)
        if tensor is None:
            conversion.missing.append(official_key)
            continue
        if transform is not None and tensor.shape == ours[our_key].shape:
            tensor = transform(tensor)
        if tensor.shape != ours[our_key].shape:
            conversion.resized.append(f"{official_key}: {tuple(tensor.shape)} vs {tuple(ours[our_key].shape)}")
            continue
        conversion.state[our_key] = tensor.to(ours[our_key].dtype)
    return conversion


def _check_shared(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Names our model shares (one PReLU per sub-network) must carry one value in the checkpoint."""
    groups: dict[int, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    for keys in groups.values():
        first = state[keys[0]]
        differing = [k for k in keys[1:] if not torch.equal(state[k], first)]
        if differing:
            raise ValueError(f"the checkpoint holds different values for {keys[0]} and {differing[0]}, which the "
                             f"official code shares (one PReLU per sub-network); it was not made by that code")


def convert_official(name: str, official: dict[str, torch.Tensor], given: dict | None = None,
                     source: str = "checkpoint") -> nn.Module:
    """Our ``name`` model carrying the weights of an official state dict; one-line ``ValueError`` otherwise."""
    conversion = match_official(name, official, given, source)
    if not conversion.ok:
        raise ValueError(f"{source} does not match the official {name} layout {conversion.model.model_config} of "
                         f"{SOURCES[name]}: {conversion.problem()}")
    _check_trained_gating(official)
    _check_shared(conversion.model, conversion.state)
    conversion.model.load_state_dict(conversion.state, strict=True)
    return conversion.model.eval()


def import_official(name: str, checkpoint: str | Path, out: str | Path, given: dict | None = None) -> Path:
    """Convert an official ``.pth`` and write ``out`` (.safetensors + JSON sidecar, atomically)."""
    checkpoint = Path(checkpoint)
    model = convert_official(name, load_official_checkpoint(checkpoint), given, source=str(checkpoint))
    return save_checkpoint(out, model, imported_from={"layout": SOURCES[name], "file": checkpoint.name,
                                                      "sha256": file_sha256(checkpoint)},
                           lineage=[])
