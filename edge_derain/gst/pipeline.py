"""Compose and run camera pipelines: source ▶ [queue] ▶ derain ▶ [queue] ▶ detect ▶ [queue] ▶ sink.

Named pipeline definitions live in ``pipelines/*.toml`` (TOML: read by the standard library's
``tomllib``, or ``tomli`` on Python 3.10; comments allowed; multi-line strings; one file per pipeline so a user can
add one by dropping a file in). Each names a ``source`` fragment with ``{placeholders}``, whether the
source is ``live``, its default ``location`` and its ``platform`` (``desktop``, ``jetson`` or ``auto``:
Jetson when ``nvvidconv`` exists). ``platforms.toml`` holds the per-platform conversion, encoder and
display fragments, ``sinks.toml`` the sinks. ``$EDGE_DERAIN_PIPELINES`` points at another folder.

Real time: on live sources the stage queues are ``leaky=downstream`` with a few buffers, so when
inference is slower than the camera the oldest waiting frame is dropped and latency stays bounded by
the queue sizes (the drops are counted, see :mod:`.stats`); the queue in front of the sink does not
leak, so frames that were already processed are never thrown away. Non-live sources (files) do not
leak: every frame is processed.

Running one is :mod:`.runner` (:class:`~.runner.PipelineRunner`, :func:`~.runner.run_pipeline`), whose names
still import from here.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ..resources import resource_dir
from . import plugin_environment, require_gst

try:
    import tomllib  # novm: Python 3.11+; 3.10 (JetPack 6) has the same parser as tomli
except ModuleNotFoundError:
    import tomli as tomllib

log = logging.getLogger(__name__)

PIPELINES_ENV = "EDGE_DERAIN_PIPELINES"
_SUPPORT_FILES = ("platforms", "sinks")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.:/+@-]+$")
_LAUNCH_WORD = re.compile(r'(?:[^\s"]|"(?:\\.|[^"\\])*")+')  # a word; spaces inside "..." belong to it
DEFAULT_UDP_PORT = 5400


# ---- definitions --------------------------------------------------------------------------------
def pipelines_dir() -> Path:
    """``$EDGE_DERAIN_PIPELINES``, else the repository's ``pipelines/`` (in the checkout or carried by a wheel)."""
    configured = os.environ.get(PIPELINES_ENV)
    return Path(configured) if configured else resource_dir("pipelines")


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"pipeline file {path} not found; set ${PIPELINES_ENV} to a folder with "
                                f"the pipeline definitions (the repository's pipelines/)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}); fix the file") from None


#: key -> (types, in words) of a pipeline file's values
_DEFINITION_TYPES = {"description": (str, "text"), "source": (str, "a gst-launch fragment (text)"),
                     "live": (bool, "true or false"), "platform": (str, "desktop, jetson or auto"),
                     "location": (str, "text"), "location_is_uri": (bool, "true or false"),
                     "params": (dict, "a [params] table")}


@dataclass(frozen=True)
class PipelineDefinition:
    name: str
    description: str
    source: str              # gst-launch fragment with {location} and {params}
    live: bool
    platform: str = "auto"   # desktop, jetson or auto
    location: str | None = None
    location_is_uri: bool = False
    params: dict = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "PipelineDefinition":
        """A name from :func:`list_definitions` or a path to a ``.toml`` file."""
        path = Path(name_or_path)
        if path.suffix != ".toml":
            path = pipelines_dir() / f"{name_or_path}.toml"
            if not path.is_file() or path.stem in _SUPPORT_FILES:
                known = ", ".join(d.name for d in list_definitions())
                raise ValueError(f"unknown pipeline {name_or_path!r}; choose one of {known} or pass a .toml file")
        data = _read_toml(path)
        missing = [key for key in ("description", "source", "live") if key not in data]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; see the files in {pipelines_dir()}")
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        wrong = [f"{key} must be {kind[1]}" for key, kind in _DEFINITION_TYPES.items()
                 if key in data and not isinstance(data[key], kind[0])]
        if wrong:
            raise ValueError(f"{path}: {'; '.join(wrong)}; see the files in {pipelines_dir()}")
        return cls(name=path.stem, **data)


def list_definitions() -> list[PipelineDefinition]:
    return [PipelineDefinition.load(p) for p in sorted(pipelines_dir().glob("*.toml")) if p.stem not in _SUPPORT_FILES]


