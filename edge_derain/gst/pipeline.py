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

:class:`PipelineRunner` runs one: bus errors become one-line messages, SIGINT/SIGTERM send EOS so a
recording is finalised (a second signal stops at once), a watchdog ends a pipeline that does not reach
EOS within ``eos_timeout`` seconds, a live source that delivers no frame for ``stall_timeout`` seconds
counts as failed (a non-live pipeline in which no frame moves for that long stops: a deadlock never
hangs the caller; the watchdog waits while a stage loads its model), and a failed live source is
optionally reconnected with exponential back-off (each attempt records to a new file part).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..resources import resource_dir
from . import plugin_environment, register_elements, require_gst
from .stats import STATS_MESSAGE, PipelineStats

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


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- running ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    status: str                 # eos, interrupted, frames, duration, error, timeout
    error: str | None = None    # the one-line error, if any
    restarts: int = 0
    frames_in: int = 0          # frames that entered the processing stages
    frames_out: int = 0         # frames that left them (what --frames counts)
    stats: dict | None = None


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


class PipelineRunner:
    """Run a composed pipeline until EOS, a signal, an error, a frame/time limit or the watchdog.

    ``build(segment, udp_port)`` returns the :class:`ComposedPipeline` for each (re)connection (segment 0,
    1, ...); ``setup(pipeline)`` runs after parsing and before PLAYING (inject backends, feed appsrc, add
    probes); ``on_message(message)`` sees every bus message after the runner's own handling. Reconnection
    (``reconnect``) applies to failures of a live source: up to ``max_retries`` consecutive attempts, the
    delay doubling from ``backoff[0]`` to at most ``backoff[1]`` seconds; :data:`RETRY_RESET_S` seconds of
    frames reset the count.
    """

    RETRY_RESET_S = 30.0

    def __init__(self, build: Callable[[int, int], ComposedPipeline] | ComposedPipeline, *,
                 stats: PipelineStats | None = None, max_frames: int | None = None, duration: float | None = None,
                 eos_timeout: float = 10.0, stall_timeout: float | None = None, reconnect: bool = False,
                 max_retries: int = 5, backoff: tuple[float, float] = (1.0, 30.0),
                 setup: Callable | None = None, on_message: Callable | None = None,
                 on_stats: Callable[[dict], None] | None = None, handle_signals: bool = True):
        self.build = build if callable(build) else (lambda segment, udp_port: build)
        self.stats = stats if stats is not None else PipelineStats()
        self.max_frames, self.duration = max_frames, duration
        self.eos_timeout, self.stall_timeout = eos_timeout, stall_timeout
        self.reconnect, self.max_retries, self.backoff = reconnect, max_retries, backoff
        self.setup, self.on_message, self.on_stats = setup, on_message, on_stats
        self.handle_signals = handle_signals
        self.pipeline = None
        self.composed: ComposedPipeline | None = None
        self._lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        require_gst()
        register_elements()
        from gi.repository import GLib

        self._GLib = GLib
        self._loop = GLib.MainLoop()
        self._result = RunResult("eos")
        self._segment = self._retries = 0
        self._finishing: str | None = None   # why EOS was requested
        self._then_restart = False
        self._timers: list[int] = []
        self._frames_in = self._frames_out = 0
        self._limit_reached = False
        self._udp_port = free_udp_port()
        self._rtsp = None
        self._start()
        if self.pipeline is not None:
            with self._signal_handlers():
                self._loop.run()
        self._teardown()
        if self._rtsp is not None:
            GLib.source_remove(self._rtsp[1])
            self._rtsp = None
        self._result.frames_in, self._result.frames_out = self._frames_in, self._frames_out
        self._result.stats = self.stats.summary()
        if self.on_stats is not None:  # the last live line shows the final numbers
            self.on_stats(self.stats.numbers())
        return self._result

    def _start(self) -> None:
        Gst = require_gst()
        composed = self.build(self._segment, self._udp_port)
        try:
            pipeline = Gst.parse_launch(composed.description)
        except Exception as exc:  # GLib.Error: no such element, bad property, bad link
            self._fail(f"cannot build the pipeline: {getattr(exc, 'message', exc)}")
            return
        if composed.rtsp_launch and self._rtsp is None:
            problem = self._start_rtsp(composed)
            if problem:
                self._fail(problem)
                return
        self.composed, self.pipeline = composed, pipeline
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_bus)
        ingress = pipeline.get_by_name(composed.ingress)
        ingress.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._ingress_probe)
        # Added before the stats' probe: a frame over the --frames limit is dropped before anything counts it.
        pipeline.get_by_name(composed.egress).get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER,
                                                                              self._egress_probe)
        self.stats.attach(pipeline, egress=composed.egress, queues=list(composed.queues))
        if self.setup is not None:
            self.setup(pipeline)
        self._started = self._last_frame = time.monotonic()
        self._segment_frames = self._segment_out = 0
        self._eos_reached = False
        self._source_warning: str | None = None
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            # A refusing element has usually posted an ERROR, which the bus handler reports first (idle
            # callbacks run after pending bus messages); this covers one that did not.
            self._GLib.idle_add(lambda: self._fail("the pipeline could not start; run with GST_DEBUG=3 for "
                                                   "GStreamer's reason") and False)
        self._timers.append(self._GLib.timeout_add(250, self._tick))

    def _start_rtsp(self, composed: ComposedPipeline) -> str | None:
        """Serve the pipeline's RTP at rtsp://HOST:PORT/MOUNT; returns a one-line problem or None."""
        import gi

        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GstRtspServer

        server = GstRtspServer.RTSPServer()
        server.set_service(str(composed.sink.port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(composed.rtsp_launch)
        factory.set_shared(True)
        server.get_mount_points().add_factory(composed.sink.mount, factory)
        source_id = server.attach(None)
        if not source_id:
            return (f"cannot serve RTSP on port {composed.sink.port} (in use?); pick another with "
                    f"--sink rtsp:PORT{composed.sink.mount}")
        self._rtsp = (server, source_id)
        log.warning("serving rtsp://127.0.0.1:%d%s", composed.sink.port, composed.sink.mount)
        return None

    def _teardown(self) -> None:
        Gst = require_gst()
        for timer in self._timers:
            self._GLib.source_remove(timer)
        self._timers.clear()
        if self.pipeline is not None:
            self.stats.detach()
            self.pipeline.get_bus().remove_signal_watch()
            self.pipeline.set_state(Gst.State.NULL)
            self.pipeline = None
            kept = finish_recording(self.composed.sink, self._segment_out, self._eos_reached)
            if kept is not None:
                log.warning("the recording did not finish; what was written is kept as %s", kept)
                if self._result.error is not None:
                    self._result.error += f"; the unfinished recording is kept as {kept}"

    # ---- stopping --------------------------------------------------------------------------------
    def request_stop(self, reason: str = "interrupted") -> None:
        """Send EOS so sinks finish their files; safe from any thread while :meth:`run` runs."""
        self._GLib.idle_add(self._begin_finish, reason, False)

    def _begin_finish(self, reason: str, via_ingress: bool) -> bool:
        """Send EOS and arm the watchdog (returns False: also a one-shot GLib idle callback)."""
        Gst = require_gst()
        if self.pipeline is None:  # waiting to reconnect: an interrupt ends the wait
            if reason == "interrupted":
                self._result.status = "interrupted"
                self._loop.quit()
            return False
        if self._finishing is not None:
            if reason == "interrupted":
                log.warning("second interrupt: stopping without waiting for EOS")
                self._result.status = "interrupted"
                self._loop.quit()
            return False
        self._finishing = reason
        self._eos_deadline = time.monotonic() + self.eos_timeout
        if via_ingress:
            if self._segment_frames == 0:  # nothing was recorded: no file to finish
                self._finished()
                return False
            # The source may be dead: inject EOS right after it so the rest of the pipeline finishes.
            ingress = self.pipeline.get_by_name(self.composed.ingress)
            ingress.get_static_pad("sink").send_event(Gst.Event.new_eos())
        else:
            self.pipeline.send_event(Gst.Event.new_eos())
        return False

    def _finished(self) -> None:
        """EOS reached (or the watchdog gave up): restart or quit."""
        reason, self._finishing = self._finishing, None
        if self._then_restart:
            self._then_restart = False
            self._teardown()
            delay = min(self.backoff[1], self.backoff[0] * 2 ** (self._retries - 1))
            log.warning("reconnecting in %.0f s (attempt %d of %d)", delay, self._retries, self.max_retries)
            self._timers.append(self._GLib.timeout_add(int(delay * 1000), self._restart))
            return
        if reason and self._result.status == "eos":
            self._result.status = reason
        self._loop.quit()

    def _restart(self) -> bool:
        self._timers.clear()
        self._segment += 1
        self._result.restarts += 1
        self._start()
        return False

    def _fail(self, text: str, reconnectable: bool = False, drained: bool = False) -> None:
        """A one-line failure: reconnect (a live source) or finish the recording and report it.
        ``drained``: EOS already went through the pipeline (a live source ended its stream)."""
        if self._result.error is not None or self._then_restart:
            return  # the first failure of an attempt is the one that matters
        if reconnectable and self.reconnect and self._finishing is None and self._retries < self.max_retries:
            self._retries += 1
            log.warning("%s", text)
            self._then_restart = True
        else:
            self._result.status, self._result.error = "error", text
        if self.pipeline is None or drained:
            self._finished()
        elif self._finishing is None:
            self._begin_finish("error", via_ingress=True)

    # ---- callbacks -------------------------------------------------------------------------------
    def _ingress_probe(self, pad, info):
        Gst = require_gst()
        with self._lock:
            self._last_frame = time.monotonic()
            # --frames counts processed frames: admit frames until that many are in the stages or done (a frame
            # a leaky queue drops makes room for another), so no stage works on a frame beyond the limit.
            dropped = sum(self.stats.dropped().values()) if self.composed.leaky else 0
            if self._limit_reached or (self.max_frames is not None and
                                       self._frames_in - dropped >= self.max_frames):
                return Gst.PadProbeReturn.DROP
            self._frames_in += 1
            self._segment_frames += 1
        pts = info.get_buffer().pts
        self.stats.on_ingress(None if pts == Gst.CLOCK_TIME_NONE else pts)
        return Gst.PadProbeReturn.OK

    def _egress_probe(self, pad, info):
        """Count processed frames; the ``max_frames``-th one requests EOS, later ones (in flight) are dropped."""
        Gst = require_gst()
        with self._lock:
            if self.max_frames is not None and self._frames_out >= self.max_frames:
                return Gst.PadProbeReturn.DROP
            self._frames_out += 1
            self._segment_out += 1
            if self.max_frames is not None and self._frames_out >= self.max_frames:
                self._limit_reached = True
                self._GLib.idle_add(self._begin_finish, "frames", False)
        return Gst.PadProbeReturn.OK

    def _tick(self) -> bool:
        now = time.monotonic()
        if self._finishing is not None:
            if now > self._eos_deadline:
                text = (f"the pipeline did not finish within {self.eos_timeout:g} s of EOS ({self._finishing}); "
                        f"stopped it, a recording may be incomplete")
                log.warning("%s", text)
                if self._result.error is None:
                    self._result.status, self._result.error = "timeout", text
                self._finished()
            return True
        if self._retries and now - self._started > self.RETRY_RESET_S and self._segment_frames:
            self._retries = 0
        if self.duration is not None and now - self._started >= self.duration:
            self._begin_finish("duration", False)
        elif self.stall_timeout is not None and not self.stats.loading:
            last_activity = max(self._last_frame, self.stats.last_out or 0.0)
            if now - last_activity > self.stall_timeout:
                self._stalled()
        return True

    def _stalled(self) -> None:
        if self.composed.live:
            where = f" {self.composed.source_location}" if self.composed.source_location else ""
            self._fail(f"source{where} delivered no frame for {self.stall_timeout:g} s (camera unplugged or "
                       f"stream stalled)", reconnectable=True)
        else:
            self._fail(f"no frame moved through the pipeline for {self.stall_timeout:g} s; raise the stall "
                       f"timeout if a stage is that slow")

    def _on_bus(self, bus, message) -> None:
        Gst = require_gst()
        kind = message.type
        if kind == Gst.MessageType.EOS:
            self._eos_reached = True  # every sink has it: recordings are finalised
            if self._finishing is None and self.composed.live:
                # Nobody asked a camera or a stream to end: it dropped (an RTSP server went away, ...).
                where = f" {self.composed.source_location}" if self.composed.source_location else ""
                why = f": {self._source_warning}" if self._source_warning else ""
                self._fail(f"source{where} ended its stream{why}", reconnectable=True, drained=True)
            else:
                self._finished()
        elif kind == Gst.MessageType.ERROR:
            from_source = self._in_source_part(message.src)
            self._fail(describe_error(message, (self.composed.source_location or "") if from_source else None),
                       reconnectable=from_source and self.composed.live)
        elif kind == Gst.MessageType.WARNING:
            warning, _ = message.parse_warning()
            log.warning("%s: %s", message.src.get_name(), warning.message)
            if self._in_source_part(message.src):
                self._source_warning = f"{message.src.get_name()}: {warning.message.rstrip('.')}"
        elif kind == Gst.MessageType.ELEMENT:
            self.stats.on_message(message)
        elif kind == Gst.MessageType.APPLICATION and self.on_stats is not None:
            structure = message.get_structure()
            if structure is not None and structure.get_name() == STATS_MESSAGE:
                self.on_stats(_structure_dict(structure))
        if self.on_message is not None:
            self.on_message(message)

    def _top_level(self, element):
        """The pipeline child that is or contains ``element`` (e.g. rtspsrc for its internal udpsrc)."""
        while element is not None and element.get_parent() is not None and element.get_parent() != self.pipeline:
            element = element.get_parent()
        return element

    def _in_source_part(self, element) -> bool:
        """Whether ``element`` is a source (nothing feeds it) or feeds the ingress: the part a reconnect
        rebuilds."""
        Gst = require_gst()
        if self.pipeline is None or not isinstance(element, Gst.Element):
            return False
        top = self._top_level(element)
        if top is None or not top.sinkpads:
            return True
        seen, frontier = set(), [self.pipeline.get_by_name(self.composed.ingress)]
        while frontier:
            for pad in frontier.pop().sinkpads:
                peer = pad.get_peer()
                upstream = self._top_level(peer.get_parent_element()) if peer is not None else None
                if upstream is None or upstream in seen:
                    continue
                if upstream == top:
                    return True
                seen.add(upstream)
                frontier.append(upstream)
        return False

    # ---- signals ---------------------------------------------------------------------------------
    def _signal_handlers(self):
        """SIGINT/SIGTERM -> EOS while the loop runs (main thread only; the previous handlers come back).
        PyGObject's MainLoop.run wakes up for Python signal handlers, so they run promptly."""
        runner = self

        class Handlers:
            def __enter__(self):
                self.previous = {}
                if runner.handle_signals and threading.current_thread() is threading.main_thread():
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        self.previous[signum] = signal.signal(signum, self.handle)

            @staticmethod
            def handle(signum, frame):
                runner._begin_finish("interrupted", False)

            def __exit__(self, *exc):
                for signum, handler in self.previous.items():
                    signal.signal(signum, handler)

        return Handlers()


def _structure_dict(structure) -> dict:
    return {structure.nth_field_name(i): structure.get_value(structure.nth_field_name(i))
            for i in range(structure.n_fields())}


def run_pipeline(options: PipelineOptions, *, max_frames: int | None = None, duration: float | None = None,
                 stats_path: str | Path | None = None, stats_interval: float = 1.0, reconnect: bool = False,
                 max_retries: int = 5, eos_timeout: float = 10.0, stall_timeout: float | None = 10.0,
                 on_stats: Callable[[dict], None] | None = None, setup: Callable | None = None) -> RunResult:
    """Compose ``options`` and run it; write the stats JSON to ``stats_path`` if given."""
    composed = compose(options)  # fail on bad options before anything starts
    if composed.sink.kind == "display":
        check_display()
    device = composed.source_location or ""
    if device.startswith("/dev/") and not Path(device).exists():
        cameras = ", ".join(sorted(str(p) for p in Path("/dev").glob("video*"))) or "none"
        raise FileNotFoundError(f"camera {device} does not exist (cameras here: {cameras}); check the cable or pass "
                                f"another --source")
    stats = PipelineStats(interval=stats_interval)
    runner = PipelineRunner(lambda segment, udp_port: compose(options, segment, udp_port), stats=stats,
                            max_frames=max_frames,
                            duration=duration, eos_timeout=eos_timeout, stall_timeout=stall_timeout,
                            reconnect=reconnect, max_retries=max_retries, on_stats=on_stats, setup=setup)
    result = runner.run()
    if stats_path:
        stats.write_json(stats_path, {"pipeline": runner.composed.description if runner.composed else None,
                                      "status": result.status, "error": result.error, "restarts": result.restarts})
    return result