def resolve_platform(platform: str) -> str:
    if platform == "auto":
        Gst = require_gst()
        return "jetson" if Gst.ElementFactory.find("nvvidconv") is not None else "desktop"
    platforms = _read_toml(pipelines_dir() / "platforms.toml")
    if platform not in platforms:
        raise ValueError(f"unknown platform {platform!r}; choose auto or one of {', '.join(platforms)}")
    return platform


def infer_pipeline(source: str | None) -> tuple[str, str | None]:
    """``--source`` -> (pipeline name, location): ``test``/``test:PATTERN``, ``/dev/videoN`` or ``N``,
    ``csi``/``csi:N``, ``rtsp://...``, a URI, or a video file path."""
    if source in (None, "", "test"):
        return "test", None
    if source.startswith("test:"):
        return "test", source[5:]
    if source.startswith("/dev/video") or source.isdigit():
        return "webcam", source if source.startswith("/dev/") else f"/dev/video{source}"
    if source == "csi" or source.startswith("csi:"):
        return "jetson-csi", source[4:] or None
    if source.startswith(("rtsp://", "rtsps://")):
        return "rtsp", source
    if "://" in source:
        return "file", source
    if Path(source).is_file():
        return "file", source
    raise FileNotFoundError(f"source {source!r} is not a file, a /dev/video device, csi:N, an rtsp:// URL "
                            f"or 'test'")


# ---- sinks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SinkSpec:
    kind: str                  # file, display, rtsp or fake
    location: str | None = None
    port: int = 8554
    mount: str = "/derain"

    @classmethod
    def parse(cls, text: str) -> "SinkSpec":
        """``file:OUT.mp4``, ``display``, ``rtsp`` / ``rtsp:PORT`` / ``rtsp:PORT/MOUNT`` or ``fake``."""
        kind, _, rest = text.partition(":")
        if kind == "file" and rest:
            return cls("file", rest)
        if kind in ("display", "fake") and not rest:
            return cls(kind)
        if kind == "rtsp":
            port, slash, mount = rest.partition("/")
            try:
                return cls("rtsp", port=int(port) if port else 8554, mount="/" + (mount if slash else "derain"))
            except ValueError:
                pass
        raise ValueError(f"sink {text!r} not understood; use file:OUT.mp4, display, rtsp:8554/derain or fake")

    def segment(self, index: int) -> "SinkSpec":
        """The sink for reconnect attempt ``index``: file parts ``out.1.mp4``, ``out.2.mp4``, ..."""
        if self.kind != "file" or index == 0:
            return self
        path = Path(self.location)
        return dataclasses.replace(self, location=str(path.with_name(f"{path.stem}.{index}{path.suffix}")))


# ---- composition --------------------------------------------------------------------------------
def gst_value(value) -> str:
    """A property value in gst-launch syntax (quoted unless plain)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _PLAIN_VALUE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_words(description: str) -> str:
    """A gst-launch description as shell words that gst-launch-1.0 reassembles into the same description.

    gst-launch-1.0 escapes the spaces of each argument it gets, so the description cannot be one quoted
    argument: it is split at the spaces outside double quotes, and each word is quoted for the shell
    (``!`` stays bare, as in GStreamer's own examples).
    """
    words = _LAUNCH_WORD.findall(description)
    return " ".join(word if word == "!" else shlex.quote(word) for word in words)


def element(factory: str, name: str | None = None, **props) -> str:
    """``factory name=NAME key=value ...``; property names use ``_`` for ``-``; None values are left out."""
    parts = [factory] + ([f"name={name}"] if name else [])
    parts += [f"{key.replace('_', '-')}={gst_value(value)}" for key, value in props.items() if value is not None]
    return " ".join(parts)


def queue(name: str, size: int, leaky: bool) -> str:
    """A stage queue bounded by buffer count only (bytes and time limits off)."""
    return element("queue", name, leaky="downstream" if leaky else None, max_size_buffers=size,
                   max_size_bytes=0, max_size_time=0)


def _fill(template: str, values: dict, where: str) -> str:
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise ValueError(f"{where} uses {{{exc.args[0]}}}, which is not set; known: "
                         f"{', '.join(sorted(values))}") from None


def platform_fragments(platform: str, bitrate_kbps: int = 4000) -> dict[str, str]:
    """The ``to_rgb``, ``rgb_format``, ``h264`` and ``display`` fragments of a platform."""
    platform = resolve_platform(platform)
    fragments = _read_toml(pipelines_dir() / "platforms.toml")[platform]
    values = {"bitrate_kbps": bitrate_kbps, "bitrate_bps": 1000 * bitrate_kbps}
    return {key: _fill(value, values, f"platforms.toml [{platform}] {key}") for key, value in fragments.items()}


def partial_path(path: str | os.PathLike) -> Path:
    """Where a recording grows until it is finalised: hidden ``.NAME.partial.SUFFIX`` beside ``path``.

    The final name only ever holds a finished file (:func:`finish_recording` renames it), so a crash,
    a failed start or a pipeline that never reached EOS leaves no truncated or empty file behind it."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def finish_recording(sink: SinkSpec, frames: int, finalised: bool) -> Path | None:
    """Give a file sink's recording its name once EOS went through the muxer (``finalised``); remove it
    when no frame reached it; keep an unfinished one (the watchdog gave up at EOS) under its partial name
    and return that path, so the user decides about a file players may not open."""
    if sink.kind != "file":
        return None
    partial = partial_path(sink.location)
    if not partial.exists():
        return None
    if frames and finalised:
        os.replace(partial, sink.location)
        return None
    if frames:
        return partial
    partial.unlink()
    return None


def check_display() -> None:
    """One-line ValueError when no display server can be reached (SSH session, headless Jetson, service):
    video sinks crash or hang without one, so ``--sink display`` is refused before anything starts."""
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland:
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        if _connects(socket.AF_UNIX, wayland if wayland.startswith("/") else os.path.join(runtime, wayland)):
            return
    display = os.environ.get("DISPLAY", "")
    match = re.fullmatch(r"(?:unix)?(?P<host>[^:]*):(?P<number>\d+)(?:\.\d+)?", display)
    if match and not match["host"]:
        number = match["number"]
        if _connects(socket.AF_UNIX, f"\0/tmp/.X11-unix/X{number}") or \
                _connects(socket.AF_UNIX, f"/tmp/.X11-unix/X{number}"):
            return
    elif match and _connects(socket.AF_INET, (match["host"], 6000 + int(match["number"]))):
        return
    where = f"the display {display!r} does not answer" if display or wayland else "no display is set ($DISPLAY)"
    raise ValueError(f"--sink display needs a screen but {where}; record or stream instead: "
                     f"--sink file:out.mp4, --sink rtsp:8554/derain or --sink fake")


def _connects(family: int, address) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(address)
        return True
    except (OSError, ValueError):
        return False


def sink_fragment(sink: SinkSpec, platform: str, udp_port: int = DEFAULT_UDP_PORT,
                  bitrate_kbps: int = 4000, partial: bool = True) -> tuple[str, str | None]:
    """(pipeline fragment, RTSP server launch line or None) for ``sink``. A file sink writes to
    :func:`partial_path` (``partial=False``: straight to its name, for gst-launch-1.0 -e)."""
    sinks = _read_toml(pipelines_dir() / "sinks.toml")
    spec = sinks[sink.kind]
    values = {**platform_fragments(platform, bitrate_kbps), "udp_port": udp_port}
    if sink.kind == "file":
        suffix = Path(sink.location).suffix.lower()
        muxers = spec.get("muxers", {})
        if suffix not in muxers:
            raise ValueError(f"cannot record {sink.location}: use a file ending in {', '.join(muxers)}")
        if not Path(sink.location).resolve().parent.is_dir():
            raise FileNotFoundError(f"cannot record {sink.location}: folder {Path(sink.location).parent} does not "
                                    f"exist; create it first")
        location = str(partial_path(sink.location)) if partial else sink.location
        values.update(location=gst_value(location), muxer=muxers[suffix])
    server = _fill(spec["server"], values, f"sinks.toml [{sink.kind}] server") if "server" in spec else None
    return _fill(spec["template"], values, f"sinks.toml [{sink.kind}] template"), server


@dataclass
class PipelineOptions:
    """Everything ``edge-derain run`` composes a pipeline from."""

    source: str | None = None          # see infer_pipeline; None: the definition's default location
    pipeline: str | None = None        # a definition name or .toml; None: inferred from source
    platform: str | None = None        # None: the definition's
    width: int | None = None           # scale frames before the stages (None: the source's size)
    height: int | None = None
    derain: dict | None = field(default_factory=dict)  # derain element properties; None: no derain stage
    detector: str = "none"             # hog, yolo:MODEL.onnx or none (no detect stage)
    overlay: bool = True
    sink: SinkSpec | str = "display"
    queue_size: int = 2
    leaky: bool | None = None          # None: leaky on live sources
    bitrate_kbps: int = 4000
    params: dict = field(default_factory=dict)  # overrides of the definition's [params]


@dataclass(frozen=True)
class ComposedPipeline:
    """A gst-launch description plus what the runner and the stats need to know about it."""

    description: str
    live: bool
    sink: SinkSpec
    ingress: str                       # element whose output enters the processing stages
    egress: str                        # last processing stage
    queues: tuple[str, ...]
    stages: tuple[str, ...]
    rtsp_launch: str | None = None     # launch line of the RTSP server's media factory
    source_location: str | None = None
    leaky: bool = False                # the stage queues drop frames when a stage is busy

    def gst_launch_command(self) -> str:
        """A shell command that runs this pipeline with gst-launch-1.0 (EOS on Ctrl-C)."""
        env = plugin_environment({})
        assignments = " ".join(f"{key}={shlex.quote(env[key])}" for key in ("GST_PLUGIN_PATH", "PYTHONPATH"))
        command = f"{assignments} gst-launch-1.0 -e {shell_words(self.description)}"
        if self.rtsp_launch:
            command = (f"# gst-launch sends RTP to a local UDP port only; `edge-derain run` also serves it at "
                       f"rtsp://HOST:{self.sink.port}{self.sink.mount}\n{command}")
        return command


def compose(options: PipelineOptions, segment: int = 0, udp_port: int = DEFAULT_UDP_PORT,
            partial: bool = True) -> ComposedPipeline:
    """The gst-launch description of ``options`` (``segment``: reconnect attempt, for file parts; ``partial``:
    a recording grows under :func:`partial_path` until the runner finishes it; False for gst-launch-1.0)."""
    if options.pipeline:
        definition = PipelineDefinition.load(options.pipeline)
        location = options.source
    else:
        name, location = infer_pipeline(options.source)
        definition = PipelineDefinition.load(name)
    if options.queue_size < 1:
        raise ValueError(f"queue size must be >= 1, got {options.queue_size}")
    location = location or definition.location
    if definition.location_is_uri and location and "://" not in location:
        location = Path(location).resolve().as_uri()
    platform = options.platform or definition.platform
    fragments = platform_fragments(platform, options.bitrate_kbps)
    sink = SinkSpec.parse(options.sink) if isinstance(options.sink, str) else options.sink
    sink = sink.segment(segment)
    values = {**definition.params, **options.params, "location": gst_value(location) if location else ""}
    if options.width:
        values["width"] = options.width
    if options.height:
        values["height"] = options.height
    source = _fill(definition.source, values, f"pipeline {definition.name!r} source")
    leaky = definition.live if options.leaky is None else options.leaky

    size = "".join(f",{key}={value}" for key, value in (("width", options.width), ("height", options.height)) if value)
    parts = [source, fragments["to_rgb"],
             element("capsfilter", "ingress", caps=f"video/x-raw,format={fragments['rgb_format']}{size}")]
    queues, stages = [], []
    if options.derain is not None:
        parts += [queue("q_derain", options.queue_size, leaky), element("derain", "derain", **options.derain)]
        queues.append("q_derain")
        stages.append("derain")
    if options.detector and options.detector != "none":
        parts += [queue("q_detect", options.queue_size, leaky),
                  element("detect", "detect", detector=options.detector, overlay=options.overlay)]
        queues.append("q_detect")
        stages.append("detect")
    sink_part, server = sink_fragment(sink, platform, udp_port, options.bitrate_kbps, partial)
    # The sink queue never leaks: a frame that made it through the stages is worth recording.
    parts += [queue("q_sink", max(4, options.queue_size), False), sink_part]
    return ComposedPipeline(" ! ".join(parts), definition.live, sink, "ingress", stages[-1] if stages else "ingress",
                            tuple(queues), tuple(stages), server, location, bool(leaky and queues))


def describe_error(message, source_name: str | None = None) -> str:
    """One line for a bus ERROR: the element, GStreamer's message and its last debug line; errors of the
    source part (``source_name`` not None: its location, possibly empty) say so."""
    error, debug = message.parse_error()
    log.debug("%s: %s (%s)", message.src.get_path_string(), error.message, debug)
    text = f"{message.src.get_name()}: {' '.join(error.message.split()).rstrip('.')}"
    detail = (debug or "").strip().splitlines()[-1].strip() if debug else ""
    if detail and detail.split(": ", 1)[-1] not in text and len(detail) < 160:
        text += f" ({detail})"
    if source_name is not None:
        text = f"source{' ' + source_name if source_name else ''} failed: {text}"
    return text


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Moved to :mod:`.runner` (which imports this module); resolved on first use for the old import path.
_RUNNER_NAMES = ("PipelineRunner", "RunResult", "run_pipeline")


def __getattr__(name: str):
    if name in _RUNNER_NAMES:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
